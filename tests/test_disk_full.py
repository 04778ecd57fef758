"""A full disk ends a run in one line and the alert; the warehouse keeps what its last commit wrote.

No disk is filled: the writer of one step (or the data-quality report's) raises what a full disk raises,
OSError errno 28 or DuckDB's IOException."""

from __future__ import annotations

import errno
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cli.main import main
from tests.conftest import query, run_cli

# The run's progress ("stg_consent_events: reading files: 5/5 (183/s), 0.4 s", "published_warehouse:
# FAILED in 0.2 s", "run: 3 steps in 1.9 s") and the unencrypted warning are no failure report.
PROGRESS = re.compile(r"^[\w .]+: .*(, | in )(\d+ min \d\d s|[\d.]+ s)(, about .+ left)?$")
NEW_OPT_OUT = "+4915112340077"


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if not PROGRESS.match(line) and "CONSENT_WAREHOUSE_KEY is not set" not in line]


def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def duckdb_full(*args, **kwargs):
    raise duckdb.IOException('IO Error: Could not write file "consent.duckdb.wal": No space left on device')


def state(warehouse: Path) -> dict:
    """The published ledger and statuses, and the files registered."""
    return {
        "events": query(warehouse, "SELECT event_id FROM consent_events ORDER BY ALL"),
        "status": query(warehouse, "SELECT business, contact_id, purpose, status FROM consent_status ORDER BY ALL"),
        "files": query(warehouse, "SELECT source_file, file_hash FROM source_files ORDER BY ALL"),
    }


@pytest.fixture
def night(exports: Path, after_first_run: Path) -> tuple[Path, Path, dict]:
    """A warehouse after one night, and a new export with an opt-out for the next night."""
    warehouse = after_first_run
    (exports / "preference_center" / "optouts_2026-11-11.csv").write_text(
        f"phone,country,event_type,purposes,occurred_at\n{NEW_OPT_OUT},,opt_out,marketing,2026-11-11T07:00:00Z\n")
    return exports, warehouse, state(warehouse)


def alerts(warehouse: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((warehouse.parent / "alerts").glob("*.json"))]


def patch_docs_store(monkeypatch):
    monkeypatch.setattr("expectations.report._write", full)


@pytest.mark.parametrize("step, patch, where, published", [
    ("staging", lambda mp: mp.setattr("consent.run.staging.append_staging", full), "step stg_consent_events", False),
    ("publish", lambda mp: mp.setattr("consent.run.publish.record_run", duckdb_full), "step published_warehouse", False),
    ("marts", lambda mp: mp.setattr("consent.marts.build", duckdb_full), "step compliance_marts", True),
    ("dashboard", lambda mp: mp.setattr("consent.reports.dashboard.render_dashboard", full), "step compliance_dashboard", True),
    ("data docs", patch_docs_store, "data docs", True),
])
def test_a_full_disk_ends_the_run_in_one_line_with_the_alert_and_the_last_commit_kept(
        night, monkeypatch, capsys, step, patch, where, published):
    exports, warehouse, before = night
    capsys.readouterr()
    patch(monkeypatch)
    assert run_cli(exports, warehouse, as_of="2026-11-12T00:00:00Z") == 1
    captured = capsys.readouterr()
    lines = failure_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"consent run: FAILED, the disk is full ({where})")
    (alert,) = alerts(warehouse)
    assert alert["status"] == "failed" and "no space left on device" in alert["reason"].lower()
    assert f"alert written to {warehouse.parent.resolve() / 'alerts'}" in lines[0]
    assert captured.out == ""  # no summary, no traceback
    after = state(warehouse)
    if published:  # the night's opt-out was committed before the disk filled: it stays published
        assert (NEW_OPT_OUT, "marketing", "opted_out") in [(c, p, s) for _, c, p, s in after["status"]]
    else:
        assert after == before
    assert query(warehouse, "SELECT status FROM runs ORDER BY started_at DESC LIMIT 1") == [("failed",)]
    # The next night, with room again, publishes everything.
    monkeypatch.undo()
    assert run_cli(exports, warehouse, as_of="2026-11-13T00:00:00Z") == 0
    assert ("default", NEW_OPT_OUT, "marketing", "opted_out") in state(warehouse)["status"]


def test_when_the_alert_cannot_be_written_either_the_one_line_says_so(night, monkeypatch, capsys):
    exports, warehouse, before = night
    capsys.readouterr()
    write_text = Path.write_text

    def no_room_for_alerts(self, *args, **kwargs):
        if self.parent.name == "alerts":
            full()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr("consent.run.staging.append_staging", full)
    monkeypatch.setattr(Path, "write_text", no_room_for_alerts)
    assert run_cli(exports, warehouse, as_of="2026-11-12T00:00:00Z") == 1
    lines = failure_lines(capsys.readouterr().err)
    assert lines == ["consent run: FAILED, the disk is full (step stg_consent_events); nothing past the last commit "
                     "was written; the alert could not be written either (No space left on device)"]
    assert not list((warehouse.parent / "alerts").glob("*.json"))  # no empty alert file left behind
    assert state(warehouse) == before


def test_a_full_disk_when_the_run_records_its_end_still_alerts_in_one_line(night, monkeypatch, capsys):
    exports, warehouse, before = night
    capsys.readouterr()
    monkeypatch.setattr("consent.run.staging.append_staging", full)
    monkeypatch.setattr("consent.run.runs.finish_run", duckdb_full)
    assert run_cli(exports, warehouse, as_of="2026-11-12T00:00:00Z") == 1
    lines = failure_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("consent run: FAILED, the disk is full (step stg_consent_events")
    (alert,) = alerts(warehouse)
    assert alert["status"] == "failed"
    assert state(warehouse) == before


def test_other_failures_are_reported_as_before(night, monkeypatch, capsys):
    exports, warehouse, _ = night
    capsys.readouterr()

    def broken(*args, **kwargs):
        raise RuntimeError("something else broke")

    monkeypatch.setattr("consent.run.staging.append_staging", broken)
    assert run_cli(exports, warehouse, as_of="2026-11-12T00:00:00Z") == 1
    captured = capsys.readouterr()
    assert "disk is full" not in captured.err
    assert "consent run: step stg_consent_events failed: something else broke" in captured.err
    assert "run FAILED: a step failed" in captured.out


def test_gx_records_of_other_errors_still_reach_the_log():
    from expectations.runner import _QuietDiskFull

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root, keep = logging.getLogger(), Keep()
    root.addHandler(keep)
    try:
        for message in ("a page failed: bad template", "a page failed: OSError: [Errno 28] No space left on device"):
            _QuietDiskFull().handle(logging.LogRecord("great_expectations.render", logging.ERROR, __file__, 1, message, None, None))
    finally:
        root.removeHandler(keep)
    assert seen == ["a page failed: bad template"]


# What the operator sees, in a process of its own (pytest attaches its own log handlers to GX's loggers).
FULL_DOCS_STORE = """
import errno, sys
from expectations import report

def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

report._write = full
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_under_the_data_docs_prints_one_line_and_no_traceback(night):
    exports, warehouse, _ = night
    done = subprocess.run(
        [sys.executable, "-c", FULL_DOCS_STORE, "run", "--exports", str(exports), "--warehouse", str(warehouse),
         "--as-of", "2026-11-12T00:00:00Z"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = failure_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("consent run: FAILED, the disk is full (data docs)"), done.stderr
    assert "Traceback" not in done.stderr and "alert written to" in lines[0]
    assert done.stdout == ""
    (alert,) = alerts(warehouse)
    assert alert["status"] == "failed"
