"""The data dictionary: one YAML per mart beside its SQL, a text for every published table and column,
carried by the warehouse (COMMENT ON), the Dagster assets (column schema, row count) and docs/tables.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from tests.conftest import AS_OF, FIXTURES, query

REPO = Path(__file__).resolve().parent.parent
MARTS_DIR = REPO / "consent" / "marts"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One nightly job on the fixture exports (with sends), in a test instance: the warehouse it
    wrote and the job's result."""
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    root = tmp_path_factory.mktemp("dictionary")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    path = root / "wh" / "consent.duckdb"
    resources = {"warehouse": WarehouseResource(path=str(path)),
                 "settings": ConsentSettings(exports_dir=str(exports), as_of=AS_OF)}
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(instance=instance)
    assert result.success
    return path, result


def _dictionary() -> dict:
    """Every documented table: the published ones and the marts."""
    from consent import marts
    from consent.storage.dictionary import published

    return {**published(), **{name: spec.doc for name, spec in marts.SPECS.items()}}


# ---- one SQL and one YAML per mart -------------------------------------------------------------

def test_every_mart_sql_has_a_yaml_and_every_yaml_a_sql():
    sql = {p.stem for p in MARTS_DIR.glob("*.sql")}
    yml = {p.stem for p in MARTS_DIR.glob("*.yml")}
    assert sql == yml and len(sql) >= 9


def test_each_mart_yaml_says_grain_keys_rebuild_and_describes_every_column():
    from consent import marts

    for name, spec in marts.SPECS.items():
        assert spec.doc.grain and spec.doc.keys and spec.doc.description, name
        assert spec.strategy in marts.STRATEGIES, name
        assert all(c.description.strip() and c.data_type for c in spec.doc.columns), name


def test_each_mart_yaml_lists_the_built_tables_columns_in_order_with_their_types(run):
    from consent import marts

    path, _ = run
    for name, spec in marts.SPECS.items():
        built = query(path, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                            "AND schema_name = 'main' ORDER BY column_index", [name])
        assert built == [(c.name, c.data_type) for c in spec.doc.columns], name


def test_the_incremental_rules_come_from_the_yaml():
    from consent import marts

    spec = yaml.safe_load((MARTS_DIR / "consent_daily.yml").read_text())
    assert marts.INCREMENTAL["consent_daily"] == spec["incremental"]["rows"]
    columns, before = marts.BEFORE["consent_daily"]
    assert before == spec["incremental"]["before"]
    assert columns.startswith("day DATE, business VARCHAR, channel VARCHAR")
    whole = {name for name, s in marts.SPECS.items() if s.strategy == "whole"}
    assert whole == {"consent_renewals", "notice_usage"} and not whole & set(marts.INCREMENTAL)


def test_a_yaml_that_contradicts_itself_is_refused_when_loaded(tmp_path):
    from consent import marts

    text = (MARTS_DIR / "send_audit.yml").read_text()
    for broken, message in (
        (text.replace("strategy: delete_insert", "strategy: by_difference"), "`before` is needed"),
        (text.replace("keys: [message_id]", "keys: [message]"), "are not columns"),
        (text.replace("strategy: delete_insert", "strategy: sometimes"), "is not one of"),
    ):
        with pytest.raises(ValueError, match=message):
            marts._load(tmp_path / "send_audit.yml", broken)


# ---- keys checked from the YAML ----------------------------------------------------------------

def test_the_key_problems_count_null_keys_and_keys_held_twice():
    from consent import marts

    con = duckdb.connect()
    con.execute("CREATE TABLE send_audit (message_id VARCHAR)")
    con.execute("INSERT INTO send_audit VALUES ('a'), ('b')")
    assert marts.key_problems(con, "send_audit") == {"rows_with_a_null_key": 0, "keys_held_by_more_than_one_row": 0}
    con.execute("INSERT INTO send_audit VALUES ('a'), (NULL)")
    assert marts.key_problems(con, "send_audit") == {"rows_with_a_null_key": 1, "keys_held_by_more_than_one_row": 1}
    # notice_usage: a null notice version is a value (opt-ins naming no notice), held once
    # (the same notice in two businesses is two keys)
    con.execute("CREATE TABLE notice_usage (business VARCHAR, notice_version VARCHAR, channel VARCHAR, "
                "notice_state VARCHAR, opt_ins BIGINT)")
    con.execute("INSERT INTO notice_usage VALUES ('a', NULL, 'web_form', 'missing', 1), ('a', 'v1', 'web_form', 'ok', 2), "
                "('b', 'v1', 'web_form', 'ok', 1)")
    assert marts.key_problems(con, "notice_usage") == {"rows_with_a_null_key": 0, "keys_held_by_more_than_one_row": 0}
    con.execute("INSERT INTO notice_usage VALUES ('a', NULL, 'web_form', 'missing', 1), ('a', 'v1', NULL, 'ok', 2)")
    assert marts.key_problems(con, "notice_usage") == {"rows_with_a_null_key": 1, "keys_held_by_more_than_one_row": 1}


def test_every_marts_key_check_passed_on_the_run(run):
    from consent import marts

    _, result = run
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert {name: checks[(name, "keys_unique_and_not_null")] for name in marts.MARTS} == dict.fromkeys(marts.MARTS, True)


def test_a_mart_that_breaks_its_key_fails_its_check(run, tmp_path, monkeypatch):
    from assets.marts import compliance_marts
    from consent import marts
    from resources.warehouse import ConsentSettings, WarehouseResource

    path, _ = run
    copy = tmp_path / "wh" / "consent.duckdb"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    shutil.copy(path.parent / ".hash_salt", copy.parent / ".hash_salt")
    _, rows = marts.statements("quarantine_summary")
    # one row twice: the grain (day, channel, reason) no longer holds
    monkeypatch.setitem(marts.MARTS, "quarantine_summary",
                        f"SELECT * FROM ({rows}) UNION ALL (SELECT * FROM ({rows}) ORDER BY ALL LIMIT 1)")
    marts.statements.cache_clear()
    resources = {"warehouse": WarehouseResource(path=str(copy)),
                 "settings": ConsentSettings(exports_dir=str(FIXTURES / "exports"), as_of=AS_OF)}
    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize([compliance_marts], selection=["quarantine_summary"], resources=resources,
                                    instance=instance)
    finally:
        marts.statements.cache_clear()
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.asset_key.to_user_string(), evaluation.check_name) == ("quarantine_summary", "keys_unique_and_not_null")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["keys_held_by_more_than_one_row"].value == 1


# ---- comments in the warehouse -----------------------------------------------------------------

def _comments(path: Path) -> tuple[dict, dict]:
    published = ("SELECT table_oid, table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
                 "AND database_name = current_database() AND table_name NOT LIKE 'stg\\_%' ESCAPE '\\'")
    tables = {name: comment for _, name, comment in query(path, published)}
    columns = {(t, c): comment for t, c, comment in query(
        path, f"SELECT t.table_name, c.column_name, c.comment FROM duckdb_columns() AS c JOIN ({published}) AS t "
              "USING (table_oid)")}
    return tables, columns


def test_every_published_table_and_column_carries_the_dictionarys_comment(run):
    path, _ = run
    tables, columns = _comments(path)
    dictionary = _dictionary()
    # every table outside staging is documented, and only those
    assert set(tables) == set(dictionary)
    assert tables == {name: doc.description for name, doc in dictionary.items()}
    assert columns == {(name, c.name): c.description for name, doc in dictionary.items() for c in doc.columns}
    assert all(tables.values()) and all(columns.values())


def test_the_comments_stay_through_an_incremental_and_a_full_run(run, tmp_path):
    """A run rewrites rows and rebuilds marts (whole on --full: a replaced table loses its comments)."""
    from tests.conftest import run_cli

    copy = tmp_path / "wh" / "consent.duckdb"
    copy.parent.mkdir()
    shutil.copy(run[0], copy)
    shutil.copy(run[0].parent / ".hash_salt", copy.parent / ".hash_salt")
    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    expected = _comments(run[0])
    assert run_cli(exports, copy, as_of="2026-11-11T00:00:00Z") == 0
    assert _comments(copy) == expected
    assert run_cli(exports, copy, "--full", as_of="2026-11-12T00:00:00Z") == 0
    assert dict(query(copy, "SELECT mart, mode FROM mart_builds"))["consent_daily"] == "full"
    assert _comments(copy) == expected


def test_a_changed_yaml_changes_the_marts_fingerprint(run, monkeypatch):
    """The incremental rule lives in the YAML: a changed YAML builds the mart whole once."""
    from consent import marts
    from consent.domain.policy import Policy

    from consent.storage import sql

    with duckdb.connect(str(run[0]), read_only=True) as con:
        sql.use_salt(con, "salt")
        before = marts._fingerprint(con, "send_audit", Policy())
        monkeypatch.setitem(marts.YAMLS, "send_audit", marts.YAMLS["send_audit"].replace("IN (", "IN  ("))
        assert marts._fingerprint(con, "send_audit", Policy()) != before


def test_a_migrated_warehouse_carries_the_same_comments_as_a_new_one(run, tmp_path):
    from cli.main import main
    from tests.test_migrations import V9, _unpack

    old = _unpack(V9, tmp_path)
    assert query(old, "SELECT count(comment) FROM duckdb_columns() WHERE table_name = 'consent_status'") == [(0,)]
    assert main(["migrate", "--warehouse", str(old)]) == 0
    from consent.storage.dictionary import published

    tables, columns = _comments(old)
    new_tables, new_columns = _comments(run[0])
    assert {t: tables[t] for t in published()} == {t: new_tables[t] for t in published()}
    assert {k: v for k, v in columns.items() if k[0] in published()} == \
        {k: v for k, v in new_columns.items() if k[0] in published()}


def test_the_published_tables_yaml_lists_schema_pys_columns_in_order(tmp_path, monkeypatch):
    from consent.domain.schema import TABLES
    from consent.storage import dictionary

    assert [name for name in dictionary.published()] == [t.name for t in TABLES] + ["schema_version"]
    text = dictionary.PUBLISHED_YAML.read_text()
    broken = tmp_path / "tables.yml"
    broken.write_text(text.replace("    opted_out_at:", "    opted_out:"))
    monkeypatch.setattr(dictionary, "PUBLISHED_YAML", broken)
    dictionary.published.cache_clear()
    try:
        with pytest.raises(ValueError, match="consent_status lists"):
            dictionary.published()
    finally:
        dictionary.published.cache_clear()


# ---- Dagster: column schema and row count ------------------------------------------------------

TABLE_OF_ASSET = {"stg_consent_events": "consent_events", "audience_checks": "send_checks"}


def test_every_table_asset_carries_its_column_schema():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    dictionary = _dictionary()
    described = set()
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        table = TABLE_OF_ASSET.get(name, name)
        if table not in dictionary:
            continue
        schema = graph.get(key).metadata["dagster/column_schema"]
        assert [(c.name, c.type, c.description) for c in schema.columns] == \
            [(c.name, c.data_type, c.description) for c in dictionary[table].columns], name
        described.add(name)
    # every asset but the retention report, the HTML dashboard and the statuses' per-bucket partitions
    # (rows of consent_status and its history, not a table of their own) is a table
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} - described == {
        "retention_purge", "compliance_dashboard", "consent_status_bucket"}


def test_every_table_asset_reports_its_row_count(run):
    path, result = run
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        counts[materialization.asset_key.to_user_string()] = materialization.metadata.get("dagster/row_count")
    tables = {name for name in counts if name in _dictionary() or name == "stg_consent_events"}
    assert len(tables) == len(counts) - 2  # all but the retention report and the dashboard
    for name in tables:
        assert counts[name] is not None, name
        table = "staging.stg_consent_events" if name == "stg_consent_events" else name  # a run's scratch table
        assert counts[name].value == query(path, f"SELECT count(*) FROM {table}")[0][0], name


# ---- docs/tables.md ----------------------------------------------------------------------------

def test_docs_tables_md_is_what_the_dictionary_writes(tmp_path):
    from consent.reports import dictionary

    page = dictionary.render()
    assert (REPO / "docs" / "tables.md").read_text() == page, "run: python -m consent.reports.dictionary"
    for name, doc in _dictionary().items():
        assert f"### `{name}`" in page and doc.description in page
    assert dictionary.main(["--check"]) == 0
    stale = tmp_path / "tables.md"
    stale.write_text(page.replace("The append-only ledger", "The ledger"))
    assert dictionary.main(["--check", "--out", str(stale)]) == 1
    assert dictionary.main(["--out", str(stale)]) == 0 and stale.read_text() == page


def test_a_new_mart_is_its_sql_and_its_yaml(run, tmp_path, monkeypatch):
    """Two files in the folder are all the build, its key check, its comments and the docs need."""
    from consent import marts
    from consent.reports import dictionary
    from consent.storage.sql import use_salt

    sql = ("-- contacts_per_purpose: contacts per business, purpose and status.\n"
           "SELECT business, purpose, status, count(*) AS contacts FROM consent_status GROUP BY ALL\n")
    spec = """
name: contacts_per_purpose
description: Contacts per business, purpose and status.
grain: one row per business, purpose and status
keys: [business, purpose, status]
incremental:
  strategy: whole
columns:
  - {name: business, data_type: VARCHAR, description: The business.}
  - {name: purpose, data_type: VARCHAR, description: The purpose.}
  - {name: status, data_type: VARCHAR, description: The status.}
  - {name: contacts, data_type: BIGINT, description: Contacts with that status.}
"""
    monkeypatch.setitem(marts.MARTS, "contacts_per_purpose", sql)
    monkeypatch.setitem(marts.SPECS, "contacts_per_purpose", marts._load(tmp_path / "contacts_per_purpose.yml", spec))
    copy = tmp_path / "consent.duckdb"
    shutil.copy(run[0], copy)
    with duckdb.connect(str(copy)) as con:
        use_salt(con, "salt")
        assert marts.build(con, "contacts_per_purpose") > 0
        assert marts.key_problems(con, "contacts_per_purpose") == {"rows_with_a_null_key": 0,
                                                                    "keys_held_by_more_than_one_row": 0}
        assert con.execute("SELECT comment FROM duckdb_columns() WHERE table_name = 'contacts_per_purpose' "
                           "ORDER BY column_index").fetchall()[-1] == ("Contacts with that status.",)
    assert "### `contacts_per_purpose`" in dictionary.render()


def test_no_description_holds_a_phone_number():
    """Comments are copied into every warehouse and its read copy: an example number in one would be a
    number an erasure can never remove (the erasure tests scan every byte for the erased digits)."""
    import re

    from consent.storage.dictionary import published

    texts = [doc.description for doc in published().values()]
    texts += [column.description for doc in published().values() for column in doc.columns]
    assert [t for t in texts if re.search(r"\+?\d[\d ]{6,}\d", t or "")] == []
