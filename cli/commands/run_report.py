"""What `consent run` prints once the job has ended: the run's summary, failed checks, where
the dashboard and Data Docs are, and one line for a run that failed (a full disk, a lock, a key)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_OK, _stderr, _table
from consent.run.alerts import raise_alert
from consent.storage.access import WarehouseAccess, WarehouseKeyError, WarehouseLocked
from consent.storage.migrations import WarehouseOutdated


def _report(warehouse: WarehouseAccess, result, where: str = "") -> int:
    summary = _recorded(warehouse, result.run_id)
    disk_full = _report_disk_full(warehouse, result, summary)
    if disk_full is not None:
        return disk_full
    if not summary.get("finished"):
        return _report_unfinished(warehouse, result, summary)
    for reason in filter(None, (summary.get("failure_reason") or "").split("; ")):
        print(f"consent run: {reason}", file=sys.stderr)
    if summary["published"]:
        _print_summary(warehouse, result.run_id)
    dashboard = Path(warehouse.file).resolve().parent / "dashboard.html"
    if dashboard.exists():
        print(f"dashboard: {dashboard}")
    _print_checks(summary["check_outcomes"])
    from expectations.runner import docs_folder

    docs = docs_folder(warehouse.file, result.run_id) / "index.html"
    if docs.exists():
        print(f"data docs: {docs}")
    if where:
        print(where)
    if summary["status"] != "failed":
        print("run succeeded")
        return EXIT_OK
    for alert in sorted((Path(warehouse.file).resolve().parent / "alerts").glob(f"*-{result.run_id[:8]}*.json")):
        print(f"alert written to {alert}")
    if summary.get("failure_reason"):
        print("run FAILED: a step failed; nothing of this run was published past that step.")
    else:
        print("run FAILED: an ERROR check failed; opt-outs of this run are published, "
              "opt-ins without evidence are not opted in.")
    return EXIT_FAILED


def _report_disk_full(warehouse: WarehouseAccess, result, summary: dict) -> int | None:
    """A full disk ends the run in one line: where it struck, and the alert (or why there is none).
    None when the disk was not full. Each step commits or rolls back whole, so the warehouse holds
    what the last commit wrote."""
    from consent.storage.faults import is_disk_full

    reasons = [r for r in (summary.get("failure_reason") or "").split("; ") if r] + _failure_messages(result)
    full = [r for r in reasons if is_disk_full(r)]
    if not full and not is_disk_full(summary.get("warehouse_error") or ""):
        return None
    places = [re.split(r" (?:failed|not written): ", r)[0] for r in full if re.search(r" (?:failed|not written): ", r)]
    where = ", ".join(dict.fromkeys(places)) or "finishing the run"
    run_id = result.run_id
    alerts = sorted((Path(warehouse.file).resolve().parent / "alerts").glob(f"*-{run_id[:8]}*.json"))
    if alerts:
        said = f"alert written to {alerts[-1]}"
    else:
        summary.update(run_id=run_id, status="failed", reason="; ".join(full or reasons))
        try:
            said = f"alert written to {raise_alert(summary, warehouse.file, warehouse.alert)}"
        except OSError as exc:
            said = f"the alert could not be written either ({exc.strerror or exc})"
    _stderr(f"consent run: FAILED, the disk is full ({where}); nothing past the last commit was written; {said}")
    return EXIT_FAILED


def _recorded(warehouse: WarehouseAccess, run_id: str) -> dict:
    from consent.run.runs import run_summary

    try:
        with warehouse.reader() as con:
            return run_summary(con, run_id)
    except (FileNotFoundError, WarehouseLocked, WarehouseKeyError, WarehouseOutdated) as exc:
        return {"run_id": run_id, "published": False, "warehouse_error": str(exc)}


def _report_unfinished(warehouse: WarehouseAccess, result, summary: dict) -> int:
    """The run died before it could record its end (lock, key, schema): say why and alert from here."""
    reasons = _failure_messages(result)
    for reason in reasons:
        print(f"consent run: {reason}", file=sys.stderr)
    summary.update(status="failed", reason="; ".join(reasons))
    alert = raise_alert(summary, warehouse.file, warehouse.alert)
    print(f"consent run: alert written to {alert}", file=sys.stderr)
    return EXIT_FAILED


def _print_checks(outcomes: dict) -> None:
    """Failed checks as the run recorded them: errors, then warnings, with failing rows' lineage."""
    failed = [(key, o) for key, o in outcomes.items() if not o["passed"]]
    for label, severity in (("FAILED (error)", "ERROR"), ("warning", "WARN")):
        for key, outcome in failed:
            if outcome["severity"] != severity:
                continue
            print(f"check {label}: {key}")
            for name, value in (outcome.get("metadata") or {}).items():
                if name.startswith(("error:", "warn:")) or name in ("violations", "files_not_conserved", "notices_refused"):
                    print(f"    {name}: {_short(value)}")


def _failure_messages(result) -> list[str]:
    """One line per error of a failed run (step failures, resource set-up failures), deduplicated."""
    from resources.finalise import root_message

    messages: list[str] = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None:
            continue
        where = f"step {event.step_key} failed: " if event.step_key else ""
        message = where + root_message(error)
        if message not in messages:
            messages.append(message)
    return messages or ["run failed"]


def _short(value, limit: int = 400) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + " ..."


def _print_summary(warehouse: WarehouseAccess, run_id: str) -> None:
    with warehouse.reader() as con:
        _print_run(con, run_id)


def _print_run(con, run_id: str) -> None:
    row = con.execute(
        "SELECT mode, as_of, per_channel, new_events, contacts_reconciled FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    mode, as_of, per_channel, new_events, contacts = row
    per_channel = json.loads(per_channel)
    print(f"run {run_id[:8]} ({mode}, as of {as_of} UTC)")
    header = ("channel", "files", "read", "rows read", "events", "new", "quarantined", "skipped")
    lines = [header]
    for channel, c in per_channel.items():
        lines.append((channel, c.get("files_seen", 0), c.get("files_read", 0), c.get("rows_read") or 0,
                      c.get("events") or 0, c.get("new_events", 0), c.get("quarantined") or 0, c.get("skipped") or 0))
    totals = ["total"] + [sum(int(l[i]) for l in lines[1:]) for i in range(1, len(header))]
    lines.append(tuple(totals))
    print(_table(lines))
    print(f"new events: {new_events}; contacts reconciled: {contacts}")
    for channel, source_file, notes in con.execute(
        "SELECT channel, source_file, notes FROM staging.stg_source_files WHERE len(notes) > 0 ORDER BY ALL"
    ).fetchall():
        for note in notes:
            print(f"note: {source_file}: {note}")
    for (ignored,) in con.execute("SELECT unnest(ignored) FROM staging.stg_run").fetchall():
        print(f"note: ignored {ignored}")
    statuses = con.execute(
        "SELECT business, purpose, status, count(*) FROM consent_status GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    if statuses:
        print("consent status (all contacts, per business):")
        print(_table([("business", "purpose", "status", "contacts"), *statuses]))

