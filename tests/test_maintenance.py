"""The warehouse's upkeep: on DuckLake small files merged, snapshots beyond the retention expired and
their files deleted, the tables as they were; a file warehouse checkpointed. No server needed: the
catalogs here are a DuckDB file and a SQLite file, the data in a local folder."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cli.main import main
from consent.storage.access import Warehouse
from consent.storage.maintenance import maintain
from tests.conftest import FIXTURES
from tests.test_ducklake import everything

NIGHTS = ("2026-11-08T00:00:00Z", "2026-11-09T00:00:00Z", "2026-11-10T00:00:00Z")


def snapshots(warehouse: Warehouse) -> list[datetime]:
    with warehouse.connect(read_only=True) as con:
        rows = con.execute("SELECT snapshot_time FROM ducklake_snapshots('warehouse') ORDER BY 1").fetchall()
    return [t.astimezone(timezone.utc).replace(tzinfo=None) for (t,) in rows]


def data_files(folder: Path) -> int:
    return len(list(folder.rglob("*.parquet")))


@pytest.fixture
def nights(tmp_path, monkeypatch) -> tuple[Warehouse, Path, datetime]:
    """Three small runs into a DuckLake catalog (a DuckDB file), an export file added before each of
    the last two; the moment between the first run and the second."""
    monkeypatch.setenv("CONSENT_HASH_SALT", "a salt")
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    exports, data = tmp_path / "exports", tmp_path / "data"
    shutil.copytree(FIXTURES / "exports", exports)
    lake = f"ducklake:{tmp_path / 'catalog.ducklake'}"
    between = None
    for n, night in enumerate(NIGHTS):
        if n:
            (exports / "web_form" / f"later_{n}.csv").write_text(
                "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
                f"+49151000000{n:02d},opt_in,marketing,2026-11-0{6 + n}T09:00:00Z,checkbox,v1\n")
        assert main(["run", "--exports", str(exports), "--warehouse", lake, "--data-path", str(data),
                     "--as-of", night]) == 0
        if n == 0:
            time.sleep(0.05)
            between = datetime.now(timezone.utc).replace(tzinfo=None)
            time.sleep(0.05)
    return Warehouse(path=lake), data, between


def test_maintenance_expires_snapshots_beyond_retention_and_keeps_the_tables(nights, monkeypatch):
    warehouse, data, between = nights
    before = snapshots(warehouse)
    with warehouse.reader() as con:
        tables = everything(con)
    files_before = data_files(data)
    assert before[0] < between < before[-1]
    monkeypatch.setenv("CONSENT_SNAPSHOT_RETENTION_DAYS", "1")
    done = maintain(warehouse, now=between + timedelta(days=1))  # keep what is younger than `between`
    after = snapshots(warehouse)
    assert done.storage == "ducklake" and done.retention_days == 1
    assert min(after) >= between and len(after) < len(before)
    assert [t for t in before if t >= between] == [t for t in after if t <= before[-1]]  # the younger ones all kept
    with warehouse.reader() as con:
        assert everything(con) == tables
    assert data_files(data) <= files_before and done.files_removed > 0
    assert done.data_files[1] <= done.data_files[0]
    # the warehouse opens as it stood after the first night no more; after the second, still
    lake = warehouse.lake
    con = duckdb.connect(config={"extension_directory": _extensions()})
    con.execute("LOAD ducklake")
    con.execute(f"ATTACH '{lake.location}' AS w (READ_ONLY, SNAPSHOT_TIME '{after[0] + timedelta(microseconds=1)}')")
    assert con.execute("SELECT count(*) FROM w.consent_status").fetchone()[0] > 0
    con.execute("DETACH w")
    with pytest.raises(duckdb.Error, match="No snapshot found"):
        con.execute(f"ATTACH '{lake.location}' AS w (READ_ONLY, SNAPSHOT_TIME '{before[0]}')")


def _extensions() -> str:
    from consent.storage.access import _extension_directory

    return _extension_directory()


def test_consent_maintain_on_sqlite_catalog_and_on_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONSENT_HASH_SALT", "a salt")
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    lake = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
    with Warehouse(path=lake).connect() as con:
        for n in range(5):  # five small commits: five files of one table
            con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES (?, now()::TIMESTAMP, 'r')",
                        [f"h{n}"])
    folder = tmp_path / "catalog.sqlite.files"
    assert data_files(folder / "main" / "suppression_list") == 5
    assert main(["maintain", "--warehouse", lake, "--retention-days", "0"]) == 0
    out = capsys.readouterr().out
    assert "snapshots older than 0 days" in out and "deleted" in out
    assert data_files(folder / "main" / "suppression_list") == 1  # merged, the small ones deleted
    assert len(snapshots(Warehouse(path=lake))) == 1
    with Warehouse(path=lake).reader() as con:
        assert con.execute("SELECT count(*) FROM suppression_list").fetchone()[0] == 5
    file = tmp_path / "wh" / "consent.duckdb"
    with Warehouse(path=str(file)).connect():
        pass
    assert main(["maintain", "--warehouse", str(file)]) == 0
    assert "a file warehouse keeps no snapshots" in capsys.readouterr().out
    assert main(["maintain", "--warehouse", str(file), "--retention-days", "-1"]) == 2


def test_the_maintenance_job_runs_in_dagster_and_is_recorded(tmp_path, monkeypatch):
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    monkeypatch.setenv("CONSENT_HASH_SALT", "a salt")
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    lake = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
    with Warehouse(path=lake).connect() as con:
        for n in range(3):
            con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES (?, now()::TIMESTAMP, 'r')",
                        [f"h{n}"])
    resources = {"warehouse": WarehouseResource(path=lake, snapshot_retention_days=0),
                 "settings": ConsentSettings(exports_dir=str(tmp_path))}
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("warehouse_maintenance").execute_in_process(instance=instance)
    assert result.success
    with Warehouse(path=lake).reader() as con:
        assert con.execute("SELECT mode, status FROM runs").fetchall() == [("maintenance", "succeeded")]
        assert con.execute("SELECT count(*) FROM suppression_list").fetchone()[0] == 3
    assert data_files(tmp_path / "catalog.sqlite.files" / "main" / "suppression_list") == 1


def test_sql_at_opens_a_ducklake_as_it_stood_within_the_retention(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONSENT_HASH_SALT", "a salt")
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    lake = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
    moments = []
    for n in range(3):
        with Warehouse(path=lake).connect() as con:
            con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES (?, now()::TIMESTAMP, 'r')",
                        [f"h{n}"])
        time.sleep(0.05)
        moments.append(datetime.now(timezone.utc).replace(tzinfo=None).isoformat() + "Z")
        time.sleep(0.05)
    count = "SELECT count(*) AS n FROM suppression_list"
    for n, moment in enumerate(moments):
        assert main(["sql", count, "--warehouse", lake, "--at", moment, "--format", "csv"]) == 0
        assert capsys.readouterr().out.split() == ["n", str(n + 1)]
    assert main(["sql", "DELETE FROM suppression_list", "--warehouse", lake, "--at", moments[0]]) == 2  # read-only
    assert main(["sql", count, "--warehouse", lake, "--at", "last week"]) == 2
    assert "--at: not an ISO 8601 timestamp" in capsys.readouterr().err
    assert main(["maintain", "--warehouse", lake, "--retention-days", "0"]) == 0
    capsys.readouterr()
    assert main(["sql", count, "--warehouse", lake, "--at", moments[0]]) == 2  # expired
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No snapshot found" in err and "CONSENT_SNAPSHOT_RETENTION_DAYS" in err
    file = str(tmp_path / "wh" / "consent.duckdb")
    with Warehouse(path=file).connect():
        pass
    assert main(["sql", count, "--warehouse", file, "--at", moments[0]]) == 2
    assert "a file warehouse keeps no snapshots" in capsys.readouterr().err


def test_a_negative_retention_in_the_environment_is_a_configuration_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONSENT_SNAPSHOT_RETENTION_DAYS", "-3")
    file = str(tmp_path / "wh" / "consent.duckdb")
    with Warehouse(path=file).connect():
        pass
    assert main(["maintain", "--warehouse", file]) == 2
    assert "CONSENT_SNAPSHOT_RETENTION_DAYS: not a whole number of days (0 or more): '-3'" in capsys.readouterr().err


def test_sql_at_reads_a_snapshot_taken_before_the_latest_migration(tmp_path, monkeypatch, capsys):
    """Time travel goes on working after an upgrade: a snapshot from before a migration has the
    older schema version and is read in its own layout, not refused as needing a migration."""
    from consent.storage.migrations import LATEST

    monkeypatch.setenv("CONSENT_HASH_SALT", "a salt")
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    lake = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
    with Warehouse(path=lake).connect() as con:  # a catalog as the previous version left it
        con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES ('h0', now()::TIMESTAMP, 'r')")
        con.execute("UPDATE schema_version SET version = ? WHERE version = ?", [LATEST - 1, LATEST])
    time.sleep(0.05)
    before = datetime.now(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    time.sleep(0.05)
    assert main(["migrate", "--warehouse", lake]) == 0
    capsys.readouterr()
    query = "SELECT max(version) AS v, (SELECT count(*) FROM suppression_list) AS n FROM schema_version"
    assert main(["sql", query, "--warehouse", lake, "--at", before, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["v,n", f"{LATEST - 1},1"]
    assert main(["sql", query, "--warehouse", lake, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["v,n", f"{LATEST},1"]
