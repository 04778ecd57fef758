"""The run's structure: the salt stays behind the door, SQL lives in .sql files, functions stay short."""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
# The project's code (tests and the bench are harnesses: they open bare connections and give them a salt).
PACKAGES = ("consent", "cli", "resources", "assets", "pipelines", "expectations")
# The door: the one place that reads the salt setting and defines `salted_hash` on a connection
# (consent/storage), and the Python twin of the hash it uses for read-only connections.
DOOR = ("consent/storage/", "consent/domain/hashing.py")
SQL_STARTS = ("SELECT", "INSERT", "CREATE", "WITH", "UPDATE", "DELETE")
# SQL statements of five lines or more still in Python strings, by file, with why.
KNOWN_LONG_SQL: dict[str, int] = {}
# Functions over 60 lines that other changes are shortening right now; the set only shrinks.
def _files(packages=PACKAGES):
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _text(node: ast.AST) -> str | None:
    """A string constant's text, or an f-string's with each placeholder as `{}`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _long_sql(tree: ast.AST) -> list[int]:
    """Lines of string constants holding an SQL statement of five lines or more."""
    found = []
    for node in ast.walk(tree):
        text = _text(node)
        if text is None:
            continue
        lines = [line for line in text.strip().splitlines() if line.strip()]
        if len(lines) >= 5 and lines[0].split()[0].upper().lstrip("(") in SQL_STARTS:
            found.append(node.lineno)
    return sorted(set(found))


def test_no_module_but_the_door_reads_or_passes_the_salt():
    """The salt is read from the settings and applied at connect (consent/storage/access.py), once:
    no other module calls the salt getter, defines `salted_hash` again, hashes in Python with a
    salt, takes a `salt` argument, or reads the salt back out of a connection."""
    offences = []
    for name, tree in _files():
        if name.startswith(DOOR):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if called in ("salt", "use_salt", "use_reader_macros", "phone_hash"):
                    offences.append(f"{name}:{node.lineno} calls {called}()")
            elif isinstance(node, ast.arg) and "salt" in node.arg:
                offences.append(f"{name}:{node.lineno} takes an argument {node.arg}")
            elif isinstance(node, ast.keyword) and node.arg and "salt" in node.arg:
                offences.append(f"{name}:{node.lineno} passes {node.arg}=")
            elif (_text(node) or "").find("hash_salt") >= 0:
                offences.append(f"{name}:{node.lineno} reads the hash_salt variable")
    assert offences == []


def test_a_writing_connection_hashes_with_the_salt_it_was_opened_with(tmp_path, monkeypatch):
    """`salted_hash` on a connection of the door is the salted hash of the deployment's salt; the
    helpers that hash on a connection (erasure, access, the CLI) read it from there."""
    from consent.domain.hashing import phone_hash
    from consent.storage import sql
    from consent.storage.access import Warehouse

    monkeypatch.setenv("CONSENT_HASH_SALT", "the deployment's salt")
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        assert sql.salted_hash(con, "+4915112345678") == phone_hash("+4915112345678", "the deployment's salt")
    assert warehouse.hash_identifier("+4915112345678") == phone_hash("+4915112345678", "the deployment's salt")
    bare = duckdb.connect()
    try:
        sql.salted_hash(bare, "+4915112345678")
        raise AssertionError("a connection without salted_hash hashed")
    except duckdb.Error:
        pass
    sql.use_salt(bare, None)  # a macro without a salt gives no hash: refused, never an unsalted one
    try:
        sql.salted_hash(bare, "+4915112345678")
        raise AssertionError("a connection without a salt hashed")
    except RuntimeError:
        pass


def test_a_later_run_hashes_on_its_connection_and_never_caches_an_erased_number(exports, warehouse_path, after_first_run, capsys):
    """The phone cache checks fresh numbers against the suppression list with the connection's
    `salted_hash` (no salt handed to it): an erased number read again from an old export is
    resolved (and its row kept out), but neither it nor its spelling enters the cache."""
    import shutil

    from cli.main import main
    from tests.conftest import query, run_cli

    assert main(["erase", "0151 12345678", "--country", "DE", "--warehouse", str(warehouse_path)]) == 0
    reimport = exports / "web_form_reimport"
    reimport.mkdir()
    shutil.copy(exports / "web_form" / "signups_2026-11-01.csv", reimport / "old_signups.csv")
    capsys.readouterr()
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT count(*) FROM skipped_items WHERE reason LIKE 'erased number%'") == [(1,)]
    assert query(warehouse_path, "SELECT count(*) FROM phone_cache WHERE phone_e164 = '+4915112345678' "
                                 "OR regexp_replace(phone_raw, '[^0-9]', '', 'g') LIKE '%15112345678'") == [(0,)]
    assert query(warehouse_path, "SELECT count(*) FROM phone_cache") != [(0,)]


def test_a_mart_fingerprint_changes_with_the_salt_and_only_then(tmp_path):
    """A mart's fingerprint holds a salted hash of a constant, not the salt: another salt changes
    every fingerprint (so every mart, whose hashes all change, is rebuilt whole), the same salt
    keeps them."""
    from consent import marts
    from consent.domain.policy import Policy
    from consent.storage import sql
    from consent.storage.migrations import ensure_schema

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_schema(con)

    def fingerprints(salt: str) -> dict[str, str]:
        sql.use_salt(con, salt)
        return {name: marts._fingerprint(con, name, Policy()) for name in marts.MARTS}

    first = fingerprints("one salt")
    assert fingerprints("one salt") == first
    other = fingerprints("another salt")
    assert all(other[name] != first[name] for name in marts.MARTS)
    for fingerprint in first.values():
        assert "one salt" not in fingerprint


def test_no_sql_statement_of_five_lines_or_more_in_a_python_string():
    found = {name: lines for name, tree in _files() if (lines := _long_sql(tree))}
    counts = {name: len(lines) for name, lines in found.items()}
    assert {name: lines for name, lines in found.items() if name not in KNOWN_LONG_SQL} == {}
    for name, known in KNOWN_LONG_SQL.items():
        assert counts.get(name, 0) <= known, f"{name}: more long SQL strings than known"
        assert name in counts, f"{name} holds no long SQL now: take it off KNOWN_LONG_SQL"


def test_the_scan_for_long_sql_finds_one():
    """The scan itself: a five-line statement in a string (plain or f-string) is found, four lines are not."""
    five = 'Q = """\nSELECT a\nFROM t\nWHERE b\nGROUP BY a\nORDER BY a\n"""\n'
    assert _long_sql(ast.parse(five)) == [1]
    assert _long_sql(ast.parse(five.replace("ORDER BY a\n", ""))) == []
    assert _long_sql(ast.parse('Q = f"""\n  WITH x AS (SELECT 1)\n  SELECT {a}\n  FROM x\n  WHERE y\n  LIMIT 2\n"""\n')) == [1]


def test_the_staged_opt_ins_suite_checks_numbers_by_the_same_rule_as_the_others():
    """expectations/staged_opt_ins.sql spells out PHONE_IS_E164, which the other suites' queries use."""
    from expectations import staged_opt_ins

    assert staged_opt_ins.PHONE_IS_E164 in staged_opt_ins.ROWS_SQL


def test_every_sql_file_beside_a_module_is_run_by_it():
    """A .sql file beside a suite or a check is loaded by a module of its folder, and the migration
    steps are exactly the files of consent/storage/sql/migrations, one per schema version."""
    from consent.storage import migrations, sql

    for path in [*(REPO / "expectations").glob("*.sql"), *(REPO / "assets").glob("*.sql")]:
        beside = [p for p in path.parent.glob("*.py")
                  if path.name in p.read_text() or (p.stem == path.stem and 'with_suffix(".sql")' in p.read_text())]
        assert beside, f"{path.relative_to(REPO)} is run by no module beside it"
    steps = sorted(int(p.stem[1:]) for p in (sql.FOLDER / "migrations").glob("*.sql"))
    assert steps == [m.version for m in migrations.MIGRATIONS] == list(range(2, migrations.LATEST + 1))
    # a step without a statement (comments only) says so in its file
    assert all(m.statements or (sql.FOLDER / "migrations" / f"v{m.version:02d}.sql").read_text().strip()
               for m in migrations.MIGRATIONS)


def test_no_function_over_sixty_lines_outside_tests():
    long = set()
    for name, tree in _files((*PACKAGES, "bench")):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.add((name, node.name))
    assert long == set(), f"split these functions: {sorted(long)}"


def test_the_run_is_split_by_concern():
    """Staging, scope, deciding and publishing are modules of their own; no catch-all warehouse module."""
    run = REPO / "consent" / "run"
    assert not (run / "warehouse.py").exists()
    for module in ("staging", "scope", "decide", "publish"):
        assert (run / f"{module}.py").exists(), module


def test_a_run_keeps_its_scratch_tables_in_staging_and_main_holds_only_published_tables(exports, warehouse_path):
    """`main` is what auditors read: the published tables, `schema_version` and the marts, under
    their names. A run's scratch tables (`stg_*`: what it staged, the contacts it decided, the rows
    it replaced and wrote, the marts' scope) are in the schema `staging`, after a first run and a
    night alike."""
    from consent import marts
    from consent.domain.schema import TABLES
    from tests.conftest import query, run_cli

    published = {t.name for t in TABLES} | {"schema_version"} | set(marts.MARTS)
    tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
    for as_of in ("2026-11-10T00:00:00Z", "2026-11-12T00:00:00Z"):  # a first run, then a night
        assert run_cli(exports, warehouse_path, as_of=as_of) == 0
        main = {t for (t,) in query(warehouse_path, tables, ["main"])}
        staging = {t for (t,) in query(warehouse_path, tables, ["staging"])}
        assert main <= published and not [t for t in main if t.startswith("stg_")], main - published
        assert {"stg_consent_events", "stg_quarantine", "stg_identifier_links", "stg_source_files", "stg_run",
                "stg_touched", "stg_replaced_status"} <= staging
        assert all(t.startswith("stg_") for t in staging), staging
    # the night's copies of what it decided, and the scope of the marts it built by difference
    assert {"stg_decided_status", "stg_decided_history", "stg_mart_scope", "stg_mart_history_delta"} <= staging
    # readers name them with their schema (the read copy holds both schemas)
    from cli.main import main as consent

    assert consent(["sql", "--warehouse", str(warehouse_path), "SELECT run_id, mode FROM staging.stg_run"]) == 0
