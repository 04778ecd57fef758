"""Growth: contacts decided on two cores give what one core gives; workers import only the domain."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb

from consent.migrations import ensure_schema
from consent.policy import load_channels, load_policy
from consent.warehouse import publish, stage_run

REPO = Path(__file__).resolve().parent.parent
AS_OF = datetime(2026, 11, 26)


def _warehouse(exports: Path, path: Path, workers: int) -> dict:
    con = duckdb.connect(str(path))
    ensure_schema(con)

    @contextmanager
    def connect():
        yield con

    policy = load_policy(exports / "policy.yaml")
    stage_run(connect, exports, policy=policy, channels=load_channels(exports), as_of=AS_OF, run_id="r1")
    summary = publish(con, policy=policy, salt="s", workers=workers)
    tables = {
        name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
        for name in ("consent_status", "consent_status_history", "consent_violations")
    }
    con.close()
    return {"contacts": summary["contacts_reconciled"], **tables}


def test_ranges_decided_in_worker_processes_equal_one_process(tmp_path, monkeypatch):
    import consent.warehouse as warehouse

    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", "3000", "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL)
    monkeypatch.setattr(warehouse, "RECONCILE_RANGE_EVENTS", 400)  # many ranges, so the pool has work
    one = _warehouse(exports, tmp_path / "one.duckdb", workers=1)
    two = _warehouse(exports, tmp_path / "two.duckdb", workers=2)
    assert one["contacts"] > 100 and len(one["consent_status"]) > 200
    assert one == two


def test_the_publishing_transaction_does_not_hold_the_frames_it_has_written(tmp_path, monkeypatch):
    """Each range's decided rows are let go once written, not kept until the commit (DuckDB keeps a
    view dropped inside a transaction, and its frame, until then: +2.3 GB at 5M events)."""
    import gc
    import weakref

    import consent.warehouse as warehouse

    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", "2000", "--seed", "5"],
                   check=True, stdout=subprocess.DEVNULL)
    monkeypatch.setattr(warehouse, "RECONCILE_RANGE_EVENTS", 300)
    written, held = [], []
    write = warehouse.write_frame

    def recording_write(con, table, frame, **kwargs):
        arrow = frame.to_arrow()  # the copy DuckDB scans (of a Polars frame it makes its own)
        write(con, table, arrow, **kwargs)
        written.append(weakref.ref(arrow))

    def crash_point(name):
        if name == "publish_after_status":  # every range written, the transaction still open
            gc.collect()
            held.extend(ref for ref in written if ref() is not None)

    monkeypatch.setattr(warehouse, "write_frame", recording_write)
    monkeypatch.setattr(warehouse, "crash_point", crash_point)
    _warehouse(exports, tmp_path / "w.duckdb", workers=1)
    assert len(written) > 15  # many ranges, three tables each
    assert held == []


def test_reconciliation_workers_import_only_the_domain():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, consent.reconcile; "
         "print(sorted(m for m in ('dagster', 'great_expectations', 'pipelines', 'assets') if m in sys.modules))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert done.stdout.strip() == "[]"


def test_read_commands_do_not_import_dagster_or_great_expectations(tmp_path):
    """`consent sql`, `export`, `audit`, `runs` start without Dagster and GX (start-up, issue 16)."""
    warehouse = tmp_path / "w.duckdb"
    con = duckdb.connect(str(warehouse))
    ensure_schema(con)
    con.close()
    script = (
        "import sys\nfrom pipelines.cli import main\n"
        "for argv in (['sql', 'SELECT count(*) FROM consent_status'], ['runs'], ['audit', 'violations'],"
        " ['export', '--suppression']):\n"
        f"    assert main([*argv, '--warehouse', {str(warehouse)!r}]) == 0, argv\n"
        "print(sorted(m for m in ('dagster', 'great_expectations') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_pipeline_imports_great_expectations_only_to_validate_rows():
    """Start-up (issue 16): loading the definitions, and a night whose suites have no rows, never
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
