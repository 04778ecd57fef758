"""Publishing: the staged run appended to the ledger and its contacts decided, in one transaction.

The published tables change only inside `publish`: a run that dies before COMMIT leaves the
warehouse exactly as it was, and the next run redoes the work. The steps, in order: erased
numbers kept out (`consent.privacy.erasure.suppress_staged`), the ledger, links, files and
notices registered, the touched contacts selected (`consent.run.scope`) and decided
(`consent.run.decide`), and the run's row of `runs` written (`record_run`).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

import duckdb

from consent.storage import sql
from consent.storage.bulk import bulk_phase
from consent.storage.db import table_exists, transaction, upsert
from consent.storage.faults import crash_point
from consent.reading.ingest import Progress
from consent.domain.notices import NoticeTerms, terms_from_rows
from consent.domain.policy import Policy
from consent.domain.schema import RUNS
from consent.privacy.erasure import suppress_staged
from consent.run.buckets import (decide_bucket, decide_by_bucket, drop_bucket_scope, drop_staged_bucket_scope,
                                 open_bucket_scope, stage_bucket_scope)
from consent.run.decide import decide_contacts, drop_scope
from consent.run.scope import select_touched_contacts
from consent.run.staging import StagedRun


@bulk_phase()
def publish(
    con: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    full: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
    buckets: int = 1,
    fan_out: FanOut | None = None,
) -> dict:
    """Append the staged run to the ledger and recompute affected statuses, atomically.

    Returns the run summary written to `runs`. Erased numbers are matched by the connection's
    `salted_hash` (defined where it was opened: consent/storage/access.py). With `buckets` > 1
    the contacts are decided bucket by bucket, each bucket in a transaction of its own
    (`publish_by_bucket`); by `fan_out(buckets, full)`, when given, in other processes.
    """
    run = StagedRun.read(con)
    # A run decided by bucket that stopped before its last bucket left contacts undecided, their new
    # events in the ledger: this run decides every contact again.
    full = full or table_exists(con, UNDECIDED)
    if buckets > 1:
        return publish_by_bucket(con, run, policy=policy, full=full, progress=progress, workers=workers,
                                 buckets=buckets, fan_out=fan_out)
    with transaction(con):
        con.execute(f"DROP TABLE IF EXISTS {UNDECIDED}")
        drop_staged_bucket_scope(con)  # what a fan-out that stopped left
        suppressed = append_run(con, run)
        notices = register_notices(con, run)
        with timed(run.seconds, "reconcile"):
            select_touched_contacts(con, run, policy, full)
            try:
                contacts = decide_contacts(con, policy, run.as_of, notices, progress, workers, counts=run.seconds)
            finally:
                drop_scope(con)
        crash_point("publish_after_status")
        summary = record_run(con, run, contacts=contacts, suppressed=suppressed)
    crash_point("after_publish")
    return summary


# Decides every bucket of the night elsewhere (processes, machines: assets/buckets.py), each
# with `decide_bucket_apart`, once the ledger is committed: `fan_out(buckets, full)`, the contacts decided.
FanOut = Callable[[int, bool], int]

# Written by the first transaction of a run decided by bucket, dropped by its last: found by a later
# run, some bucket of that run was never decided.
UNDECIDED = "staging.stg_undecided_run"


def append_run(con: duckdb.DuckDBPyConnection, run: StagedRun) -> int:
    """The staged run appended to the ledger, its links and files registered; the events suppressed."""
    with timed(run.seconds, "ledger"):
        # Erased numbers stay out unless a new consent dated after the erasure arrives.
        suppressed = suppress_staged(con)
        sql.run(con, "append_ledger")
        sql.run(con, "register_links")
        sql.run(con, "register_files", {"run_id": run.run_id})
    crash_point("publish_after_ledger")
    return suppressed


def publish_by_bucket(con: duckdb.DuckDBPyConnection, run: StagedRun, *, policy: Policy, full: bool,
                      progress: Progress | None, workers: int, buckets: int, fan_out: FanOut | None = None) -> dict:
    """`publish` in 2 + `buckets` transactions: the ledger appended and the touched contacts chosen
    (`publish_ledger`); each bucket of them replaced and decided (consent.run.buckets.decide_by_bucket,
    retried whole on a write conflict); the run recorded (`record_bucketed_run`). Not all or nothing
    as one transaction is: a run stopped between them has its events in the ledger, the buckets
    decided so far written and the others as they were, and its row of `runs` says failed; the next
    run, whatever its mode, then decides every contact again (`UNDECIDED`). With `fan_out`, the
    buckets are decided by it, in processes of their own, instead of one after another on `con`."""
    suppressed, notices = publish_ledger(con, run, policy=policy, full=full, replace=False)
    started = time.perf_counter()

    def decide(contacts: str) -> int:
        return decide_contacts(con, policy, run.as_of, notices, progress, workers, run.seconds, scope=contacts)

    try:
        touched = con.execute("SELECT count(*) FROM staging.stg_touched").fetchone()[0]
        if fan_out is not None and (full or touched >= FAN_OUT_CONTACTS):
            stage_bucket_scope(con, buckets, full=full)
            contacts = fan_out(buckets, full)
        else:
            contacts = decide_by_bucket(con, buckets, decide, full=full, progress=progress)
    finally:
        drop_scope(con)
    run.seconds["reconcile"] += time.perf_counter() - started
    return record_bucketed_run(con, run, contacts=contacts, suppressed=suppressed)


# Fewer touched contacts than this are decided in the night's process even when a fan-out is offered:
# a process costs its start-up (2-3 s here), more than deciding a few thousand contacts.
FAN_OUT_CONTACTS = 50_000


def publish_ledger(con: duckdb.DuckDBPyConnection, run: StagedRun, *, policy: Policy, full: bool,
                   replace: bool) -> tuple[int, dict[str, NoticeTerms]]:
    """The first transaction of a run decided by bucket: the ledger appended, links, files and
    notices registered, the touched contacts chosen (`staging.stg_touched`; their rows replaced
    only if `replace`). The events suppressed and the notices' terms."""
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TABLE {UNDECIDED} AS SELECT ?::VARCHAR AS run_id", [run.run_id])
        suppressed = append_run(con, run)
        notices = register_notices(con, run)
        with timed(run.seconds, "reconcile"):
            select_touched_contacts(con, run, policy, full, replace=replace)
    return suppressed, notices


def record_bucketed_run(con: duckdb.DuckDBPyConnection, run: StagedRun, *, contacts: int, suppressed: int) -> dict:
    """The last transaction of a run decided by bucket: its row of `runs`, once every bucket is decided."""
    crash_point("publish_after_status")
    with transaction(con):
        con.execute(f"DROP TABLE IF EXISTS {UNDECIDED}")
        drop_staged_bucket_scope(con)
        summary = record_run(con, run, contacts=contacts, suppressed=suppressed)
    crash_point("after_publish")
    return summary


def decide_bucket_apart(con: duckdb.DuckDBPyConnection, *, policy: Policy, full: bool, bucket: int,
                        buckets: int, workers: int = 1) -> int:
    """One bucket of the staged run decided on a connection of its own (another process, another
    machine), after `publish_ledger` committed: the contacts decided. Its scope is read again from
    what is committed (the whole ledger, and the persons' buckets: `open_bucket_scope`)."""
    run = StagedRun.read(con)
    notices = terms_from_rows(sql.run(con, "notice_terms").fetchall())
    open_bucket_scope(con, policy, full=full, buckets=buckets)

    def decide(contacts: str) -> int:
        return decide_contacts(con, policy, run.as_of, notices, None, workers, None, scope=contacts)

    try:
        return decide_bucket(con, bucket, decide, full=full)
    finally:
        drop_bucket_scope(con)


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - started


def register_notices(con: duckdb.DuckDBPyConnection, run: StagedRun) -> dict[str, NoticeTerms]:
    """Add this run's new notice versions to the registry; the terms of every registered notice."""
    sql.run(con, "register_notices", {"as_of": run.as_of, "run_id": run.run_id})
    return terms_from_rows(sql.run(con, "notice_terms").fetchall())


RUN_COUNTS = ("files_seen", "files_read", "rows_read", "events", "quarantined", "skipped")


APPENDED_KEYS = {
    "quarantine": "quarantine_id",
    "skipped_items": "skipped_id",
    "message_statuses": "(message_id, status)",
}


def duplicate_ids(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """Per table of APPENDED_KEYS: how many ids of the rows run `run_id` added are held by more than
    one row (in the whole table, reading only the key columns). 0 each when all is well."""
    counts = {}
    for table, key in APPENDED_KEYS.items():
        counts[table] = int(con.execute(f"""
            SELECT count(*) FROM (
                SELECT 1 FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE run_id = $run)
                GROUP BY {key} HAVING count(*) > 1)
        """, {"run": run_id}).fetchone()[0])
    return counts


def record_run(con: duckdb.DuckDBPyConnection, run: StagedRun, *, contacts: int, suppressed: int) -> dict:
    """The run's row of `runs` (status `published`) and the summary returned to the caller."""
    cursor = sql.run(con, "run_channels", {"run_id": run.run_id})
    columns = [d[0] for d in cursor.description]
    per_channel = {
        row[0]: {k: v for k, v in zip(columns[1:], row[1:]) if v is not None} for row in cursor.fetchall()
    }
    totals = {key: sum(int(c.get(key) or 0) for c in per_channel.values()) for key in RUN_COUNTS}
    new_events = sum(int(c.get("new_events") or 0) for c in per_channel.values())
    upsert(con, RUNS.name, {
        "run_id": run.run_id, "mode": run.mode, "as_of": run.as_of, "started_at": run.started_at,
        "published_at": datetime.now(timezone.utc).replace(tzinfo=None), "status": "published", **totals,
        "new_events": new_events, "contacts_reconciled": contacts, "checks_failed": [],
        "per_channel": json.dumps(per_channel), "step_seconds": json.dumps(run.seconds),
    })
    new_notices = con.execute("SELECT notice_version FROM consent_notices WHERE run_id = ?", [run.run_id]).fetchall()
    refused = con.execute("SELECT source_file, reason FROM staging.stg_notices_refused ORDER BY ALL").fetchall()
    return {
        "run_id": run.run_id, "mode": run.mode, "as_of": run.as_of.isoformat(sep=" "), **totals,
        "new_events": new_events, "contacts_reconciled": contacts, "suppressed_events": int(suppressed),
        "new_notices": [v for (v,) in new_notices],
        "notices_refused": [{"source_file": f, "reason": r} for f, r in refused],
        "per_channel": per_channel, "ignored": run.ignored, "step_seconds": run.seconds,
    }
