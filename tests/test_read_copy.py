"""Readers work on a read copy that writers replace atomically; no read path reaches the salt or
the key; files holding numbers are owner-only; spill files of an encrypted warehouse are encrypted;
a key that does not fit the file is one true line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import AS_OF, FIXTURES, run_cli

# A BI tool or an auditor's shell: a read-only DuckDB connection held open on a file, in another process.
HOLDER = r"""
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
def counts(c):
    return c.execute("SELECT (SELECT count(*) FROM consent_events), (SELECT count(*) FROM runs), "
                     "(SELECT count(*) FROM consent_status WHERE status = 'opted_out')").fetchone()
print(*counts(con), flush=True)
sys.stdin.readline()
print(*counts(con), flush=True)
con.close()
again = duckdb.connect(sys.argv[1], read_only=True)
print(*counts(again), flush=True)
"""


@pytest.fixture(autouse=True)
def usual_umask():
    """The umask most systems start with: files are world-readable unless the code says otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """A warehouse after one night of the fixture exports without the preference centre's opt-out
    (the next night brings it), made once for this module; tests copy it."""
    folder = tmp_path_factory.mktemp("night")
    exports = folder / "exports"
    shutil.copytree(FIXTURES / "exports", exports, ignore=shutil.ignore_patterns("preference_center"))
    before = os.umask(0o022)
    try:
        assert run_cli(exports, folder / "wh" / "consent.duckdb") == 0
    finally:
        os.umask(before)
    return folder


@pytest.fixture
def copied(night, tmp_path) -> tuple[Path, Path]:
    """A copy of the module's warehouse folder and exports: (warehouse, exports)."""
    shutil.copytree(night / "wh", tmp_path / "wh")
    shutil.copytree(night / "exports", tmp_path / "exports")
    return tmp_path / "wh" / "consent.duckdb", tmp_path / "exports"


def read_copy(warehouse: Path) -> Path:
    return warehouse.with_name("consent.read.duckdb")


def holder(path: Path, mode: str = "read") -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    return process


def counts_of(process: subprocess.Popen) -> list[int]:
    return [int(v) for v in process.stdout.readline().split()]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def sql(warehouse: Path, query: str, capsys, fmt: str = "json") -> list[dict]:
    from cli.main import main

    capsys.readouterr()
    assert main(["sql", query, "--warehouse", str(warehouse), "--format", fmt]) == 0
    return json.loads(capsys.readouterr().out)


# Readers never stop a night.


def test_a_reader_holding_the_read_copy_neither_stops_a_run_nor_sees_half_a_night(copied, capsys):
    warehouse, exports = copied
    assert read_copy(warehouse).exists() and mode(read_copy(warehouse)) == 0o600
    reader = holder(read_copy(warehouse))
    try:
        before = counts_of(reader)
        assert before[1] == 1
        shutil.copytree(FIXTURES / "exports" / "preference_center", exports / "preference_center")
        # One second is all a run would wait for DuckDB's lock: a reader on the run's file would fail it.
        assert run_cli(exports, warehouse, "--lock-timeout", "1") == 0
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert counts_of(reader) == before  # the reader's snapshot is the old night, whole
        after = counts_of(reader)  # a new connection opens the new copy
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=60) == 0
    assert after[1] == 2 and after[0] > before[0] and after[2] > before[2]
    assert sql(warehouse, "SELECT count(*) AS runs FROM runs", capsys) == [{"runs": 2}]


def test_read_commands_read_the_copy_while_a_writer_holds_the_warehouse(copied, capsys, monkeypatch, tmp_path):
    from cli.main import main

    warehouse, _ = copied
    monkeypatch.setenv("CONSENT_LOCK_TIMEOUT_SECONDS", "1")
    writer = holder(warehouse, mode="write")  # DuckDB's exclusive lock on the warehouse, as a run's step holds it
    try:
        counts_of(writer)
        w = ["--warehouse", str(warehouse)]
        assert main(["sql", "SELECT count(*) FROM consent_status", *w]) == 0
        assert main(["runs", *w]) == 0
        assert main(["audit", "violations", *w]) == 0
        assert main(["export", "--purpose", "marketing", *w]) == 0
        assert main(["access", "+4915112345678", "--out", str(tmp_path / "access.json"), *w]) == 0
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    assert "locked" not in capsys.readouterr().err


def test_a_warehouse_without_a_read_copy_still_opens_and_gets_one(copied, capsys):
    from consent.storage.access import RunLock

    warehouse, _ = copied
    read_copy(warehouse).unlink()  # as older code left it
    lock = RunLock(warehouse, 0)
    lock.acquire()  # a writer is at work: the reader reads the warehouse itself and makes no copy
    try:
        assert sql(warehouse, "SELECT count(*) AS runs FROM runs", capsys) == [{"runs": 1}]
        assert not read_copy(warehouse).exists()
    finally:
        lock.release()
    assert sql(warehouse, "SELECT count(*) AS runs FROM runs", capsys) == [{"runs": 1}]
    assert read_copy(warehouse).exists() and mode(read_copy(warehouse)) == 0o600


def test_a_copy_older_than_the_warehouse_is_replaced_before_it_is_read(copied, capsys):
    warehouse, _ = copied
    con = duckdb.connect(str(warehouse))  # a writer that committed and died before replacing the copy
    con.execute("UPDATE runs SET mode = 'changed'")
    con.close()
    assert sql(warehouse, "SELECT mode FROM runs", capsys) == [{"mode": "changed"}]


def copy_says(warehouse: Path, query: str) -> list[tuple]:
    """What the read copy itself holds, opened as a BI tool opens it (no command refreshes it first)."""
    con = duckdb.connect(str(read_copy(warehouse)), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_writing_commands_replace_the_copy_when_they_commit(copied, tmp_path):
    from cli.main import main

    warehouse, exports = copied
    w = ["--warehouse", str(warehouse)]
    audience = tmp_path / "audience.csv"
    audience.write_text("phone\n+4915112345678\n")
    assert main(["check", str(audience), "--purpose", "marketing", "--exports", str(exports), *w]) in (0, 3)
    assert copy_says(warehouse, "SELECT count(*) FROM send_checks") == [(1,)]
    stamp = read_copy(warehouse).stat().st_ino
    assert main(["erase", "+4915112345678", "--exports", str(exports), *w]) == 0
    assert read_copy(warehouse).stat().st_ino != stamp  # a new file, renamed over the old one
    assert copy_says(warehouse, "SELECT count(*) FROM suppression_list") == [(1,)]
    stamp = read_copy(warehouse).stat().st_ino
    assert main(["migrate", *w]) == 0
    assert read_copy(warehouse).stat().st_ino != stamp


def test_a_run_launched_by_dagster_replaces_the_copy_in_its_finalisation(copied):
    """The schedule, the sensors and the UI run the job without the CLI: the job itself replaces the copy."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    warehouse, exports = copied
    shutil.copytree(FIXTURES / "exports" / "preference_center", exports / "preference_center")
    resources = {"warehouse": WarehouseResource(path=str(warehouse)),
                 "settings": ConsentSettings(exports_dir=str(exports), as_of=AS_OF)}
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(
            instance=instance, raise_on_error=False)
    assert result.success
    assert copy_says(warehouse, "SELECT count(*), count(finished_at) FROM runs") == [(2, 2)]
    assert read_copy(warehouse).stat().st_mtime_ns >= warehouse.stat().st_mtime_ns


# No read path reaches the salt.


def test_no_sql_reader_reaches_the_salt(copied, capsys):
    from cli.main import main

    warehouse, _ = copied
    salt = (warehouse.parent / ".hash_salt").read_text().strip()
    assert mode(warehouse.parent / ".hash_salt") == 0o600
    for query in ("SELECT getvariable('hash_salt') AS v", "SELECT * FROM duckdb_variables()",
                  "SELECT * FROM duckdb_settings()", "SELECT * FROM duckdb_functions()",
                  "SELECT * FROM duckdb_databases()"):
        rows = sql(warehouse, query, capsys)
        assert salt not in json.dumps(rows, default=str), query
    assert sql(warehouse, "SELECT getvariable('hash_salt') AS v", capsys) == [{"v": None}]
    # No salted-hash oracle: a reader cannot hash guessed numbers to match the marts.
    assert main(["sql", "SELECT salted_hash('+4915112345678')", "--warehouse", str(warehouse)]) == 2
    assert "salted_hash" in capsys.readouterr().err
    for path in (warehouse, read_copy(warehouse)):
        assert salt.encode() not in path.read_bytes(), path


def test_consent_hash_gives_the_hash_the_marts_audits_and_suppression_list_hold(copied, capsys):
    from cli.main import main

    warehouse, exports = copied
    w = ["--warehouse", str(warehouse)]
    (warehouse.parent / ".hash_salt").chmod(0o644)  # a salt file older code or a copy left readable
    capsys.readouterr()
    assert main(["hash", "0151 12345678", "--country", "DE", *w]) == 0
    hashed = capsys.readouterr().out.strip()
    assert mode(warehouse.parent / ".hash_salt") == 0o600
    assert len(hashed) == 32
    assert main(["hash", "+4915112345678", *w]) == 0
    assert capsys.readouterr().out.strip() == hashed
    # The canned audits hash in Python: the same hash, with no salt on their connection either.
    assert main(["audit", "opt-outs-honoured", "--format", "json", *w]) == 0
    assert hashed in {row["contact_hash"] for row in json.loads(capsys.readouterr().out)}
    marts = sql(warehouse, "SELECT DISTINCT contact_hash FROM opt_out_timeliness", capsys)
    assert {"contact_hash": hashed} in marts
    assert main(["erase", "+4915112345678", "--exports", str(exports), *w]) == 0
    assert sql(warehouse, "SELECT phone_hash FROM suppression_list", capsys) == [{"phone_hash": hashed}]


def test_consent_hash_without_a_salt_says_so(tmp_path, capsys, monkeypatch):
    from cli.main import main

    monkeypatch.delenv("CONSENT_HASH_SALT", raising=False)
    assert main(["hash", "+4915112345678", "--warehouse", str(tmp_path / "none" / "w.duckdb")]) == 2
    assert "no hash salt" in capsys.readouterr().err
    assert not (tmp_path / "none" / ".hash_salt").exists()  # a reader never creates one


# Encryption covers everything it writes; files holding numbers are owner-only.


def test_spill_files_of_an_encrypted_warehouse_are_encrypted_and_owner_only(tmp_path):
    from consent.storage.access import Warehouse

    spill = tmp_path / "spill"
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"), encryption_key="k3y", memory_limit="64MB",
                          temp_directory=str(spill))
    with warehouse.connect() as con:
        con.execute("CREATE TEMP TABLE big AS SELECT '+4915112345678' || i::VARCHAR || repeat('x', 60) AS phone "
                    "FROM range(1500000) AS t(i)")
        files = [p for p in spill.rglob("*") if p.is_file()]
        assert files, "nothing spilled: the test proves nothing"
        for path in files:
            assert b"+4915112345678" not in path.read_bytes(), path
            assert mode(path) == 0o600, path


def test_files_holding_numbers_are_created_owner_only(copied, tmp_path):
    from consent.storage.access import Warehouse
    from cli.main import main

    warehouse, exports = copied
    w = ["--warehouse", str(warehouse)]
    assert mode(warehouse) == 0o600 and mode(read_copy(warehouse)) == 0o600
    outputs = tmp_path / "out"
    outputs.mkdir()
    audience = outputs / "audience.csv"
    audience.write_text("phone\n+4915112345678\n+447400123456\n")
    assert main(["check", str(audience), "--purpose", "marketing", "--exports", str(exports),
                 "--out", str(outputs / "checked.csv"), *w]) in (0, 3)
    assert main(["export", "--purpose", "marketing", "--out", str(outputs / "sendable.txt"), *w]) == 0
    existing = outputs / "suppression.csv"
    existing.write_text("")  # a file that was there before, readable by all
    assert main(["export", "--suppression", "--out", str(existing), *w]) == 0
    assert main(["access", "+4915112345678", *w]) == 0
    reports = list(warehouse.parent.glob("access_*.json"))
    assert reports
    for path in [outputs / "checked.csv", outputs / "sendable.txt", existing, *reports]:
        assert mode(path) == 0o600, path
    assert mode(audience) == 0o644  # files the commands do not write keep the umask
    # the write-ahead log, while a writer holds it; and a warehouse older code left readable
    warehouse.chmod(0o644)
    with Warehouse(path=str(warehouse)).connect() as con:
        con.execute("INSERT INTO suppression_list (phone_hash, erased_at, reason) VALUES ('h', TIMESTAMP '2026-11-01', 'test')")
        assert mode(warehouse.with_name(warehouse.name + ".wal")) == 0o600
        assert mode(warehouse) == 0o600


@pytest.fixture
def fresh(tmp_path) -> tuple[Path, Path]:
    """An encrypted and a plaintext warehouse, empty (made by a writing connection)."""
    from consent.storage.access import Warehouse

    encrypted, plain = tmp_path / "enc" / "consent.duckdb", tmp_path / "plain" / "consent.duckdb"
    with Warehouse(path=str(encrypted), encryption_key="right key").connect():
        pass
    with Warehouse(path=str(plain)).connect():
        pass
    return encrypted, plain


@pytest.mark.parametrize("key, expected", [
    (None, "it is encrypted (set CONSENT_WAREHOUSE_KEY)"),
    ("wrong key", "wrong key (check CONSENT_WAREHOUSE_KEY)"),
])
def test_a_missing_or_wrong_key_is_one_true_line_and_the_file_is_untouched(fresh, exports, monkeypatch, capsys, key, expected):
    from cli.main import main

    encrypted, _ = fresh
    if key:
        monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", key)
    else:
        monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    before = hashlib.sha256(encrypted.read_bytes()).hexdigest()
    files = sorted(encrypted.parent.iterdir())
    capsys.readouterr()
    assert run_cli(exports, encrypted) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"consent: cannot open the warehouse {encrypted}: {expected}"]
    assert out == ""
    for command in (["sql", "SELECT 1"], ["runs"], ["erase", "+4915112345678"]):
        assert main([*command, "--warehouse", str(encrypted)]) == 2, command
        assert capsys.readouterr().err.splitlines() == [f"consent: cannot open the warehouse {encrypted}: {expected}"]
    assert hashlib.sha256(encrypted.read_bytes()).hexdigest() == before
    assert sorted(encrypted.parent.iterdir()) == files  # no alert, no data docs, no copy


def test_a_key_given_for_a_plaintext_warehouse_says_it_is_not_encrypted(fresh, exports, monkeypatch, capsys):
    _, plain = fresh
    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "some key")
    before = hashlib.sha256(plain.read_bytes()).hexdigest()
    capsys.readouterr()
    assert run_cli(exports, plain) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"consent: cannot open the warehouse {plain}: it is not encrypted, but a key was given "
        "(unset CONSENT_WAREHOUSE_KEY to open it)"]
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == before


def test_the_read_copy_of_an_encrypted_warehouse_is_encrypted_and_needs_the_key(fresh, monkeypatch, capsys):
    from consent.storage.access import Warehouse

    encrypted, _ = fresh
    warehouse = Warehouse(path=str(encrypted), encryption_key="right key")
    with warehouse.connect() as con:
        con.execute("INSERT INTO suppression_list BY NAME SELECT 'h' AS phone_hash, TIMESTAMP '2026-11-01' AS erased_at, "
                    "'+4915112345678' AS reason")
    assert warehouse.publish_read_copy() == read_copy(encrypted)
    data = read_copy(encrypted).read_bytes()
    assert b"suppression_list" not in data and b"4915112345678" not in data
    with pytest.raises(duckdb.Error, match="without a key"):
        duckdb.connect(str(read_copy(encrypted)), read_only=True)
    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "right key")
    assert sql(encrypted, "SELECT count(*) AS n FROM suppression_list", capsys) == [{"n": 1}]
