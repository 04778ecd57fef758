"""A warehouse written by an earlier version opens in this one and is migrated in place."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.conftest import FIXTURES, query, run_cli

V1 = FIXTURES / "warehouse_v1"
# Written by the code on main before business-scoped identities (schema version 2, commit 4ff99da).
V2 = FIXTURES / "warehouse_v2"


def _unpack(fixture: Path, tmp_path: Path) -> Path:
    path = tmp_path / "wh" / "consent.duckdb"
    path.parent.mkdir()
    with gzip.open(fixture / "consent.duckdb.gz") as packed, path.open("wb") as out:
        shutil.copyfileobj(packed, out)
    (path.parent / ".hash_salt").write_text((fixture / "hash_salt").read_text())
    return path


@pytest.fixture
def v1_warehouse(tmp_path: Path) -> Path:
    """The file written by the code before schema versions (commit 4df4994), with its salt beside it."""
    return _unpack(V1, tmp_path)


@pytest.fixture(params=[V1, V2], ids=["v1", "v2"])
def old_warehouse(request, tmp_path: Path) -> Path:
    """A file written by an earlier version: before schema versions, and at version 2."""
    return _unpack(request.param, tmp_path)


TABLES = ("consent_events", "consent_status", "consent_status_history", "consent_violations", "quarantine",
          "skipped_items", "source_files", "message_statuses", "consent_notices", "suppression_list",
          "erased_events", "phone_cache")


def _columns(path: Path, table: str) -> list[str]:
    return [c for (c,) in query(path, f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}' ORDER BY column_index")]


def _everything(path: Path, columns: dict[str, list[str]] | None = None) -> dict:
    """Every row of every table, in the columns given (the old layout's), else all."""
    return {
        table: sorted(query(path, f"SELECT {', '.join((columns or {}).get(table) or ['*'])} FROM {table}"), key=repr)
        for table in TABLES
    }


def _everything_before_seen(before: dict, columns: dict[str, list[str]], seen: list[str]) -> list:
    """The old source_files rows in the `seen` columns."""
    index = [columns["source_files"].index(c) for c in seen]
    return sorted((tuple(row[i] for i in index) for row in before["source_files"]), key=repr)


def test_an_old_warehouse_is_migrated_in_place_by_the_next_run_and_loses_nothing(old_warehouse, tmp_path):
    from consent.storage.migrations import LATEST

    v1_warehouse = old_warehouse
    old_columns = {table: _columns(v1_warehouse, table) for table in TABLES}
    before = _everything(v1_warehouse)
    old_runs = query(v1_warehouse, "SELECT run_id, status, new_events FROM runs ORDER BY started_at")
    assert len(before["consent_events"]) == 14 and len(old_runs) == 2
    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    shutil.copytree(FIXTURES / "notices", exports / "notices")
    # The same exports again, two days later: nothing new, and the erased number stays out.
    assert run_cli(exports, v1_warehouse, as_of="2026-11-12T00:00:00Z") == 0
    assert query(v1_warehouse, "SELECT max(version) FROM schema_version") == [(LATEST,)]
    versions = [v for (v,) in query(v1_warehouse, "SELECT version FROM schema_version ORDER BY version")]
    # every step in order: from 1 (recorded on migration) or from the version the file was created at
    assert versions == list(range(versions[0], LATEST + 1)) and versions[0] in (1, 2)
    after = _everything(v1_warehouse, old_columns)
    # Nothing new was read: every table, the files read and the skipped items, keeps exactly its rows.
    assert query(v1_warehouse, "SELECT files_read, rows_read FROM runs ORDER BY started_at DESC LIMIT 1") == [(0, 0)]
    for table in ("consent_events", "consent_status", "consent_status_history", "consent_violations", "quarantine",
                  "suppression_list", "erased_events", "consent_notices", "message_statuses", "skipped_items",
                  "phone_cache"):
        assert after[table] == before[table], table
    assert before["source_files"] and before["skipped_items"] and before["phone_cache"]
    # The files were seen again by this run (last_seen_run), and are otherwise as they were.
    (run_id,) = query(v1_warehouse, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    seen = [c for c in old_columns["source_files"] if c != "last_seen_run"]
    assert _everything(v1_warehouse, {"source_files": seen})["source_files"] == _everything_before_seen(before, old_columns, seen)
    assert query(v1_warehouse, "SELECT DISTINCT last_seen_run FROM source_files") == [(run_id,)]
    runs = query(v1_warehouse, "SELECT run_id, status, new_events, failure_reason FROM runs ORDER BY started_at")
    assert [r[:3] for r in runs[:2]] == old_runs and runs[2][1:] == ("succeeded", 0, None)
    assert query(v1_warehouse, "SELECT count(*) FROM consent_events WHERE phone_e164 = '+4915201234567'") == [(0,)]
    # Existing rows belong to the one business there was; statuses are keyed by contact.
    for table in ("consent_events", "consent_status", "consent_status_history", "consent_violations", "message_statuses"):
        assert query(v1_warehouse, f"SELECT DISTINCT business FROM {table}") in ([("default",)], []), table
    assert query(v1_warehouse, "SELECT count(*) FROM consent_status WHERE contact_id IS DISTINCT FROM phone_e164") == [(0,)]
    assert query(v1_warehouse, "SELECT count(*) FROM identifier_links") == [(0,)]
    # The phone cache keeps its rows, one per key, without its primary key (schema version 7).
    assert len(set(after["phone_cache"])) == len(after["phone_cache"])
    assert query(v1_warehouse, "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'phone_cache' "
                               "AND constraint_type = 'PRIMARY KEY'") == [(0,)]
    # The quarantine, skipped items and message statuses keep their rows (compared above), one per id,
    # without their primary keys (schema version 9).
    assert query(v1_warehouse, "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                               "AND table_name IN ('quarantine', 'skipped_items', 'message_statuses')") == [(0,)]
    for table in ("quarantine", "skipped_items", "message_statuses"):
        ids = [row[:2] if table == "message_statuses" else row[0] for row in after[table]]
        assert len(set(ids)) == len(ids), table


def test_reading_an_old_warehouse_says_how_to_migrate_it(v1_warehouse, capsys):
    from cli.main import main

    assert main(["runs", "--warehouse", str(v1_warehouse)]) == 2
    err = capsys.readouterr().err
    assert "schema version 1" in err and "consent migrate" in err and "Traceback" not in err
    assert main(["migrate", "--warehouse", str(v1_warehouse)]) == 0
    from consent.storage.migrations import LATEST

    assert f"schema version {LATEST}" in capsys.readouterr().out
    assert main(["runs", "--warehouse", str(v1_warehouse)]) == 0


def test_a_failed_migration_leaves_the_file_as_it_was(v1_warehouse, monkeypatch):
    import consent.storage.migrations as migrations
    from resources.warehouse import WarehouseResource

    broken = migrations.Migration(99, "a step that fails half way", (
        "ALTER TABLE runs ADD COLUMN half_done VARCHAR", "SELECT * FROM no_such_table",
    ))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST", 99)
    with pytest.raises(Exception, match="no_such_table"):
        with WarehouseResource(path=str(v1_warehouse)).connect():
            pass
    columns = [c for (c,) in query(v1_warehouse, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'")]
    assert "half_done" not in columns and "failure_reason" not in columns
    assert query(v1_warehouse, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'") == [(0,)]


def test_a_new_warehouse_is_created_at_the_latest_version_with_the_same_tables_as_a_migrated_one(old_warehouse, tmp_path):
    from resources.warehouse import WarehouseResource

    v1_warehouse = old_warehouse
    fresh = tmp_path / "fresh.duckdb"
    for path in (fresh, v1_warehouse):
        with WarehouseResource(path=str(path)).connect():
            pass
    layout = ("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
              "WHERE table_schema = 'main' AND table_name IN (SELECT table_name FROM information_schema.columns "
              "GROUP BY ALL) ORDER BY ALL")
    published = {t.name for t in __import__("consent.domain.schema", fromlist=["TABLES"]).TABLES} | {"schema_version"}
    fresh_layout = [r for r in query(fresh, layout) if r[0] in published]
    migrated_layout = [r for r in query(v1_warehouse, layout) if r[0] in published]
    assert fresh_layout == migrated_layout
    keys = ("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY' ORDER BY ALL")
    assert query(fresh, keys) == query(v1_warehouse, keys)


# The channels a history row's events have in the ledger, next to the ones the row keeps (schema version 8).
HISTORY_CHANNELS = """
    SELECT h.decided_by_channel, d.channel, h.consent_channel, c.channel
    FROM consent_status_history AS h
    LEFT JOIN consent_events AS d ON d.event_id = h.decided_by_event_id
    LEFT JOIN consent_events AS c ON c.event_id = h.consent_event_id
"""


def test_migrating_fills_each_history_rows_channels_from_the_ledger_and_keeps_every_row(old_warehouse):
    from cli.main import main

    rows_before = query(old_warehouse, "SELECT count(*) FROM consent_status_history")[0][0]
    assert main(["migrate", "--warehouse", str(old_warehouse)]) == 0
    assert query(old_warehouse, "SELECT count(*) FROM consent_status_history")[0][0] == rows_before > 0
    pairs = query(old_warehouse, HISTORY_CHANNELS)
    assert all(kept == ledger for kept, ledger, _, _ in pairs)
    assert all(kept == ledger for _, _, kept, ledger in pairs)
    assert {kept for kept, _, _, _ in pairs} - {None}  # filled, not left empty
    assert {kept for _, _, kept, _ in pairs} - {None}


# Written by the code on main at schema version 9 (commit 8410467) from the sample exports: two
# businesses, BSUIDs and links, one erasure between two runs (tests/fixtures/warehouse_v9/README.md).
V9 = FIXTURES / "warehouse_v9"
# The same, written by the last code on main at schema version 10 (commit 050d295; its README).
V10 = FIXTURES / "warehouse_v10"
# The same, written at schema version 12 (commit 5234e25: scratch tables in `staging`; its README).
V12 = FIXTURES / "warehouse_v12"
LEDGER_TABLES = ("consent_events", "quarantine", "skipped_items", "identifier_links", "message_statuses",
                 "consent_notices", "suppression_list", "erased_events")


# v9 and v10 in `make test-slow` only: the other tests of this module migrate them too, and v12 (the
# last landed main's) runs again here.
@pytest.mark.parametrize("fixture", [pytest.param(V9, marks=pytest.mark.slow), pytest.param(V10, marks=pytest.mark.slow),
                                     V12], ids=["v9", "v10", "v12"])
def test_a_warehouse_written_by_older_code_opens_and_runs_again_losing_nothing(fixture, tmp_path, capsys):
    from cli.main import main

    warehouse = _unpack(fixture, tmp_path)
    old_columns = {table: _columns(warehouse, table) for table in LEDGER_TABLES}
    before = _rows(warehouse, old_columns)
    assert len(before["consent_events"]) == 404 and len(before["suppression_list"]) == 2
    assert main(["runs", "--warehouse", str(warehouse)]) in (0, 2)  # read-only: current, or told to migrate
    capsys.readouterr()
    exports = tmp_path / "exports"
    shutil.copytree(Path(__file__).parent.parent / "sample_exports", exports)
    assert run_cli(exports, warehouse, as_of="2026-11-14T00:00:00Z") == 0
    # Every row of the ledger-like tables is kept, in the columns the file had (a migration may add columns).
    assert _rows(warehouse, old_columns) == before
    last = query(warehouse, "SELECT status, new_events FROM runs ORDER BY started_at DESC LIMIT 1")
    assert last == [("succeeded", 0)]
    # The erased number stays out of every later import.
    assert query(warehouse, "SELECT count(*) FROM consent_events WHERE phone_e164 = '+447400123457'") == [(0,)]
    assert main(["sql", "--warehouse", str(warehouse), "SELECT count(*) AS n FROM consent_status"]) == 0


def _rows(path: Path, columns: dict[str, list[str]]) -> dict:
    return {table: sorted(query(path, f"SELECT {', '.join(names)} FROM {table}"), key=repr)
            for table, names in columns.items()}


SCRATCH_IN = "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' ORDER BY table_name"


def _scratch_rows(path: Path, schema: str) -> dict[str, list]:
    """Every row of every `stg_*` table of `schema`."""
    return {t: sorted(query(path, f"SELECT * FROM {schema}.{t}"), key=repr)
            for (t,) in query(path, SCRATCH_IN.format(schema)) if t.startswith("stg_")}


@pytest.mark.parametrize("fixture", [V9, V10], ids=["v9", "v10"])
def test_an_old_warehouse_keeps_its_scratch_tables_rows_in_the_staging_schema_and_none_in_main(fixture, tmp_path):
    """Each old file's last run was a night: its scratch tables (the run, the files, the
    copies of what it replaced and decided, which the incremental marts read) were in `main`.
    Migrated, each is in `staging` with every row, and `main` holds no scratch table."""
    from cli.main import main
    from consent.storage.migrations import LATEST

    warehouse = _unpack(fixture, tmp_path)
    before = _scratch_rows(warehouse, "main")
    assert {"stg_run", "stg_source_files", "stg_touched", "stg_replaced_status", "stg_replaced_history",
            "stg_decided_status"} <= set(before)
    assert before["stg_replaced_history"] and before["stg_decided_status"] and before["stg_run"]
    assert main(["migrate", "--warehouse", str(warehouse)]) == 0
    assert query(warehouse, "SELECT max(version) FROM schema_version") == [(LATEST,)]
    assert [t for (t,) in query(warehouse, SCRATCH_IN.format("main")) if t.startswith("stg_")] == []
    assert _scratch_rows(warehouse, "staging") == before
    assert main(["runs", "--warehouse", str(warehouse)]) == 0  # the read copy opens at this version


FOLDER_BUSINESS = {"email_link": "acme_bank", "sms_link": "acme_bank"}  # sample_exports/businesses.yaml; else acme_shoes


@pytest.mark.parametrize("fixture", [V9, V10, V12], ids=["v9", "v10", "v12"])
def test_quarantined_rows_and_skipped_items_read_before_get_the_business_of_their_file(fixture, tmp_path):
    """Rows read before the business column existed count under the business their file's events
    name (each sample file's events name one: its folder's); none is left unattributed, none lost."""
    from cli.main import main

    warehouse = _unpack(fixture, tmp_path)
    counts = {t: query(warehouse, f"SELECT count(*) FROM {t}")[0][0] for t in ("quarantine", "skipped_items")}
    assert counts["quarantine"] == 33 and counts["skipped_items"] == 17
    # a webhook item through a number no business claimed, in a file whose events are acme_shoes'
    with duckdb.connect(str(warehouse)) as con:
        con.execute("INSERT INTO quarantine BY NAME SELECT 'q-unclaimed' AS quarantine_id, channel, source_file, 7 AS "
                    "source_line, file_hash, 'phone_number_id of the webhook is not claimed by any business in "
                    "businesses.yaml' AS reason, ingested_at, run_id FROM skipped_items "
                    "WHERE source_file = 'whatsapp/webhooks.jsonl' LIMIT 1")
    assert main(["migrate", "--warehouse", str(warehouse)]) == 0
    unclaimed = query(warehouse, "SELECT business FROM quarantine WHERE quarantine_id = 'q-unclaimed'")
    assert unclaimed == [(None,)]  # never given the file's business
    for table, id_column in (("quarantine", "quarantine_id"), ("skipped_items", "skipped_id")):
        rows = query(warehouse, f"SELECT channel, business, count(*) FROM {table} "
                                f"WHERE {id_column} <> 'q-unclaimed' GROUP BY ALL")
        assert sum(n for _, _, n in rows) == counts[table]
        assert {(c, b) for c, b, _ in rows} == {(c, FOLDER_BUSINESS.get(c, "acme_shoes")) for c, _, _ in rows}, table
