"""Deciding: the touched contacts' statuses, history and violations, range by range.

The ledger rows of the contacts in scope are read a range of contacts at a time and run through
the state machine (`consent.domain.reconcile`), in worker processes when there are several
workers; the rows decided are written to the published tables (and, on a night, to the
`stg_decided_*` copies `consent.run.scope` set up).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Iterator

import duckdb
import polars as pl

from consent.storage import sql
from consent.storage.db import drop_temporary, engine_memory_share, table_exists, write_frame
from consent.reading.ingest import Progress
from consent.domain.notices import NoticeTerms
from consent.domain.policy import Policy
from consent.domain.reconcile import decide_range, reconcile
from consent.domain.schema import CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS
from consent.run.decide_sql import decide_touched

RECONCILE_RANGE_EVENTS = 250_000
# With worker processes, smaller ranges keep both cores busy while this process reads and writes
# (measured at 1M events: reconcile 14.3 s on one process, 13.3 s with 250k ranges, 12.3 s with 100k).
PARALLEL_RANGE_EVENTS = 100_000
# The histories SQL decides (consent.run.decide_sql) at a time: a full run at 5M events decided at
# once ran out of memory under the 1GB default; at 1M events it is one range, as before.
SQL_RANGE_EVENTS = 1_500_000
# While the state machine decides, this process holds ranges of histories and their decisions as
# frames (and its workers theirs) beside DuckDB, which by then holds mostly the touched histories
# (a temporary table that can spill): DuckDB is left this share of its memory limit, so the two
# together stay near the limit alone. A full run at 1M events: this process held 1,753 MB with
# DuckDB at its limit (935 MB), 1,178 MB with DuckDB at 400MB (363 MB).
STATE_MACHINE_ENGINE_SHARE = 0.4
STATE_MACHINE_ENGINE_FLOOR = 256 * 2**20  # bytes: never less for DuckDB (a smaller limit is kept whole)
CONTACT_COUNTS_FETCH = 65_536  # (contact key, events) pairs read at a time to cut the ranges


# The temporary tables the scope (consent.run.scope) and deciding leave on the connection.
SCOPE_TABLES = ("touched_history", "scope_event_rows", "scope_link_rows", "scope_ids", "scope_new_ids")


def drop_scope(con: duckdb.DuckDBPyConnection) -> None:
    drop_temporary(con, *SCOPE_TABLES)


def decide_contacts(
    con: duckdb.DuckDBPyConnection,
    policy: Policy,
    as_of: datetime,
    notices: dict[str, NoticeTerms],
    progress: Progress | None = None,
    workers: int = 1,
    counts: dict | None = None,
    scope: str = "staging.stg_touched",
) -> int:
    """Decide the contacts whose keys the table `scope` holds (the touched contacts, or one bucket of
    them) range by range; the number of contacts decided. Those whose histories SQL decides exactly
    are decided first, all at once (consent.run.decide_sql); `counts` gets how many each path
    decided (added to what it holds).

    Contacts are independent: with `workers` > 1 and several ranges, the state machine runs in
    worker processes (started by a fork server: they import only `consent.domain.reconcile` and what it
    needs) while this process reads the next range and writes the finished ones. At most
    `workers` + 1 ranges are in memory, never the ledger."""
    size = RECONCILE_RANGE_EVENTS if workers <= 1 else min(RECONCILE_RANGE_EVENTS, PARALLEL_RANGE_EVENTS)
    con.execute(f"CREATE OR REPLACE TEMP VIEW decide_scope AS SELECT contact_key FROM {scope}")
    try:
        sql.run(con, "touched_history")
        in_sql = decide_touched(con, policy, as_of, notices, lambda: _contact_ranges(con, SQL_RANGE_EVENTS))
        ranges = _contact_ranges(con, size)
        # One range is small beside DuckDB's memory: evicting is not worth its writes (1.5 s at 1M).
        share = STATE_MACHINE_ENGINE_SHARE if len(ranges) > 1 else 1.0
        with engine_memory_share(con, share, STATE_MACHINE_ENGINE_FLOOR):
            in_python = _decide_ranges(con, ranges, policy, as_of, notices, progress, workers)
        if counts is not None:
            for key, value in (("reconcile_sql_contacts", in_sql), ("reconcile_python_contacts", in_python)):
                counts[key] = counts.get(key, 0) + value
        return in_sql + in_python
    finally:
        drop_temporary(con, "touched_history")
        drop_temporary(con, "decide_scope", view=True)


def _decide_ranges(con, ranges, policy, as_of, notices, progress, workers) -> int:
    total = sum(r[2] for r in ranges)
    counted = [0]

    kept = {name: table_exists(con, f"staging.stg_decided_{name}") for name in ("status", "history", "violations")}

    def write(derived, contacts_in_range: int) -> None:
        for table, frame in zip((CONSENT_STATUS, CONSENT_VIOLATIONS, CONSENT_STATUS_HISTORY), derived):
            write_frame(con, table.name, frame)
        status, violations, history = derived
        if kept["status"]:  # an incremental run (select_touched_contacts)
            write_frame(con, "staging.stg_decided_status", status)
        if kept["history"]:
            write_frame(con, "staging.stg_decided_history", history)
        if kept["violations"]:
            write_frame(con, "staging.stg_decided_violations", violations)
        counted[0] += contacts_in_range
        if progress:
            progress("reconciling contacts", counted[0], total)

    def histories() -> Iterator[tuple[pl.DataFrame, int]]:
        for low, high, contacts_in_range in ranges:
            yield sql.run(con, "range_history", {"low": low, "high": high}).pl(), contacts_in_range

    if workers <= 1 or len(ranges) < 2:
        for history, contacts_in_range in histories():
            write(reconcile(history, policy, as_of, notices=notices), contacts_in_range)
        return total
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["consent.domain.reconcile"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque = deque()
        for history, contacts_in_range in histories():
            pending.append((pool.submit(decide_range, history, policy, as_of, notices), contacts_in_range))
            del history
            while len(pending) > workers:
                future, n = pending.popleft()
                write(future.result(), n)
        while pending:
            future, n = pending.popleft()
            write(future.result(), n)
    return total


def _contact_ranges(con: duckdb.DuckDBPyConnection, events_per_range: int) -> list[tuple[str, str, int]]:
    """(first contact key, last contact key, contacts) of consecutive ranges of touched contacts,
    each holding about `events_per_range` ledger events (a contact is never split)."""
    ranges: list[tuple[str, str, int]] = []
    start, last, events, contacts = None, None, 0, 0
    counts = sql.run(con, "contact_ranges")
    # Read in pieces: the 1.44M pairs of a full run at 5M events, fetched whole, held ~360 MB of
    # Python tuples at once (~145 MB of it still held by the process once they were freed).
    while piece := counts.fetchmany(CONTACT_COUNTS_FETCH):
        for phone, n in piece:
            start = start or phone
            last, events, contacts = phone, events + n, contacts + 1
            if events >= events_per_range:
                ranges.append((start, phone, contacts))
                start, events, contacts = None, 0, 0
    if start is not None:
        ranges.append((start, last, contacts))
    return ranges


