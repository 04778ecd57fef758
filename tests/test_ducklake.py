"""The same warehouse on DuckLake: a run into a DuckLake catalog in PostgreSQL (data in a folder, or
on an S3 endpoint) holds exactly what the same run into a DuckDB file holds, and every read command
works on it. PostgreSQL and the S3 endpoint are real, started for the session (tests/services.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pytest

from consent.storage.ducklake import Lake, s3_secret_sql, without_constraints
from consent.storage.access import NoRunLock, Warehouse
from cli.main import main
from tests.conftest import AS_OF, FIXTURES
from tests.test_nights_equal_full import NOT_COMPARED, RUN_COLUMNS

SALT = "one salt for every warehouse of this module"
MARTS = sorted(p.stem for p in (Path(__file__).parent.parent / "consent" / "marts").glob("*.sql"))


def run(exports: Path, warehouse: str, *extra: str) -> int:
    return main(["run", "--exports", str(exports), "--warehouse", warehouse, "--as-of", AS_OF, *extra])


def everything(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """Every table and mart of the connected warehouse (schema `main`: not the run's scratch, nor the
    runs' bookkeeping), without the columns naming the run, as sorted rows: equal whatever order
    they were written in."""
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "ORDER BY 1").fetchall() if t not in NOT_COMPARED]
    out = {}
    for table in tables:
        columns = [c for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
            "AND table_name = ? ORDER BY column_index", [table]).fetchall() if c not in RUN_COLUMNS]
        out[table] = con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()
    return out


def contents(location: str) -> dict[str, list]:
    with Warehouse(path=location).reader() as con:
        return everything(con)


@pytest.fixture(scope="module")
def built(postgres_service, tmp_path_factory):
    """The fixture exports run once into a DuckDB file and once into DuckLake on PostgreSQL."""
    base = tmp_path_factory.mktemp("lake")
    exports = base / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONSENT_HASH_SALT", SALT)
        env.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
        file = str(base / "file" / "consent.duckdb")
        lake = "ducklake:postgres:" + postgres_service.dsn(postgres_service.create_database())
        assert run(exports, file) == 0
        assert run(exports, lake, "--data-path", str(base / "lake_data")) == 0
        yield {"base": base, "exports": exports, "file": file, "lake": lake, "data": base / "lake_data"}


@pytest.fixture
def salted(monkeypatch):
    monkeypatch.setenv("CONSENT_HASH_SALT", SALT)
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)


def test_a_run_on_ducklake_postgres_holds_what_the_file_holds_row_for_row(built, salted):
    file, lake = contents(built["file"]), contents(built["lake"])
    assert set(file) == set(lake)
    assert {"consent_status", "consent_status_history", "consent_violations", *MARTS} <= set(lake)
    for table in file:
        assert lake[table] == file[table], table
    assert len(lake["consent_status"]) > 5 and lake["consent_violations"] and lake["consent_status_history"]
    # the rows are Parquet files in the data path, the catalog in PostgreSQL: nothing else
    assert list((built["data"] / "main" / "consent_status").glob("*.parquet"))
    # the run's scratch tables are in the schema `staging` there too, none in `main`
    assert scratch(built["lake"], "main") == [] and "stg_run" in scratch(built["lake"], "staging")
    assert scratch(built["lake"], "staging") == scratch(built["file"], "staging")


def scratch(location: str, schema: str) -> list[str]:
    """The `stg_*` tables of `schema` in the warehouse at `location`."""
    with Warehouse(path=location).reader() as con:
        return [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema = ? ORDER BY 1", [schema]).fetchall() if t.startswith("stg_")]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_read_commands_work_on_ducklake_as_on_the_file(built, salted, capsys, tmp_path):
    for query in ("SELECT business, purpose, status, count(*) FROM consent_status GROUP BY ALL ORDER BY ALL",
                  "SELECT count(*) FROM consent_events"):
        answers = [cli(capsys, "sql", query, "--warehouse", w, "--format", "json") for w in (built["file"], built["lake"])]
        assert answers[0][0] == answers[1][0] == 0
        assert json.loads(answers[0][1]) == json.loads(answers[1][1])
    for argv in (["export", "--purpose", "marketing"], ["export", "--suppression"], ["audit", "violations"]):
        answers = [cli(capsys, *argv, "--warehouse", w) for w in (built["file"], built["lake"])]
        assert answers[0][0] == answers[1][0] == 0, (argv, answers)
        assert sorted(answers[0][1].splitlines()) == sorted(answers[1][1].splitlines()), argv
    code, out, _ = cli(capsys, "runs", "--warehouse", built["lake"])
    assert code == 0 and "succeeded" in out
    audience = tmp_path / "audience.csv"
    audience.write_text("phone\n+4915112345678\n+4915199999999\n", encoding="utf-8")
    answers = [cli(capsys, "check", str(audience), "--purpose", "marketing", "--warehouse", w, "--exports",
                   str(built["exports"])) for w in (built["file"], built["lake"])]
    assert answers[0][0] == answers[1][0] and answers[0][0] in (0, 3), answers
    assert answers[0][1] == answers[1][1]
    # the check is recorded in the lake, as in the file
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM send_checks", "--warehouse", built["lake"],
                       "--format", "json")
    assert code == 0 and json.loads(out)[0]["n"] >= 1


def test_sql_on_ducklake_reads_the_warehouse_and_nothing_else(built, salted, capsys):
    code, _, err = cli(capsys, "sql", "DELETE FROM consent_status", "--warehouse", built["lake"])
    assert code == 2 and "read-only" in err
    code, _, err = cli(capsys, "sql", "SELECT * FROM read_csv('/etc/passwd')", "--warehouse", built["lake"])
    assert code == 2 and "/etc/passwd" in err and "disabled" in err
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM consent_status", "--warehouse", built["lake"],
                       "--format", "json")
    assert code == 0 and json.loads(out)[0]["n"] > 0


def test_a_ducklake_warehouse_takes_no_run_lock_and_readers_never_wait_for_writers(built, salted, capsys):
    warehouse = Warehouse(path=built["lake"], lock_timeout_seconds=1)
    assert isinstance(warehouse.run_lock(), NoRunLock)
    with warehouse.connect() as writer, warehouse.connect() as other_writer:
        writer.execute("BEGIN TRANSACTION")
        writer.execute("DELETE FROM consent_violations")
        other_writer.execute("SELECT count(*) FROM consent_status").fetchone()
        code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM consent_violations", "--warehouse", built["lake"],
                           "--format", "json")
        assert code == 0 and json.loads(out)[0]["n"] > 0  # the reader sees the last commit
        writer.execute("ROLLBACK")
    assert not list(built["data"].parent.glob("lake_data*.runlock")) and not list(built["data"].rglob("*.runlock"))


def test_a_run_with_its_data_on_an_s3_endpoint(built, postgres_service, s3_service, salted, monkeypatch, tmp_path):
    import boto3

    for name, value in s3_service.environment().items():
        monkeypatch.setenv(name, value)
    bucket = s3_service.bucket()
    lake = "ducklake:postgres:" + postgres_service.dsn(postgres_service.create_database())
    monkeypatch.chdir(tmp_path)  # what the lake keeps beside it goes under ./warehouse/ here
    assert run(built["exports"], lake, "--data-path", f"s3://{bucket}/consent") == 0
    stored = boto3.client("s3", endpoint_url=s3_service.endpoint, aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
                          ).list_objects_v2(Bucket=bucket, Prefix="consent/")
    keys = [item["Key"] for item in stored.get("Contents", [])]
    assert any(k.startswith("consent/main/consent_status/") and k.endswith(".parquet") for k in keys)
    assert not list(tmp_path.rglob("*.parquet"))
    lake_rows, file_rows = contents(lake), contents(built["file"])
    for table in ("consent_status", "consent_status_history", "consent_violations", *MARTS):
        assert lake_rows[table] == file_rows[table], table


def test_an_encrypted_ducklake_keeps_its_catalog_and_files_unreadable_without_the_key(salted, monkeypatch, capsys,
                                                                                       tmp_path):
    lake = f"ducklake:{tmp_path / 'lake' / 'catalog.ducklake'}"
    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "a key kept out of the repository")
    with Warehouse(path=lake, data_path=str(tmp_path / "data")).connect() as con:
        con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES ('h', now()::TIMESTAMP, 'r')")
    files = list((tmp_path / "data").rglob("*.parquet"))
    assert files
    plain = duckdb.connect()
    with pytest.raises(duckdb.Error):  # Parquet encryption: no key, no rows
        plain.execute(f"SELECT * FROM read_parquet('{files[0]}')").fetchall()
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM suppression_list", "--warehouse", lake, "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 1}]
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY")
    code, _, err = cli(capsys, "sql", "SELECT 1", "--warehouse", lake)
    assert code == 2 and "encrypted" in err and "CONSENT_WAREHOUSE_KEY" in err


def test_a_key_given_for_a_ducklake_created_without_one_is_refused(salted, monkeypatch, capsys, tmp_path):
    lake = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
    with Warehouse(path=lake).connect() as con:
        con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES ('h', now()::TIMESTAMP, 'r')")
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM suppression_list", "--warehouse", lake, "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 1}]  # a SQLite catalog, its files beside it
    assert list((tmp_path / "catalog.sqlite.files").rglob("*.parquet"))
    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "k")
    code, _, err = cli(capsys, "sql", "SELECT 1", "--warehouse", lake)
    assert code == 2 and "without encryption" in err
    with pytest.raises(Exception, match="without encryption|not encrypted, but a key was given"):
        with Warehouse(path=lake).connect():
            pass


def test_the_catalog_is_named_and_attached_as_given():
    lake = Lake("ducklake:postgres:host=db port=5432 dbname=consent password=s3cret", "s3://bucket/consent")
    assert lake.kind == "postgres" and lake.catalog_file is None
    assert "s3cret" not in lake.describe() and "dbname=consent" in lake.describe()
    assert lake.attach_sql("warehouse", read_only=False, key="k") == (
        "ATTACH 'ducklake:postgres:host=db port=5432 dbname=consent password=s3cret' AS warehouse "
        "(DATA_PATH 's3://bucket/consent/', ENCRYPTED)")
    assert lake.attach_sql("warehouse", read_only=True, key=None).endswith("AS warehouse (READ_ONLY)")
    assert Lake("ducklake:sqlite:/x/c.sqlite").catalog_file == Path("/x/c.sqlite")
    local = Lake("ducklake:/x/c.ducklake", "/srv/lake/data")
    assert local.kind == "duckdb" and "META_ENCRYPTION_KEY 'it''s'" in local.attach_sql("w", read_only=True, key="it's")
    assert Lake("ducklake:postgres:dbname=c", "/srv/lake/data").anchor == Path("/srv/lake/data")


def test_the_s3_secret_comes_from_the_environment():
    sql = s3_secret_sql({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "se'cret", "AWS_REGION": "eu-west-1",
                         "CONSENT_S3_ENDPOINT": "http://127.0.0.1:9000/"})
    assert "KEY_ID 'id'" in sql and "SECRET 'se''cret'" in sql and "REGION 'eu-west-1'" in sql
    assert "ENDPOINT '127.0.0.1:9000'" in sql and "USE_SSL false" in sql and "URL_STYLE 'path'" in sql
    assert "USE_SSL true" in s3_secret_sql({"CONSENT_S3_ENDPOINT": "https://s3.example"})


def test_schema_ddl_loses_only_its_key_constraints_on_ducklake():
    ddl = "CREATE TABLE t (a VARCHAR NOT NULL, b INTEGER PRIMARY KEY, c INT UNIQUE, PRIMARY KEY (a, b))"
    assert without_constraints(ddl) == "CREATE TABLE t (a VARCHAR NOT NULL, b INTEGER, c INT)"


def test_migrate_to_copies_a_file_warehouse_into_ducklake_and_verifies_every_table(built, salted, capsys, tmp_path):
    lake = f"ducklake:{tmp_path / 'moved' / 'catalog.ducklake'}"
    code, out, err = cli(capsys, "migrate", "--warehouse", built["file"], "--to", lake, "--data-path", str(tmp_path / "data"))
    assert code == 0, err
    assert "every table verified" in out and "consent_status" in out
    assert contents(lake) == contents(built["file"])
    # the published tables and marts are copied; the last run's scratch tables are not (the
    # catalog's first run writes them into its own `staging` schema)
    assert "stg_run" not in out and scratch(lake, "staging") == [] and scratch(lake, "main") == []
    with Warehouse(path=lake).reader() as con:
        assert con.execute("SELECT count(*) FROM duckdb_schemas() WHERE database_name = current_database() "
                           "AND schema_name = 'staging'").fetchone() == (1,)
    # a second move into the same catalog would double every row: refused
    code, _, err = cli(capsys, "migrate", "--warehouse", built["file"], "--to", lake)
    assert code == 1 and "already holds rows" in err


@pytest.mark.slow
def test_a_moved_warehouse_goes_on_from_where_the_file_was(built, salted, capsys, tmp_path):
    lake = f"ducklake:{tmp_path / 'moved' / 'catalog.ducklake'}"
    assert cli(capsys, "migrate", "--warehouse", built["file"], "--to", lake)[0] == 0
    assert run(built["exports"], lake) == 0  # the same exports: nothing new
    code, out, _ = cli(capsys, "sql", "SELECT new_events FROM runs ORDER BY started_at DESC LIMIT 1", "--warehouse", lake,
                       "--format", "json")
    assert json.loads(out) == [{"new_events": 0}]
    assert contents(lake) == contents(built["file"])


def holding(folder: Path, text: str) -> list[str]:
    """The Parquet files under `folder` with a row that mentions `text` in any column."""
    con = duckdb.connect()
    return [str(f) for f in folder.rglob("*.parquet")
            if con.execute("SELECT count(*) FROM read_parquet(?) AS t WHERE t::VARCHAR LIKE ?", [str(f), f"%{text}%"]
                           ).fetchone()[0]]


def test_erasure_on_ducklake_leaves_no_byte_of_the_number_in_data_files_or_catalog(built, salted, capsys, tmp_path):
    catalog, data = tmp_path / "catalog.ducklake", tmp_path / "data"
    lake = f"ducklake:{catalog}"
    assert cli(capsys, "migrate", "--warehouse", built["file"], "--to", lake, "--data-path", str(data))[0] == 0
    with Warehouse(path=lake).reader() as con:
        (number,), before = con.execute(
            "SELECT phone_e164 FROM consent_status WHERE phone_e164 IS NOT NULL ORDER BY phone_e164 LIMIT 1").fetchone(), \
            con.execute("SELECT count(*) FROM consent_status").fetchone()[0]
    digits = number.lstrip("+")
    assert holding(data, digits) and digits.encode() in catalog.read_bytes()  # the catalog's column statistics
    code, out, err = cli(capsys, "erase", number, "--warehouse", lake, "--exports", str(built["exports"]))
    assert code == 0, err
    assert holding(data, digits) == []
    assert digits.encode() not in catalog.read_bytes()
    code, out, _ = cli(capsys, "sql", f"SELECT count(*) AS n FROM consent_status WHERE phone_e164 = '{number}'",
                       "--warehouse", lake, "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 0}]
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM consent_status", "--warehouse", lake, "--format", "json")
    assert 0 < json.loads(out)[0]["n"] < before  # the others' statuses stay


def test_migrate_to_fails_when_the_copy_differs_from_the_file(built, salted, capsys, monkeypatch, tmp_path):
    import consent.storage.move as move

    real_copy = move.copy_tables

    def lossy_copy(con, source, target):
        copied = real_copy(con, source, target)
        con.execute(f"DELETE FROM {target}.consent_status WHERE rowid IN (SELECT min(rowid) FROM {target}.consent_status)")
        return copied

    monkeypatch.setattr(move, "copy_tables", lossy_copy)
    lake = f"ducklake:{tmp_path / 'catalog.ducklake'}"
    code, _, err = cli(capsys, "migrate", "--warehouse", built["file"], "--to", lake)
    assert code == 1 and "consent_status" in err and "differs" in err


def test_a_catalog_that_cannot_be_attached_is_one_line_without_its_password(salted, capsys, tmp_path):
    code, _, err = cli(capsys, "sql", "SELECT 1", "--warehouse",
                       "ducklake:postgres:host=127.0.0.1 port=1 dbname=none password=hunter2")
    assert code == 2 and "cannot attach the warehouse" in err and "hunter2" not in err and "password=***" in err
    assert len(err.strip().splitlines()) <= 2  # the unencrypted warning, then the one line
    lake = f"ducklake:{tmp_path / 'catalog.ducklake'}"
    with Warehouse(path=lake, data_path=str(tmp_path / "one")).connect():
        pass
    code, _, err = cli(capsys, "migrate", "--warehouse", lake, "--data-path", str(tmp_path / "two"))
    assert code == 2 and "does not match" in err and "--data-path" in err


def test_a_ducklake_catalog_with_scratch_tables_in_main_is_migrated_to_the_staging_schema(salted, tmp_path):
    """A catalog written before the schema `staging` (its scratch tables in `main`, as the file's
    were) opens at this version: every `stg_*` table is in `staging` with its rows, and runs go on."""
    from consent.storage.migrations import LATEST, MIGRATIONS, move_scratch_tables

    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    lake = f"ducklake:{tmp_path / 'catalog.ducklake'}"
    assert run(exports, lake, "--data-path", str(tmp_path / "data")) == 0
    moved_at = next(m.version for m in MIGRATIONS if m.then is move_scratch_tables)
    warehouse = Warehouse(path=lake)
    with warehouse.connect() as con:  # back to the layout before: the scratch tables in `main`
        names = scratch_of(con, "staging")
        for name in names:
            con.execute(f"CREATE TABLE main.{name} AS FROM staging.{name}")
            con.execute(f"DROP TABLE staging.{name}")
        con.execute("DROP SCHEMA staging")
        con.execute("DELETE FROM schema_version")  # created at this version: one row, now the one before
        con.execute("INSERT INTO schema_version VALUES (?, 'before the schema staging', now()::TIMESTAMP)",
                    [moved_at - 1])
        before = {name: sorted(con.execute(f"FROM main.{name}").fetchall(), key=repr) for name in names}
    assert "stg_run" in before and before["stg_run"]
    with warehouse.connect() as con:  # a writer migrates the catalog in place
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (LATEST,)
        assert scratch_of(con, "main") == []
        assert {name: sorted(con.execute(f"FROM staging.{name}").fetchall(), key=repr) for name in names} == before
    assert run(exports, lake) == 0


def scratch_of(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    return [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = ? "
        "AND starts_with(table_name, 'stg_') ORDER BY 1", [schema]).fetchall()]


# ---- one DuckDB instance per process for a PostgreSQL catalog's writers ---------------------------


def test_each_writer_connection_is_a_session_of_its_own_and_sees_other_processes_commits(postgres_catalog, salted,
                                                                                         tmp_path):
    """A writer connection to a PostgreSQL catalog is a session of the process's one instance
    (opening a new instance per step cost 0.5 s): nothing of one session (temp tables, variables,
    an open transaction) reaches the next, and a commit made meanwhile by another process is read."""
    import subprocess
    import sys

    warehouse = Warehouse(path=postgres_catalog, data_path=str(tmp_path / "data"))
    with warehouse.connect() as con:
        con.execute("CREATE TABLE probe (v VARCHAR)")
    with warehouse.connect() as con:
        con.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
        con.execute("SET VARIABLE mine = 42")
        con.execute("BEGIN")
        con.execute("INSERT INTO probe VALUES ('uncommitted')")
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone() == (0,)
        assert con.execute("SELECT getvariable('mine')").fetchone() == (None,)
        assert con.execute("SELECT current_database()").fetchone() == ("warehouse",)
        assert con.execute("SELECT count(*) FROM probe").fetchone() == (0,)  # rolled back with its session
    # another process commits a row
    code = ("import sys; from consent.storage.access import Warehouse\n"
            "with Warehouse(path=sys.argv[1]).connect() as con:\n"
            "    con.execute(\"INSERT INTO probe VALUES ('from another process')\")\n")
    done = subprocess.run([sys.executable, "-c", code, postgres_catalog], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with warehouse.connect() as con:
        assert con.execute("SELECT v FROM probe").fetchall() == [("from another process",)]


def test_a_statement_that_fails_leaves_the_next_writer_connection_whole(postgres_catalog, salted, tmp_path):
    warehouse = Warehouse(path=postgres_catalog, data_path=str(tmp_path / "data"))
    with warehouse.connect() as con:
        con.execute("CREATE TABLE probe (v VARCHAR)")
    with pytest.raises(duckdb.Error):
        with warehouse.connect() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO probe VALUES ('half a transaction')")
            con.execute("SELECT * FROM no_such_table")
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM probe").fetchone() == (0,)
        con.execute("INSERT INTO probe VALUES ('after the failure')")
    with warehouse.connect() as con:
        assert con.execute("SELECT v FROM probe").fetchall() == [("after the failure",)]
