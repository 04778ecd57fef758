"""The `runs` table: how each run ended, and its summary for alerts and the CLI.

`publish` writes a run's row with status `published`. `finish_run` records
how the run ended (`succeeded` or `failed`, the checks that failed with their
outcomes, the reason of a failed step); it is called once per run by the run
itself (resources/finalise.py), whatever launched it. A run that failed
before publishing gets a row too, so `consent runs` shows every night.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb

from consent.storage.db import table_exists, upsert


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def finish_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    status: str,
    checks_failed: list[str],
    check_outcomes: dict,
    failure_reason: str | None = None,
) -> None:
    """Record how the run ended (insert its row if it failed before publishing)."""
    ended = {
        "finished_at": _now(), "status": status, "checks_failed": checks_failed,
        "check_outcomes": json.dumps(check_outcomes, default=str), "failure_reason": failure_reason,
    }
    if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
        assignments = ", ".join(f"{column} = ${column}" for column in ended)
        con.execute(f"UPDATE runs SET {assignments} WHERE run_id = $run_id", {**ended, "run_id": run_id})
        return
    staged = _staged(con, run_id)
    upsert(con, "runs", {
        "run_id": run_id, "mode": staged.get("mode", "unknown"), "as_of": staged.get("as_of", ended["finished_at"]),
        "started_at": staged.get("started_at", ended["finished_at"]), **ended,
    })


def start_run(con: duckdb.DuckDBPyConnection, run_id: str, *, mode: str, as_of: datetime) -> None:
    """The row of a run that publishes nothing (an audience check): `finish_run` completes it."""
    upsert(con, "runs", {"run_id": run_id, "mode": mode, "as_of": as_of, "started_at": _now(), "status": "started",
                         "checks_failed": []})


def already_finished(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM runs WHERE run_id = ? AND finished_at IS NOT NULL", [run_id]).fetchone()[0])


def _staged(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """What staging recorded of this run, if it got that far."""
    if not table_exists(con, "staging.stg_run"):
        return {}
    row = con.execute("SELECT mode, as_of, started_at FROM staging.stg_run WHERE run_id = ?", [run_id]).fetchone()
    return dict(zip(("mode", "as_of", "started_at"), row)) if row else {}


SUMMARY_COLUMNS = (
    "run_id", "mode", "as_of", "status", "files_seen", "files_read", "rows_read", "events", "new_events",
    "quarantined", "skipped", "contacts_reconciled", "checks_failed", "check_outcomes", "per_channel",
    "step_seconds", "published_at", "finished_at", "failure_reason",
)


def run_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The run's row of `runs` with its file notes: counts and names only, no phone numbers."""
    row = con.execute(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        return {"run_id": run_id, "status": "failed", "published": False}
    summary = dict(zip(SUMMARY_COLUMNS, row))
    summary["as_of"] = str(summary["as_of"])
    for key in ("per_channel", "step_seconds", "check_outcomes"):
        summary[key] = json.loads(summary[key] or "{}")
    summary["published"] = summary.pop("published_at") is not None
    summary["finished"] = summary.pop("finished_at") is not None
    summary["file_notes"] = [
        {"channel": c, "source_file": f, "notes": list(n)}
        for c, f, n in con.execute(
            "SELECT channel, source_file, notes FROM source_files WHERE last_seen_run = ? AND len(notes) > 0 ORDER BY ALL",
            [run_id],
        ).fetchall()
    ]
    return summary
