"""Deciding by bucket: contacts decided one person bucket at a time, each bucket in a transaction of
its own (CONSENT_BUCKETS), give the statuses, history and violations deciding them all at once gives,
on a DuckDB file and on DuckLake + PostgreSQL; a bucket whose commit meets a write conflict is
decided again whole, and one that keeps conflicting stops with a clear error, nothing of it written."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from consent.run import buckets as buckets_module
from consent.storage.access import Warehouse, _extension_directory
from consent.storage.db import TransactionConflict, retried_transaction
from tests.conftest import FIXTURES
from tests.test_ducklake import SALT, everything
from tests.test_identities import CSV_HEADER, NEW_PHONE, PHONE, USER, payload, stamp, username_stop, web_opt_in, write
from cli.main import main

OTHER = "+4915100000001"  # linked to USER by the first night's sign-up
PERSONS = ((PHONE, NEW_PHONE), (OTHER, USER))  # a number change; a number and the BSUID that sent STOP
DECIDED = ("consent_status", "consent_status_history", "consent_violations")
BUCKETS = 3


def nights(exports: Path) -> list[tuple[str, str]]:
    """The fixture exports plus one person through a number change and a BSUID link, over two nights;
    each night: (as_of, its exports written before it runs)."""
    shutil.copytree(FIXTURES / "exports", exports)
    write(exports, "policy.yaml", "number_change: carry\n")
    web_opt_in(exports, f"{PHONE},,opt_in,utility,2026-11-01T10:00:00Z,checkbox,v1,",
               f"{OTHER},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    change = payload({"messages": [{"from": PHONE[1:], "id": "wamid.change", "timestamp": stamp(5), "type": "system",
                                    "system": {"body": "changed", "wa_id": NEW_PHONE[1:], "type": "user_changed_number"}}]})
    write(exports, "whatsapp/hooks.jsonl", [change])
    return ["2026-11-08T00:00:00Z", "2026-11-10T00:00:00Z"]


def second_night(exports: Path) -> None:
    write(exports, "in_app/night2.csv", CSV_HEADER + f"{NEW_PHONE},,opt_in,marketing,2026-11-08T10:00:00Z,checkbox,v1,\n")
    write(exports, "whatsapp/night2.jsonl", [username_stop(8)])  # a STOP by the BSUID alone


def run(exports: Path, warehouse: str, as_of: str, *extra: str) -> int:
    return main(["run", "--exports", str(exports), "--warehouse", warehouse, "--as-of", as_of, *extra])


def decided(location: str) -> dict[str, list]:
    """Every table and mart as sorted rows (tests/test_ducklake.py), and the statuses by (contact, purpose)."""
    with Warehouse(path=location).reader() as con:
        tables = everything(con)
        tables["status"] = {(c, p): s for c, p, s in con.execute(
            "SELECT contact_id, purpose, status FROM consent_status WHERE business = 'default'").fetchall()}
        return tables


def bucket_of(identifier: str, buckets: int) -> int:
    return duckdb.sql(f"SELECT md5_number('{identifier}') % {buckets}").fetchone()[0]


def build(base: Path, location: str, monkeypatch, buckets: int | None, *extra: str) -> list[dict]:
    """Two nights then a full run into `location`; what the decided tables held after each."""
    exports = base / "exports"
    first, second = nights(exports)
    if buckets is None:
        monkeypatch.delenv("CONSENT_BUCKETS", raising=False)
    else:
        monkeypatch.setenv("CONSENT_BUCKETS", str(buckets))
    after = []
    assert run(exports, location, first, *extra) == 0
    after.append(decided(location))
    second_night(exports)
    assert run(exports, location, second, *extra) == 0
    after.append(decided(location))
    assert run(exports, location, second, "--full", *extra) == 0
    after.append(decided(location))
    return after


@pytest.fixture
def salted(monkeypatch):
    monkeypatch.setenv("CONSENT_HASH_SALT", SALT)
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)


class Buckets(list):
    """The buckets decided, in order, with the contact ids each decided."""

    def runs(self) -> list[dict[int, set[str]]]:
        """Per run (each starts again at bucket 0): the contact ids of each bucket."""
        out: list[dict[int, set[str]]] = []
        for bucket, ids in self:
            if bucket == 0:
                out.append({})
            out[-1][bucket] = ids
        return out

    def persons_kept_whole(self) -> bool:
        """Each person's contacts decided in a run were decided in one bucket of it."""
        return all(len({b for b, ids in run.items() if set(person) & ids}) <= 1
                   for run in self.runs() for person in PERSONS)


@pytest.fixture
def bucket_calls(monkeypatch) -> Buckets:
    calls = Buckets()
    real = buckets_module.decide_bucket

    def spy(con, bucket, decide, *, full):
        def seen(contacts: str) -> int:
            keys = con.execute(f"SELECT contact_key FROM {contacts}").fetchall()
            calls.append((bucket, {k.split(chr(31))[1] for (k,) in keys}))
            return decide(contacts)

        return real(con, bucket, seen, full=full)

    monkeypatch.setattr(buckets_module, "decide_bucket", spy)
    return calls


@pytest.fixture(scope="module")
def at_once(tmp_path_factory) -> list[dict]:
    """The reference: the same nights into a DuckDB file, every contact decided in one transaction."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONSENT_HASH_SALT", SALT)
        env.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
        base = tmp_path_factory.mktemp("at_once")
        return build(base, str(base / "wh" / "consent.duckdb"), env, None)


def test_the_person_crosses_buckets_by_its_own_identifiers():
    """The person's identifiers, each hashed alone, fall in different buckets: the test below is
    only meaningful if deciding by bucket has to keep them together."""
    assert bucket_of(PHONE, BUCKETS) != bucket_of(NEW_PHONE, BUCKETS)
    assert bucket_of(OTHER, BUCKETS) != bucket_of(USER, BUCKETS)


def test_deciding_by_bucket_on_a_file_gives_what_deciding_at_once_gives(at_once, salted, tmp_path, monkeypatch,
                                                                        bucket_calls):
    by_bucket = build(tmp_path, str(tmp_path / "wh" / "consent.duckdb"), monkeypatch, BUCKETS)
    assert [b for b, _ in bucket_calls] == list(range(BUCKETS)) * 3
    assert bucket_calls.persons_kept_whole()
    assert any({PHONE, NEW_PHONE} <= ids for ids in bucket_calls.runs()[0].values())
    for night, (expected, got) in enumerate(zip(at_once, by_bucket)):
        assert set(got) == set(expected) and set(DECIDED) < set(got)
        for table in got:
            assert got[table] == expected[table], (night, table)
    final = by_bucket[1]["status"]
    # the old number's opt-out carried to the new number, the new opt-in kept; the BSUID's STOP reached its number
    assert final[(NEW_PHONE, "utility")] == "opted_out" and final[(NEW_PHONE, "marketing")] == "opted_in"
    assert final[(OTHER, "marketing")] == final[(OTHER, "utility")] == "opted_out"
    assert by_bucket[2]["consent_violations"]  # the fixtures' violations are compared too


@pytest.mark.slow  # `make test-slow`: the file's twin above and the DuckLake fan-out below run by default
def test_deciding_by_bucket_on_ducklake_postgres_gives_what_deciding_at_once_gives(
        at_once, salted, tmp_path, monkeypatch, bucket_calls, postgres_service):
    lake = "ducklake:postgres:" + postgres_service.dsn(postgres_service.create_database())
    # one worker: the buckets one after another in the night's process (with more, assets/buckets.py)
    by_bucket = build(tmp_path, lake, monkeypatch, BUCKETS, "--data-path", str(tmp_path / "lake_data"), "--workers", "1")
    assert [b for b, _ in bucket_calls] == list(range(BUCKETS)) * 3
    assert bucket_calls.persons_kept_whole()
    for night, (expected, got) in enumerate(zip(at_once, by_bucket)):
        assert set(got) == set(expected)
        for table in got:
            assert got[table] == expected[table], (night, table)


def test_one_bucket_is_the_one_transaction_of_before(salted, tmp_path, monkeypatch, bucket_calls):
    exports = tmp_path / "exports"
    first, _ = nights(exports)
    monkeypatch.setenv("CONSENT_BUCKETS", "1")
    assert run(exports, str(tmp_path / "wh" / "consent.duckdb"), first) == 0
    assert not bucket_calls


def test_a_bucket_count_below_one_is_refused(salted, tmp_path, monkeypatch, capsys):
    exports = tmp_path / "exports"
    first, _ = nights(exports)
    monkeypatch.setenv("CONSENT_BUCKETS", "0")
    assert run(exports, str(tmp_path / "wh" / "consent.duckdb"), first) == 2
    assert "CONSENT_BUCKETS: not a whole number (1 or more): '0'" in capsys.readouterr().err


@pytest.fixture
def lake(tmp_path):
    """A DuckLake (DuckDB-file catalog) and two cursors of one database: two transactions at once."""
    con = duckdb.connect(config={"extension_directory": _extension_directory()})
    con.execute("LOAD ducklake")
    con.execute(f"ATTACH 'ducklake:{tmp_path / 'c.ducklake'}' AS w (DATA_PATH '{tmp_path / 'data'}/')")
    con.execute("USE w")
    con.execute("CREATE TABLE t (k INTEGER, v INTEGER)")
    con.execute("INSERT INTO t SELECT i, 0 FROM range(100) AS r(i)")
    mine, other = con.cursor(), con.cursor()
    mine.execute("USE w")
    other.execute("USE w")
    yield mine, other
    con.close()


def test_a_transaction_meeting_a_write_conflict_is_retried_whole(lake):
    mine, other = lake
    attempts = []

    def work():
        attempts.append(mine.execute("SELECT sum(v) FROM t WHERE k >= 90").fetchone()[0])
        mine.execute("DELETE FROM t WHERE k >= 90")
        mine.execute("INSERT INTO t SELECT i, 1 FROM range(90, 100) AS r(i)")
        if len(attempts) == 1:  # another writer deletes from the same data file and commits first
            other.execute("UPDATE t SET v = 2 WHERE k < 10")
        return "done"

    assert retried_transaction(mine, work, what="the test") == "done"
    assert attempts == [0, 0]  # the second try started again from what was committed
    assert mine.execute("SELECT v, count(*) FROM t GROUP BY v ORDER BY v").fetchall() == [(0, 80), (1, 10), (2, 10)]


def test_a_transaction_that_keeps_conflicting_stops_with_a_clear_error_and_writes_nothing(lake, monkeypatch):
    mine, other = lake
    monkeypatch.setattr("consent.storage.db.CONFLICT_PAUSE_SECONDS", 0)
    attempts = []

    def work():
        attempts.append(1)
        mine.execute("DELETE FROM t WHERE k >= 90")
        # another writer replaces the same rows each time, committing first
        other.execute(f"UPDATE t SET v = {len(attempts)} WHERE k >= 90")

    with pytest.raises(TransactionConflict, match="deciding bucket 3: still meeting a write conflict after 3 tries"):
        retried_transaction(mine, work, what="deciding bucket 3", attempts=3)
    assert len(attempts) == 3
    assert mine.execute("SELECT v, count(*) FROM t WHERE k >= 90 GROUP BY v").fetchall() == [(3, 10)]
    assert mine.execute("SELECT count(*) FROM t").fetchone()[0] == 100


def test_the_buckets_flag_overrides_the_setting_for_this_run(salted, tmp_path, monkeypatch, bucket_calls, capsys):
    exports = tmp_path / "exports"
    first, _ = nights(exports)
    monkeypatch.setenv("CONSENT_BUCKETS", "1")
    assert run(exports, str(tmp_path / "wh" / "consent.duckdb"), first, "--buckets", "2") == 0
    assert [b for b, _ in bucket_calls] == [0, 1]
    assert run(exports, str(tmp_path / "wh" / "consent.duckdb"), first, "--buckets", "0") == 2
    assert "--buckets must be at least 1" in capsys.readouterr().err


def fanned_out(tmp_path: Path, monkeypatch, postgres_service, *, all_runs: bool) -> tuple[list[dict], list, dict]:
    """`--buckets 3 --workers 2` on DuckLake + PostgreSQL, with a DAGSTER_HOME to read the runs back.
    The first night fans out however few contacts it touches; with `all_runs`, then a second night
    left the default threshold (its few contacts are under it) and a full run (which always fans
    out). What the decided tables held after each run, the nights' Dagster runs, and per bucket run
    the process that decided each bucket."""
    import dagster as dg

    from consent.run import publish as publish_module

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CONSENT_BUCKETS", str(BUCKETS))
    lake = "ducklake:postgres:" + postgres_service.dsn(postgres_service.create_database())
    extra = ("--data-path", str(tmp_path / "lake_data"), "--workers", "2")
    exports = tmp_path / "exports"
    first, second = nights(exports)
    threshold = publish_module.FAN_OUT_CONTACTS
    monkeypatch.setattr(publish_module, "FAN_OUT_CONTACTS", 0)
    assert run(exports, lake, first, *extra) == 0
    after = [decided(lake)]
    if all_runs:
        monkeypatch.setattr(publish_module, "FAN_OUT_CONTACTS", threshold)
        second_night(exports)
        assert run(exports, lake, second, *extra) == 0
        after.append(decided(lake))
        assert run(exports, lake, second, "--full", *extra) == 0
        after.append(decided(lake))
    with dg.DagsterInstance.get() as instance:
        night_runs = instance.get_runs(dg.RunsFilter(job_name="consent_job"))[::-1]  # oldest first
        bucket_runs = instance.get_runs(dg.RunsFilter(job_name="decide_buckets_job"))
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in night_runs + bucket_runs)
        records = instance.fetch_materializations(dg.AssetKey("consent_status_bucket"), limit=100).records
    parents = {r.run_id: r.tags["consent/parent_run"] for r in bucket_runs}
    processes: dict[str, dict[str, int]] = {parent: {} for parent in parents.values()}
    for record in records:
        processes[parents[record.run_id]][record.asset_materialization.partition] = \
            record.asset_materialization.metadata["process"].value
    return after, night_runs, processes


def each_bucket_in_a_process_of_its_own(decided_by: dict[str, int]) -> bool:
    import os

    return (sorted(decided_by) == [str(b) for b in range(BUCKETS)] and len(set(decided_by.values())) == BUCKETS
            and os.getpid() not in decided_by.values())


def test_a_nights_buckets_are_decided_by_dagster_each_in_a_process_of_its_own_on_ducklake(
        at_once, salted, tmp_path, monkeypatch, postgres_service):
    """`--buckets 3 --workers 2` on DuckLake + PostgreSQL: the night's buckets are decided by
    `decide_buckets_job` on Dagster's multiprocess executor, each bucket in a process of its own (not
    the night's), between the night's first and last transaction: the same tables and marts as one
    transaction, and each bucket a materialised partition of `consent_status_bucket`."""
    after, night_runs, processes = fanned_out(tmp_path, monkeypatch, postgres_service, all_runs=False)
    assert list(processes) == [night_runs[0].run_id]
    for table in after[0]:
        assert after[0][table] == at_once[0][table], table
    assert each_bucket_in_a_process_of_its_own(processes[night_runs[0].run_id])


@pytest.mark.slow  # `make test-slow`: two nights and a full run (60 s here)
def test_buckets_decided_by_dagster_night_after_night_and_on_a_full_run_give_the_same_tables(
        at_once, salted, tmp_path, monkeypatch, postgres_service):
    """The same over two nights and a full run; the second night, touching few contacts, decides its
    buckets in its own process (a process's start-up would cost more): the same tables again."""
    after, night_runs, processes = fanned_out(tmp_path, monkeypatch, postgres_service, all_runs=True)
    assert len(night_runs) == 3 and set(processes) == {night_runs[0].run_id, night_runs[2].run_id}
    for night, (expected, got) in enumerate(zip(at_once, after)):
        assert set(got) == set(expected)
        for table in got:
            assert got[table] == expected[table], (night, table)
    assert all(each_bucket_in_a_process_of_its_own(decided_by) for decided_by in processes.values())


def test_the_bucket_job_launched_without_a_night_waiting_refuses(salted, tmp_path, monkeypatch):
    """Launched by hand (the UI's launchpad) when no night published its ledger and waits for its
    buckets, the job decides nothing and says why."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from resources.warehouse import resources_from_env

    location = str(tmp_path / "wh" / "consent.duckdb")
    exports = tmp_path / "exports"
    first, _ = nights(exports)
    assert run(exports, location, first) == 0
    defs = build_definitions(resources_from_env({"warehouse": {"path": location},
                                                 "settings": {"exports_dir": str(exports), "buckets": 2}}))
    result = defs.resolve_job_def("decide_buckets_job").execute_in_process(
        raise_on_error=False,
        run_config={"ops": {f"bucket_{b}": {"config": {"bucket": b, "buckets": 2, "full": False}} for b in range(2)}})
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures
    error = failures[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    assert error.cls_name == "FanOutError" and "no night is waiting for its buckets to be decided" in error.message


def test_a_bucket_that_keeps_conflicting_fails_the_run_and_the_next_run_decides_every_contact(
        at_once, salted, tmp_path, monkeypatch, capsys):
    """The cost of deciding by bucket: a run stopped after its first transaction fails loudly (its
    row of `runs` says failed) with the STOP of its night in the ledger and a bucket undecided; the
    next run, an ordinary one that finds nothing new, decides every contact again."""
    exports, location = tmp_path / "exports", str(tmp_path / "wh" / "consent.duckdb")
    first, second = nights(exports)
    monkeypatch.setenv("CONSENT_BUCKETS", str(BUCKETS))
    assert run(exports, location, first) == 0
    second_night(exports)
    real = buckets_module.decide_bucket

    stopped = bucket_of(min(OTHER, USER), BUCKETS)  # a person's bucket is its smallest identifier's

    def conflicting(con, bucket, decide, *, full):
        if bucket == stopped:
            raise TransactionConflict(f"deciding bucket {bucket}: still meeting a write conflict after 5 tries")
        return real(con, bucket, decide, full=full)

    monkeypatch.setattr(buckets_module, "decide_bucket", conflicting)
    assert run(exports, location, second) == 1
    assert f"deciding bucket {stopped}: still meeting a write conflict" in capsys.readouterr().err
    with Warehouse(path=location).reader() as con:
        assert con.execute("SELECT status FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0] == "failed"
    # the bucket that failed holds the person whose STOP the night brought: its opt-out is not applied
    assert decided(location)["status"][(OTHER, "marketing")] != at_once[2]["status"][(OTHER, "marketing")]
    monkeypatch.setattr(buckets_module, "decide_bucket", real)
    assert run(exports, location, second) == 0
    with Warehouse(path=location).reader() as con:
        assert con.execute("SELECT new_events FROM runs ORDER BY started_at DESC LIMIT 1").fetchone() == (0,)
    repaired = decided(location)
    for table in DECIDED:
        assert repaired[table] == at_once[2][table], table
