"""The DuckDB warehouse: schema, staging, phone cache, and the one-transaction publish.

Plain Python over a DuckDB connection (opened by the Dagster `warehouse`
resource or by tests). The published tables change only inside `publish`,
which runs in a single transaction: a run that dies before COMMIT leaves the
warehouse exactly as it was, and the next run redoes the work.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import duckdb
import polars as pl

from consent.storage import sql
from consent.storage.bulk import bulk_phase
from consent.storage.db import table_exists, transaction, upsert, write_frame
from consent.storage.faults import crash_point
from consent.reading.ingest import Pair, Progress, StagedExports, StagedFrames, stage_exports
from consent.domain.notices import NoticeTerms, terms_from_rows
from consent.reading.notices import NoticeFolder, read_notices
from consent.domain.phones import METADATA_VERSION, PHONE_BOOK_SCHEMA, PhoneBook, normalise_frame
from consent.domain.policy import ChannelsFile, Policy
from consent.privacy.erasure import phone_hash, suppress_staged
from consent.domain.reconcile import decide_range, reconcile
from consent.run.decide_sql import decide_touched
from consent.domain.redact import redact
from consent.domain.rules import TIME_DEPENDENT, UNTIL_DATED
from consent.domain.schema import (
    CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS, EVENT_SCHEMA, LINK_SCHEMA, QUARANTINE_SCHEMA, RUNS,
    SEND_SCHEMA, SKIPPED_SCHEMA,
)


def known_files(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(channel, content hash) of every file already ingested."""
    return {tuple(r) for r in con.execute("SELECT DISTINCT channel, file_hash FROM source_files").fetchall()}


class DuplicateCacheKeys(RuntimeError):
    """The phone cache holds a key more than once (it has no primary-key index since schema version 7)."""


class PhoneCache:
    """Normalisations kept in the warehouse by (raw, hint, phonenumbers metadata version).

    A number seen before is not parsed again; a new `phonenumbers` release
    brings a new metadata version, so every pair is parsed afresh once.
    """

    def __init__(
        self,
        connect: Callable[[], ContextManager[duckdb.DuckDBPyConnection]],
        workers: int = 1,
        progress: Progress | None = None,
        salt: str | None = None,
    ):
        # A connection only while reading or writing the cache: parsing holds no lock.
        self.connect = connect
        # With the salt, spellings of erased numbers (suppression_list) are resolved but not cached.
        self.salt = salt
        self.workers = workers
        self.progress = progress
        self.hits = 0
        self.misses = 0

    def resolve(self, pairs: list[Pair]) -> PhoneBook:
        if not pairs:
            return PhoneBook(pl.DataFrame(schema=PHONE_BOOK_SCHEMA))
        wanted = pl.DataFrame(
            {"phone_raw": [p[0] for p in pairs], "country_hint": [p[1] or "" for p in pairs]},
            schema={"phone_raw": pl.Utf8, "country_hint": pl.Utf8},
        ).unique(maintain_order=True)  # a hint of None and of "" are one key
        with self.connect() as con:
            con.register("wanted_pairs", wanted)
            cached = con.execute(
                """
                SELECT c.phone_raw, c.country_hint, c.phone_e164, c.phone_region, c.phone_type, c.invalid_reason
                FROM phone_cache c JOIN wanted_pairs w USING (phone_raw, country_hint)
                WHERE c.metadata_version = ?
                """,
                [METADATA_VERSION],
            ).pl()
            con.unregister("wanted_pairs")
        twice = cached.height - cached.select("phone_raw", "country_hint").unique().height
        if twice:
            # Never taken silently: a number would be built into two events, or into two different numbers.
            raise DuplicateCacheKeys(
                f"the warehouse's phone cache holds {twice} key(s) of this run more than once "
                f"(phone_raw, country_hint, metadata_version {METADATA_VERSION}); it is only a cache: "
                "`DELETE FROM phone_cache` and run again, and every number is parsed afresh"
            )
        missing = wanted.join(cached, on=["phone_raw", "country_hint"], how="anti", maintain_order="left")
        missing_pairs = [(raw, hint or None) for raw, hint in missing.iter_rows()]
        self.hits += cached.height
        self.misses += len(missing_pairs)
        fresh = normalise_frame(missing_pairs, workers=self.workers, progress=self.progress)
        if fresh.height:
            with self.connect() as con:
                kept = self._not_erased(con, fresh)
                con.register("fresh_phones", kept.with_columns(metadata_version=pl.lit(METADATA_VERSION)))
                # Only the keys the lookup above did not find, once each (`wanted` is unique; one
                # writer: the run's lock).
                con.execute("INSERT INTO phone_cache BY NAME SELECT * FROM fresh_phones")
                con.unregister("fresh_phones")
        return PhoneBook(pl.concat([cached.cast(PHONE_BOOK_SCHEMA), fresh], how="vertical"))

    def _not_erased(self, con: duckdb.DuckDBPyConnection, fresh: pl.DataFrame) -> pl.DataFrame:
        """The fresh normalisations less those of erased numbers: an erased number is kept only as
        a salted hash, never as a cached spelling (hashed here only when some number was erased)."""
        if self.salt is None:
            return fresh
        erased = {h for (h,) in con.execute("SELECT phone_hash FROM suppression_list").fetchall()}
        if not erased:
            return fresh
        numbers = fresh.get_column("phone_e164").drop_nulls().unique()
        hit = [n for n in numbers.to_list() if phone_hash(n, self.salt) in erased]
        return fresh.filter(~pl.col("phone_e164").is_in(hit).fill_null(False)) if hit else fresh


STAGING_SLICE_ROWS = 250_000
# The staging tables a run's batches append to (schema of each: consent/domain/schema.py).
BATCH_TABLES = {
    "stg_consent_events": ("events", EVENT_SCHEMA),
    "stg_quarantine": ("quarantine", QUARANTINE_SCHEMA),
    "stg_skipped": ("skipped", SKIPPED_SCHEMA),
    "stg_message_statuses": ("sends", SEND_SCHEMA),
    "stg_identifier_links": ("links", LINK_SCHEMA),
}


def begin_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Empty staging tables for a new run (and no `stg_run` row: a half-staged run cannot be published)."""
    with transaction(con):
        for table, (_, schema) in BATCH_TABLES.items():
            _write_frame(con, table, _staging_frame(table, pl.DataFrame(schema=schema)), replace=True)
        con.execute("DROP TABLE IF EXISTS stg_run")


def append_staging(con: duckdb.DuckDBPyConnection, frames: StagedFrames) -> None:
    """Add one batch of files' frames to the staging tables, in one transaction."""
    with transaction(con):
        for table, (field, _) in BATCH_TABLES.items():
            _write_frame(con, table, _staging_frame(table, getattr(frames, field)))


def finish_staging(
    con: duckdb.DuckDBPyConnection,
    staged: StagedExports,
    *,
    notices: NoticeFolder | None = None,
    run_id: str,
    mode: str,
    as_of: datetime,
    started_at: datetime,
    businesses: list[str] | None = None,
) -> None:
    """The run's files, notices and `stg_run`, in one transaction: the staged run is complete."""
    files = pl.DataFrame(
        [
            {**{k: v for k, v in asdict(f).items() if k != "notes"}, "notes": [redact(n) for n in f.notes]}
            for f in staged.files
        ],
        schema={
            "channel": pl.Utf8, "source_file": pl.Utf8, "file_hash": pl.Utf8, "size_bytes": pl.Int64,
            "state": pl.Utf8, "mtime_ns": pl.Int64, "rows_read": pl.Int64, "events": pl.Int64, "quarantined": pl.Int64,
            "skipped": pl.Int64, "notes": pl.List(pl.Utf8),
        },
    )
    run = pl.DataFrame(
        {
            "run_id": [run_id], "mode": [mode], "as_of": [as_of], "started_at": [started_at],
            "ignored": [[redact(i) for i in staged.ignored]], "step_seconds": [json.dumps(staged.seconds)],
            "businesses": [businesses or ["default"]],
        },
        schema={
            "run_id": pl.Utf8, "mode": pl.Utf8, "as_of": pl.Datetime("us"), "started_at": pl.Datetime("us"),
            "ignored": pl.List(pl.Utf8), "step_seconds": pl.Utf8, "businesses": pl.List(pl.Utf8),
        },
    )
    notices = notices or NoticeFolder([], [])
    frames = {
        "stg_notices": notices.frame(),
        "stg_notices_refused": pl.DataFrame(
            notices.refused, schema={"source_file": pl.Utf8, "reason": pl.Utf8}, orient="row"
        ),
        "stg_source_files": files,
        "stg_run": run,
    }
    with transaction(con):
        for table, frame in frames.items():
            _write_frame(con, table, frame, replace=True)
    crash_point("after_staging")


def retract_staging(con: duckdb.DuckDBPyConnection, source_file: str) -> None:
    """Take one file's rows back out of the staging tables (the file is read again from the start)."""
    with transaction(con):
        for table in BATCH_TABLES:
            con.execute(f"DELETE FROM {table} WHERE source_file = ?", [source_file])


def _staging_frame(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.rename({"quarantine_id": "skipped_id"}) if table == "stg_skipped" else frame


def _write_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, replace: bool = False) -> None:
    # In slices: each is converted to Arrow on its own (and let go after its statement: `write_frame`),
    # so a large batch is never copied whole.
    for n, part in enumerate(frame.iter_slices(STAGING_SLICE_ROWS) if frame.height else [frame]):
        write_frame(con, table, part, replace=replace and n == 0)


def stage_run(
    connect: Callable[[], ContextManager[duckdb.DuckDBPyConnection]],
    exports_dir: Path,
    *,
    policy: Policy,
    channels: ChannelsFile,
    as_of: datetime,
    run_id: str,
    mode: str = "incremental",
    workers: int = 1,
    progress: Progress | None = None,
    reread: bool = False,
    salt: str | None = None,
) -> StagedExports:
    """Read the exports not seen before into the `stg_*` tables (the first half of a run);
    with `reread`, every file, as if none had been seen (the ledger keeps each id once).

    Batch by batch (`consent.reading.ingest.BATCH_BYTES` of files each), a large file part by part, and
    written `consent.reading.ingest.FLUSH_ROWS` rows at a time: memory holds one batch or part. Holds a
    warehouse connection only to look up known files and cached numbers and to write (or take back)
    rows: reading and parsing hold no lock.
    """
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)
    with connect() as con:
        known, fingerprints = _already_read(con, mode, reread)
        begin_staging(con)

    def sink(frames: StagedFrames) -> None:
        with connect() as con:
            append_staging(con, frames)

    def retract(source_file: str) -> None:
        with connect() as con:
            retract_staging(con, source_file)

    cache = PhoneCache(connect, workers=workers, progress=progress, salt=salt)
    staged = stage_exports(
        exports_dir,
        policy=policy,
        channels=channels,
        known_hashes=known,
        resolve_phones=cache.resolve,
        ingested_at=as_of,
        run_id=run_id,
        sink=sink,
        retract=retract,
        progress=progress,
        fingerprints=fingerprints,
    )
    staged.seconds["phone_cache_hits"] = cache.hits
    staged.seconds["phone_cache_misses"] = cache.misses
    notices = read_notices(exports_dir)
    with connect() as con:
        finish_staging(con, staged, notices=notices, run_id=run_id, mode=mode, as_of=as_of, started_at=started_at,
                       businesses=channels.business_names())
    return staged


def _already_read(con: duckdb.DuckDBPyConnection, mode: str, reread: bool) -> tuple[set, dict]:
    """The files a run need not read again, and the size-and-time fingerprints that spare hashing
    them: none with `reread`; a full run hashes every file again; an incremental one trusts
    unchanged size and times."""
    known = set() if reread else known_files(con)
    fingerprints = {} if mode == "full" or reread else {
        (f, size, mtime): h
        for f, size, mtime, h in con.execute("SELECT source_file, size_bytes, mtime_ns, file_hash FROM file_fingerprints").fetchall()
    }
    return known, fingerprints


RECONCILE_RANGE_EVENTS = 250_000
# With worker processes, smaller ranges keep both cores busy while this process reads and writes
# (measured at 1M events: reconcile 14.3 s on one process, 13.3 s with 250k ranges, 12.3 s with 100k).
PARALLEL_RANGE_EVENTS = 100_000
CONTACT_COUNTS_FETCH = 65_536  # (contact key, events) pairs read at a time to cut the ranges


@dataclass
class StagedRun:
    """The run being published, as `stage_run` recorded it in `stg_run`."""

    run_id: str
    mode: str
    as_of: datetime
    started_at: datetime
    ignored: list[str]
    seconds: dict[str, float]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> "StagedRun":
        run_id, mode, as_of, started_at, ignored, step_seconds = con.execute(
            "SELECT run_id, mode, as_of, started_at, ignored, step_seconds FROM stg_run"
        ).fetchone()
        return cls(run_id, mode, as_of, started_at, list(ignored or []), json.loads(step_seconds))


@bulk_phase()
def publish(
    con: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    salt: str,
    full: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
) -> dict:
    """Append the staged run to the ledger and recompute affected statuses, atomically.

    Returns the run summary written to `runs`.
    """
    run = StagedRun.read(con)
    with transaction(con):
        sql.use_salt(con, salt)
        with timed(run.seconds, "ledger"):
            # Erased numbers stay out unless a new consent dated after the erasure arrives.
            suppressed = suppress_staged(con)
            sql.run(con, "append_ledger")
            sql.run(con, "register_links")
            sql.run(con, "register_files", {"run_id": run.run_id})
        crash_point("publish_after_ledger")
        notices = register_notices(con, run)
        with timed(run.seconds, "reconcile"):
            select_touched_contacts(con, run, policy, full)
            contacts = reconcile_ranges(con, policy, run.as_of, notices, progress, workers, counts=run.seconds)
        crash_point("publish_after_status")
        summary = record_run(con, run, contacts=contacts, suppressed=suppressed)
    crash_point("after_publish")
    return summary


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - started


def register_notices(con: duckdb.DuckDBPyConnection, run: StagedRun) -> dict[str, NoticeTerms]:
    """Add this run's new notice versions to the registry; the terms of every registered notice."""
    sql.run(con, "register_notices", {"as_of": run.as_of, "run_id": run.run_id})
    return terms_from_rows(sql.run(con, "notice_terms").fetchall())


def select_touched_contacts(con: duckdb.DuckDBPyConnection, run: StagedRun, policy: Policy, full: bool) -> None:
    """`stg_touched`: the contacts to decide again (new events, new links, or time alone may change them)."""
    con.execute("SET VARIABLE opt_out_all_businesses = ?", [policy.opt_out_scope == "all_businesses"])
    shortest = policy.shortest_validity_days
    params = {
        "full": full,
        "run_id": run.run_id,
        # Time alone moves a pending request to `expired` once the confirmation window has passed,
        # and an opt-in once its validity has: only a request made (a consent given) at least that
        # long before the run's clock can have changed (rows with no date are always decided again).
        "requested_by": run.as_of - timedelta(days=policy.confirmation_window_days),
        "consent_expires": shortest is not None,
        "given_by": run.as_of - timedelta(days=shortest or 0),
        "time_dependent_rules": list(TIME_DEPENDENT),
        # A violation of such a rule about the opt-in's own date (a future date) holds until the clock,
        # plus the allowed skew, reaches that date: decided again from then on.
        "until_dated_rules": list(UNTIL_DATED),
        "dated_by": run.as_of + timedelta(minutes=policy.clock_skew_minutes),
    }
    sql.run(con, "time_alone", params)
    first = scope_events(con, params, full)
    sql.run(con, "contact_events")
    sql.run(con, "touched_contacts", params)
    replace_touched(con, full)
    # What an incremental run decides, kept as written: the incremental marts compare it with the
    # rows it replaced (consent/storage/sql/mart_scope.sql), and the status check validates the statuses that
    # changed, without reading the whole tables again. Not on a full run, nor on a first one: they
    # decide every contact (a copy of every row), and the marts are rebuilt whole after them.
    for table, kept in ((CONSENT_STATUS, "stg_decided_status"), (CONSENT_STATUS_HISTORY, "stg_decided_history"),
                        (CONSENT_VIOLATIONS, "stg_decided_violations")):
        con.execute(f"DROP TABLE IF EXISTS {kept}")
        if not full and not first:
            con.execute(f"CREATE TABLE {kept} AS SELECT * FROM {table.name} LIMIT 0")


# A night touching at most this many contacts sets their rows aside with `DELETE ... RETURNING`
# (one pass over each table; the rows held in this process), more by reading them and deleting them
# in SQL (two passes; DuckDB can spill): the memory a night holds stays bounded.
RETURNING_CONTACTS = 50_000
# The rows of a table keyed by business and contact that belong to the contacts this run decides.
TOUCHED = "business || chr(31) || contact_id IN (SELECT contact_key FROM stg_touched)"


def replace_touched(con: duckdb.DuckDBPyConnection, full: bool) -> None:
    """Delete the touched contacts' statuses, history and violations (every row on a full run), to be
    decided again, and keep the rows deleted as `stg_replaced_*` (empty on a full run): the status
    check validates only rows that changed, and the incremental marts (consent/storage/sql/mart_scope.sql)
    take the difference between these and the rows the run writes."""
    returning = not full and con.execute("SELECT count(*) FROM stg_touched").fetchone()[0] <= RETURNING_CONTACTS
    for table, kept in ((CONSENT_STATUS, "stg_replaced_status"), (CONSENT_STATUS_HISTORY, "stg_replaced_history"),
                        (CONSENT_VIOLATIONS, "stg_replaced_violations")):
        con.execute(f"CREATE OR REPLACE TABLE {kept} AS SELECT * FROM {table.name} LIMIT 0")
        if full:
            con.execute(f"DELETE FROM {table.name}")
        elif returning:
            write_frame(con, kept, con.execute(f"DELETE FROM {table.name} WHERE {TOUCHED} RETURNING *").pl())
        else:
            con.execute(f"INSERT INTO {kept} SELECT * FROM {table.name} WHERE {TOUCHED}")
            con.execute(f"DELETE FROM {table.name} WHERE {TOUCHED}")


# A night whose scope has not closed after this many steps (a very long chain of links and number
# changes) reads the whole ledger instead: slower, never wrong.
SCOPE_STEPS = 12


def scope_events(con: duckdb.DuckDBPyConnection, params: dict, full: bool) -> bool:
    """`scoped_events` and `scoped_links`: what contact_events.sql reads. The whole ledger on a full
    run; on an incremental one, the events and links of the identifiers the night touched, grown
    until closed (consent/storage/sql/event_scope.sql). A run whose events are the first in the ledger
    reads the whole ledger as a full run does: its scope would be all of it, copied. Returns
    whether the run is such a first run."""
    first = not full and con.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM consent_events WHERE run_id <> ?)", [params["run_id"]]
    ).fetchone()[0]
    if not full and not first:
        sql.run(con, "event_scope", params)
        for _ in range(SCOPE_STEPS):
            if sql.run(con, "event_scope_grow").fetchone()[0] == 0:
                con.execute("CREATE OR REPLACE TEMP VIEW scoped_events AS SELECT * FROM scope_event_rows")
                con.execute("CREATE OR REPLACE TEMP VIEW scoped_links AS SELECT * FROM scope_link_rows")
                return False
    con.execute("CREATE OR REPLACE TEMP VIEW scoped_events AS SELECT * FROM consent_events")
    con.execute("CREATE OR REPLACE TEMP VIEW scoped_links AS SELECT * FROM identifier_links")
    return first


def reconcile_ranges(
    con: duckdb.DuckDBPyConnection,
    policy: Policy,
    as_of: datetime,
    notices: dict[str, NoticeTerms],
    progress: Progress | None = None,
    workers: int = 1,
    counts: dict | None = None,
) -> int:
    """Decide the touched contacts range by range; the number of contacts decided. Those whose
    histories SQL decides exactly are decided first, all at once (consent.run.decide_sql); `counts`
    gets how many each path decided.

    Contacts are independent: with `workers` > 1 and several ranges, the state machine runs in
    worker processes (started by a fork server: they import only `consent.domain.reconcile` and what it
    needs) while this process reads the next range and writes the finished ones. At most
    `workers` + 1 ranges are in memory, never the ledger."""
    size = RECONCILE_RANGE_EVENTS if workers <= 1 else min(RECONCILE_RANGE_EVENTS, PARALLEL_RANGE_EVENTS)
    try:
        sql.run(con, "touched_history")
        in_sql = decide_touched(con, policy, as_of, notices)
        ranges = _contact_ranges(con, size)
        in_python = _decide_ranges(con, ranges, policy, as_of, notices, progress, workers)
        if counts is not None:
            counts.update(reconcile_sql_contacts=in_sql, reconcile_python_contacts=in_python)
        return in_sql + in_python
    finally:
        for table in ("touched_history", "scope_event_rows", "scope_link_rows", "scope_ids", "scope_new_ids"):
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _decide_ranges(con, ranges, policy, as_of, notices, progress, workers) -> int:
    total = sum(r[2] for r in ranges)
    counted = [0]

    kept = {name: table_exists(con, f"stg_decided_{name}") for name in ("status", "history", "violations")}

    def write(derived, contacts_in_range: int) -> None:
        for table, frame in zip((CONSENT_STATUS, CONSENT_VIOLATIONS, CONSENT_STATUS_HISTORY), derived):
            write_frame(con, table.name, frame)
        status, violations, history = derived
        if kept["status"]:  # an incremental run (select_touched_contacts)
            write_frame(con, "stg_decided_status", status)
        if kept["history"]:
            write_frame(con, "stg_decided_history", history)
        if kept["violations"]:
            write_frame(con, "stg_decided_violations", violations)
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


RUN_COUNTS = ("files_seen", "files_read", "rows_read", "events", "quarantined", "skipped")


def decided_every_contact(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the run just published decided every contact (a full run, or the first run of a
    warehouse): it kept no copy of what it wrote (`stg_decided_status`), and every row of the
    status, history and violation tables is its own."""
    return not table_exists(con, "stg_decided_status")


def changed_status_rows(con: duckdb.DuckDBPyConnection) -> str:
    """A query of the consent_status rows the run just published changed: an incremental run's rows
    as it wrote them less those it replaced; after a run that decided every contact, the whole
    table (read as it is: filtering every row by the touched contacts and taking away no replaced
    rows gave the same rows, and at 10M events ran out of memory under a 1GB limit)."""
    if decided_every_contact(con):
        return "SELECT * FROM consent_status"
    return "SELECT * FROM stg_decided_status EXCEPT ALL SELECT * FROM stg_replaced_status"


def duplicate_decisions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Keys held by more than one row among the contacts this run decided (`stg_touched`; every
    contact after a run that decided them all): (business, contact, purpose) in consent_status,
    (event, rule) in consent_violations. Neither table has a primary-key index (schema version 6),
    so this is what keeps them one row per key; both 0 when all is well."""
    decided = "" if decided_every_contact(con) or not table_exists(con, "stg_touched") else f"WHERE {TOUCHED}"
    counts = con.execute(f"""
        SELECT (SELECT count(*) FROM (SELECT 1 FROM consent_status {decided}
                                      GROUP BY business, contact_id, purpose HAVING count(*) > 1)),
               (SELECT count(*) FROM (SELECT 1 FROM consent_violations {decided}
                                      GROUP BY event_id, rule HAVING count(*) > 1))
    """).fetchone()
    return {"consent_status": int(counts[0]), "consent_violations": int(counts[1])}


# Tables without a primary-key index whose ids append_ledger.sql keeps unique (schema version 9;
# the ledger's event ids, version 5, are checked by `ledger_rows_are_well_formed` itself).
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
    refused = con.execute("SELECT source_file, reason FROM stg_notices_refused ORDER BY ALL").fetchall()
    return {
        "run_id": run.run_id, "mode": run.mode, "as_of": run.as_of.isoformat(sep=" "), **totals,
        "new_events": new_events, "contacts_reconciled": contacts, "suppressed_events": int(suppressed),
        "new_notices": [v for (v,) in new_notices],
        "notices_refused": [{"source_file": f, "reason": r} for f, r in refused],
        "per_channel": per_channel, "ignored": run.ignored, "step_seconds": run.seconds,
    }
