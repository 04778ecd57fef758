"""Growth: contacts decided on two cores give what one core gives; workers import only the domain."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from consent.storage.migrations import ensure_schema
from consent.domain.policy import load_channels, load_policy
from consent.run.publish import publish
from consent.run.staging import stage_run
from consent.storage.sql import use_salt

REPO = Path(__file__).resolve().parent.parent
AS_OF = datetime(2026, 11, 26)


LEDGER_TABLES = ("consent_events", "quarantine", "skipped_items", "message_statuses", "identifier_links",
                 "source_files")


def _warehouse(exports: Path, path: Path, workers: int, ledger: bool = False) -> dict:
    con = duckdb.connect(str(path))
    ensure_schema(con)

    @contextmanager
    def connect():
        yield con

    policy = load_policy(exports / "policy.yaml")
    use_salt(con, "s")  # what the warehouse's door does at connect
    stage_run(connect, exports, policy=policy, channels=load_channels(exports), as_of=AS_OF, run_id="r1")
    summary = publish(con, policy=policy, workers=workers)
    names = ("consent_status", "consent_status_history", "consent_violations") + (LEDGER_TABLES if ledger else ())
    tables = {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in names}
    con.close()
    return {"contacts": summary["contacts_reconciled"], **tables}


def test_ranges_decided_in_worker_processes_equal_one_process(tmp_path, monkeypatch):
    import consent.run.decide as decide

    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", "3000", "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL)
    monkeypatch.setattr(decide, "RECONCILE_RANGE_EVENTS", 400)  # many ranges, so the pool has work
    one = _warehouse(exports, tmp_path / "one.duckdb", workers=1)
    two = _warehouse(exports, tmp_path / "two.duckdb", workers=2)
    assert one["contacts"] > 100 and len(one["consent_status"]) > 200
    assert one == two


def _generated(tmp_path: Path, events: int, seed: int) -> Path:
    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", str(events),
                    "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    return exports


def _in_small_parts(monkeypatch) -> list[str]:
    """Every file read in parts of a few rows, and built rows written a few at a time; the files
    taken back out of staging are recorded in the list returned."""
    import consent.reading.ingest as ingest
    import consent.run.staging as staging
    from consent.reading.channels import csv_export, whatsapp_webhook

    monkeypatch.setattr(ingest, "STREAM_BYTES", 0)
    monkeypatch.setattr(csv_export, "PART_CHARS", 3000)
    monkeypatch.setattr(whatsapp_webhook, "PART_PAYLOADS", 7)
    monkeypatch.setattr(ingest, "FLUSH_ROWS", 40)
    retracted: list[str] = []
    retract = staging.retract_staging

    def recording_retract(con, source_file):
        retracted.append(source_file)
        retract(con, source_file)

    monkeypatch.setattr(staging, "retract_staging", recording_retract)
    return retracted


def _quoted_copy(source: Path, target: Path, rows: int) -> None:
    """The first rows of a CSV export with every cell quoted (read by the csv module, not Polars)."""
    import csv

    with source.open(newline="") as handle:
        records = [r for _, r in zip(range(rows + 1), csv.reader(handle))]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(records)


def test_files_read_in_parts_and_written_as_built_equal_whole_reads(tmp_path, monkeypatch):
    """Memory holds one part of a large file: read, built and written part by part, the ledger,
    quarantine, file counts and statuses are what reading every file whole gives. A JSON array
    found malformed at its end is taken back out of staging and read whole."""
    exports = _generated(tmp_path, 3000, 11)
    _quoted_copy(exports / "web_form" / "web_form_export.csv", exports / "in_app" / "quoted.csv", 300)
    batch = exports / "whatsapp" / "webhooks_batch.json"
    batch.write_bytes(batch.read_bytes().rstrip()[:-1])  # the array's closing bracket lost
    whole = _warehouse(exports, tmp_path / "whole.duckdb", workers=1, ledger=True)
    retracted = _in_small_parts(monkeypatch)
    parts = _warehouse(exports, tmp_path / "parts.duckdb", workers=1, ledger=True)
    assert retracted == ["whatsapp/webhooks_batch.json"]
    assert len(whole["consent_events"]) > 2500 and whole["quarantine"]
    assert parts == whole


def test_a_file_failing_in_a_late_part_is_quarantined_whole_and_nothing_of_it_kept(tmp_path, monkeypatch):
    """Parts written before the failure are taken back out of staging: the file is one refusal."""
    import consent.reading.ingest as ingest

    exports = _generated(tmp_path, 1500, 12)
    retracted = _in_small_parts(monkeypatch)
    real, seen = ingest.build_file, []

    def build_file(read, ctx, *args):
        if ctx.source_file == "web_form/web_form_export.csv":
            seen.append(read.row_count)
            if len(seen) == 6:
                raise ValueError("an unexpected value")
        return real(read, ctx, *args)

    monkeypatch.setattr(ingest, "build_file", build_file)
    got = _warehouse(exports, tmp_path / "w.duckdb", workers=1, ledger=True)
    assert retracted == ["web_form/web_form_export.csv"]
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    rows_read, events, quarantined = con.execute(
        "SELECT rows_read, events, quarantined FROM source_files WHERE source_file = 'web_form/web_form_export.csv'"
    ).fetchone()
    kept = con.execute("SELECT count(*) FROM consent_events WHERE source_file = 'web_form/web_form_export.csv'").fetchone()[0]
    reasons = con.execute(
        "SELECT count(*), count(DISTINCT source_line) FROM quarantine WHERE source_file = 'web_form/web_form_export.csv'"
    ).fetchone()
    con.close()
    assert (events, kept) == (0, 0)
    assert len(seen) == 7  # six parts, the sixth failing, then the refusal of the rows read
    assert rows_read == quarantined == sum(seen[:6]) == seen[6] == reasons[0] == reasons[1]
    # The other files were read as usual.
    assert len(got["consent_events"]) > 1000


def test_the_publishing_transaction_does_not_hold_the_frames_it_has_written(tmp_path, monkeypatch):
    """Each range's decided rows are let go once written, not kept until the commit (DuckDB keeps a
    view dropped inside a transaction, and its frame, until then: +2.3 GB at 5M events)."""
    import gc
    import weakref

    import consent.run.decide as decide
    import consent.run.publish as publish_module

    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", "2000", "--seed", "5"],
                   check=True, stdout=subprocess.DEVNULL)
    monkeypatch.setattr(decide, "RECONCILE_RANGE_EVENTS", 300)
    monkeypatch.setattr("consent.run.decide_sql.SQL_DECISIONS", False)  # every contact through the ranges
    written, held = [], []
    write = decide.write_frame

    def recording_write(con, table, frame, **kwargs):
        arrow = frame.to_arrow()  # the copy DuckDB scans (of a Polars frame it makes its own)
        write(con, table, arrow, **kwargs)
        written.append(weakref.ref(arrow))

    def crash_point(name):
        if name == "publish_after_status":  # every range written, the transaction still open
            gc.collect()
            held.extend(ref for ref in written if ref() is not None)

    monkeypatch.setattr(decide, "write_frame", recording_write)
    monkeypatch.setattr(publish_module, "crash_point", crash_point)
    _warehouse(exports, tmp_path / "w.duckdb", workers=1)
    assert len(written) > 15  # many ranges, three tables each
    assert held == []


def test_reconciliation_workers_import_only_the_domain():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, consent.domain.reconcile; "
         "print(sorted(m for m in ('dagster', 'great_expectations', 'pipelines', 'assets') if m in sys.modules))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert done.stdout.strip() == "[]"


def test_read_commands_do_not_import_dagster_or_great_expectations(tmp_path):
    """`consent sql`, `export`, `audit`, `runs` start without Dagster and GX (start-up)."""
    warehouse = tmp_path / "w.duckdb"
    con = duckdb.connect(str(warehouse))
    ensure_schema(con)
    con.close()
    script = (
        "import sys\nfrom cli.main import main\n"
        "for argv in (['sql', 'SELECT count(*) FROM consent_status'], ['runs'], ['audit', 'violations'],"
        " ['export', '--suppression']):\n"
        f"    assert main([*argv, '--warehouse', {str(warehouse)!r}]) == 0, argv\n"
        "print(sorted(m for m in ('dagster', 'great_expectations') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_pipeline_imports_great_expectations_only_to_validate_rows():
    """Start-up: loading the definitions, and a night whose suites have no rows, never
    import GX; the first suite with rows does."""
    script = (
        "import sys, duckdb\nimport pipelines.definitions\n"
        "from expectations import consent_events\nfrom expectations.runner import validate\n"
        "con = duckdb.connect()\n"
        "con.execute(\"CREATE TABLE consent_events AS SELECT 'e1' AS event_id, 'opt_in' AS event_type,"
        " 'web_form' AS channel, '+4915112345678' AS phone_e164, 'organic' AS acquisition_source,"
        " 'f.csv' AS source_file, 2 AS source_line, 'r1' AS run_id\")\n"
        "empty = validate(con, consent_events.ROWS_SQL, consent_events.build_suite, 'consent_events', params={'run_id': 'r0'})\n"
        "print('great_expectations' in sys.modules, empty.success, len(empty.results))\n"
        "full = validate(con, consent_events.ROWS_SQL, consent_events.build_suite, 'consent_events', params={'run_id': 'r1'})\n"
        "print('great_expectations' in sys.modules, full.success, len(full.results))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["False True 8", "True True 8"]


def test_the_dagster_floor_runs_a_copy_of_consent_jobs_steps():
    """bench/dagster_floor.py (the nothing-new target) times consent_job's own graph with no-op
    bodies: every step, asset and check of the real job, and nothing else."""
    from pipelines.definitions import defs

    real = defs.resolve_job_def("consent_job")
    graph = real.asset_layer.asset_graph
    done = subprocess.run([sys.executable, str(REPO / "bench" / "dagster_floor.py"), "--child"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["success"] is True
    assert report["steps"] == len(real.nodes_in_topological_order)
    assert report["materialisations"] == sum(len(a.keys) for a in graph.assets_defs if a.is_executable)
    assert report["check_evaluations"] == sum(len(list(a.check_specs)) for a in graph.assets_defs if a.is_executable)


def test_duckdb_left_a_share_of_its_limit_spills_what_it_holds_and_has_its_limit_back(tmp_path):
    """While the state machine holds frames in Python, DuckDB is left a share of its memory limit
    (consent.run.decide): what it holds over that share goes to its temp directory, queries still
    read it, and the limit is back after the block, even when an error aborted the transaction."""
    from consent.storage.db import engine_memory_share, memory_limit_bytes

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("SET threads = 1")
    con.execute("SET memory_limit = '200MB'")
    con.execute("SET temp_directory = ?", [str(tmp_path / "spill")])

    def held() -> tuple[int, int]:
        """(bytes DuckDB holds in memory, bytes it spilled)"""
        return con.execute("SELECT sum(memory_usage_bytes), sum(temporary_storage_bytes) FROM duckdb_memory()").fetchone()

    full = memory_limit_bytes(con)
    con.execute("BEGIN TRANSACTION")  # as in a run: the histories are made inside its transaction
    con.execute("CREATE TEMP TABLE histories AS SELECT range AS contact, md5(range::VARCHAR) AS event_id "
                "FROM range(3000000)")
    assert held()[0] > 0.5 * full  # most of the limit holds the histories
    with engine_memory_share(con, 0.4, 0):
        memory, spilled = held()
        assert abs(memory_limit_bytes(con) - full * 0.4) < 2**20 / 10  # DuckDB prints it to 0.1 MiB
        assert memory <= 0.4 * full and spilled > 0
        # what spilled is read back: the whole table, and a range of contacts as the state machine reads one
        assert con.execute("SELECT count(*), sum(contact) FROM histories").fetchone() == (3000000, 2999999 * 3000000 // 2)
        assert con.execute("SELECT list(event_id ORDER BY contact) FROM histories WHERE contact BETWEEN 2999998 AND 2999999"
                           ).fetchone()[0] == [hashlib.md5(b"2999998").hexdigest(), hashlib.md5(b"2999999").hexdigest()]
    assert memory_limit_bytes(con) == full

    with pytest.raises(duckdb.Error, match="no such contact"):
        with engine_memory_share(con, 0.4, 0):
            con.execute("SELECT error('no such contact')")  # aborts the transaction
    with con.cursor() as other:  # the aborted transaction can read nothing until its ROLLBACK
        assert memory_limit_bytes(other) == full
    con.execute("ROLLBACK")
    assert memory_limit_bytes(con) == full
    # A floor above the share, and a share of a limit already at the floor, keep it there
    with engine_memory_share(con, 0.1, 150 * 2**20):
        assert memory_limit_bytes(con) == 150 * 2**20
    with engine_memory_share(con, 0.4, 2 * full):
        assert memory_limit_bytes(con) == full
    con.close()
