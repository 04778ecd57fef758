"""Finalising a run, inside the run: whatever launched it, the warehouse ends the same.

`WarehouseResource` calls `finalise_run` when the run's last step is done
(its teardown, before the run lock is released), so `consent run`, the
schedule, the new-file sensor, the UI and `dagster job execute` all finish
the same way:

1. the data-quality report of the run's suites is written
   (`<warehouse folder>/data_docs/<run id>/`), and the index of every run's
   report beside it (`data_docs/index.html`);
2. the check outcomes and failed steps of the run are read from the Dagster
   instance's event log;
3. `runs` records the end (`succeeded`, or `failed` when a step failed or an
   ERROR check failed), the failed checks with their lineage metadata, and
   the reason of a failed step;
4. the dashboard's "last run" tile and panel are refreshed to show this run's
   outcome (the dashboard asset runs before the last checks; its charts are
   not rendered again);
5. the read copy (`<name>.read.duckdb`) is replaced by the warehouse as this
   run committed it, atomically: readers open the copy, so no reader holds
   the file a run writes, and none sees half a night;
6. a failed run raises its alert (`<warehouse folder>/alerts/`, and the hook).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, ContextManager

import dagster as dg
import duckdb

from consent.reading.ingest import mask_numbers
from consent.storage.faults import is_disk_full
from consent.run.alerts import failed_checks, is_failed_error, raise_alert

log = logging.getLogger(__name__)


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One line per failed step: the step and the root error's last line (no traceback)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    lines = []
    for record in records:
        event = record.event_log_entry.dagster_event
        line = f"step {event.step_key} failed: {root_message(event.event_specific_data.error)}"
        if line not in lines:
            lines.append(line)
    return lines


def root_message(error) -> str:
    """The innermost error's first line (what went wrong; DuckDB's errors end with advice and a
    link), without its exception class, and without any number in it (an error's text may quote a
    row; runs, alerts and the CLI never show a phone number)."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    line = error.message.strip().splitlines()[0] if error.message and error.message.strip() else "unknown error"
    return mask_numbers(re.sub(r"^[\w.]+(Error|Exception|Locked): ", "", line))


def _disk_full_or_warn(exc: Exception, what: str) -> list[str]:
    """A full disk fails the run (one reason line); any other error of the pages is a warning."""
    if is_disk_full(exc):
        return [f"{what} not written: no space left on device"]
    log.warning("%s not written: %s", what, type(exc).__name__)
    return []


def outcomes_of(evaluations: list) -> dict:
    """Every check's outcome; a failed one keeps its metadata (counts and lineage, never numbers)."""
    outcomes = {}
    for e in evaluations:
        outcome = {"passed": e.passed, "severity": e.severity.value}
        if not e.passed:
            outcome["metadata"] = {k: v.value for k, v in e.metadata.items()}
        outcomes[f"{e.asset_key.to_user_string()}.{e.check_name}"] = outcome
    return outcomes


def finalise_run(
    connect: Callable[[], ContextManager[duckdb.DuckDBPyConnection]],
    warehouse_path: str,
    instance: dg.DagsterInstance,
    run_id: str,
    alert_command: str | None,
    publish_read_copy: Callable[[], object] | None = None,
) -> dict:
    """Record the run's end in `runs`, refresh the dashboard and the read copy, alert on failure; the run summary."""
    from consent.reports.dashboard import refresh_last_run
    from consent.run.runs import already_finished, finish_run, run_summary
    from expectations.runner import docs_folder, write_docs

    failures = step_failures(instance, run_id)
    try:
        write_docs(docs_folder(warehouse_path, run_id))
    except Exception as exc:  # the run's record and its alert matter more than the pages
        failures += _disk_full_or_warn(exc, "data docs")
    evaluations = check_evaluations(instance, run_id)
    failed_errors = [e.check_name for e in evaluations if is_failed_error(e)]
    status = "failed" if failures or failed_errors else "succeeded"
    with connect() as con:
        if already_finished(con, run_id):
            # Once per run: `dagster job execute` sets the resources up again after the run ends
            # (to load outputs); that second teardown must not record or alert twice.
            return run_summary(con, run_id)
        ended = {"check_outcomes": outcomes_of(evaluations)}
        finish_run(con, run_id, status=status, checks_failed=failed_errors or (["run failed"] if failures else []),
                   failure_reason="; ".join(failures) or None, **ended)
        dashboard = Path(warehouse_path).resolve().parent / "dashboard.html"
        if dashboard.exists():
            try:
                refresh_last_run(con, dashboard)
            except Exception as exc:  # the run's record and its alert matter more than the page
                full = _disk_full_or_warn(exc, "dashboard")
                if full:  # recorded again, as failed: the page shows an older night
                    failures, status = failures + full, "failed"
                    finish_run(con, run_id, status=status, checks_failed=failed_errors or ["run failed"],
                               failure_reason="; ".join(failures), **ended)
        summary = run_summary(con, run_id)
    if publish_read_copy is not None:
        _publish(publish_read_copy, summary)
    if status == "failed":
        summary.update(status="failed", failed_checks=failed_checks(evaluations))
        if failures:
            summary["reason"] = "; ".join(failures)
        summary["alert"] = str(raise_alert(summary, warehouse_path, alert_command))
    return summary


def _publish(publish_read_copy: Callable[[], object], summary: dict) -> None:
    """Replace the read copy; a copy that cannot be written leaves the run's record as it is (readers
    then find the copy older than the warehouse and make it themselves, or read the warehouse)."""
    try:
        publish_read_copy()
    except Exception as exc:
        log.warning("read copy not replaced: %s", root_message_of(exc))
        summary["read_copy_error"] = root_message_of(exc)


def root_message_of(exc: BaseException) -> str:
    return mask_numbers(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
