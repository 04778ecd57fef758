"""The DuckDB warehouse: schema, staging, phone cache, and the one-transaction publish.

Plain Python over a DuckDB connection (opened by the Dagster `warehouse`
resource or by tests). The published tables change only inside `publish`,
which runs in a single transaction: a run that dies before COMMIT leaves the
warehouse exactly as it was, and the next run redoes the work.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ContextManager

import duckdb
import polars as pl

from consent.db import transaction
from consent.bulk import bulk_phase
from consent.faults import crash_point
from consent.ingest import Pair, Progress, StagedExports, stage_exports
from consent.notices import NoticeFolder, read_notices, terms_from_rows
from consent.privacy import PRIVACY_DDL, suppress_staged
from consent.phones import METADATA_VERSION, PHONE_BOOK_SCHEMA, PhoneBook, normalise_frame
from consent.policy import ChannelsFile, Policy
from consent.reconcile import HISTORY_SCHEMA, INPUT_COLUMNS, STATUS_SCHEMA, VIOLATION_SCHEMA, reconcile

EVENT_COLUMNS_DDL = """
    event_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    phone_raw VARCHAR,
    country_hint VARCHAR,
    phone_e164 VARCHAR NOT NULL,
    phone_region VARCHAR,
    phone_type VARCHAR,
    purposes VARCHAR[],
    occurred_at TIMESTAMP,
    consent_method VARCHAR,
    notice_version VARCHAR,
    checkbox_pre_ticked BOOLEAN,
    bundled_with_terms BOOLEAN,
    acquisition_source VARCHAR,
    evidence_ref VARCHAR,
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL,
    source_pointer VARCHAR,
    file_hash VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL,
    warnings VARCHAR[]
"""
REJECT_COLUMNS_DDL = """
    quarantine_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    source_line BIGINT,
    source_pointer VARCHAR,
    file_hash VARCHAR NOT NULL,
    raw_row VARCHAR,
    reason VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL
"""
SCHEMA_DDL = f"""
CREATE TABLE IF NOT EXISTS consent_events ({EVENT_COLUMNS_DDL}, PRIMARY KEY (event_id));
CREATE TABLE IF NOT EXISTS quarantine ({REJECT_COLUMNS_DDL}, PRIMARY KEY (quarantine_id));
CREATE TABLE IF NOT EXISTS skipped_items ({REJECT_COLUMNS_DDL.replace('quarantine_id', 'skipped_id')}, PRIMARY KEY (skipped_id));
CREATE TABLE IF NOT EXISTS consent_status (
    phone_e164 VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    sendable BOOLEAN NOT NULL,
    status_since TIMESTAMP,
    consent_method VARCHAR,
    consent_at TIMESTAMP,
    channel VARCHAR,
    notice_version VARCHAR,
    event_id VARCHAR,
    source_file VARCHAR,
    source_line BIGINT,
    opted_out_at TIMESTAMP,
    opt_out_channel VARCHAR,
    opt_out_event_id VARCHAR,
    decided_by_event_id VARCHAR,
    PRIMARY KEY (phone_e164, purpose)
);
CREATE TABLE IF NOT EXISTS consent_status_history (
    phone_e164 VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    decided_by_event_id VARCHAR,
    consent_event_id VARCHAR,
    consent_method VARCHAR,
    consent_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS consent_violations (
    event_id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    refused BOOLEAN NOT NULL,
    phone_e164 VARCHAR NOT NULL,
    channel VARCHAR,
    event_type VARCHAR,
    purposes VARCHAR[],
    occurred_at TIMESTAMP,
    source_file VARCHAR,
    source_line BIGINT,
    PRIMARY KEY (event_id, rule)
);
CREATE TABLE IF NOT EXISTS source_files (
    channel VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    file_hash VARCHAR NOT NULL,
    size_bytes BIGINT,
    first_seen_run VARCHAR NOT NULL,
    last_seen_run VARCHAR NOT NULL,
    rows_read BIGINT,
    events BIGINT,
    new_events BIGINT,
    quarantined BIGINT,
    skipped BIGINT,
    events_no_longer_in_file BIGINT,
    notes VARCHAR[],
    PRIMARY KEY (channel, source_file, file_hash)
);
CREATE TABLE IF NOT EXISTS file_fingerprints (
    source_file VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    file_hash VARCHAR NOT NULL,
    PRIMARY KEY (source_file, size_bytes, mtime_ns)
);
CREATE TABLE IF NOT EXISTS message_statuses (
    message_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    status_at TIMESTAMP,
    recipient_e164 VARCHAR NOT NULL,
    pricing_category VARCHAR,
    error_codes BIGINT[],
    source_file VARCHAR NOT NULL,
    source_line BIGINT,
    source_pointer VARCHAR,
    ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (message_id, status)
);
CREATE TABLE IF NOT EXISTS consent_notices (
    notice_version VARCHAR PRIMARY KEY,
    notice_text VARCHAR NOT NULL,
    business_name VARCHAR,
    channels VARCHAR[],
    purposes VARCHAR[],
    frequency VARCHAR,
    opt_out_instructions VARCHAR,
    privacy_policy_url VARCHAR,
    valid_from TIMESTAMP,
    valid_until TIMESTAMP,
    names_business BOOLEAN,
    mentions_whatsapp BOOLEAN,
    says_how_to_opt_out BOOLEAN,
    content_hash VARCHAR NOT NULL,
    source_file VARCHAR,
    loaded_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS phone_cache (
    phone_raw VARCHAR NOT NULL,
    country_hint VARCHAR NOT NULL,
    metadata_version VARCHAR NOT NULL,
    phone_e164 VARCHAR,
    phone_region VARCHAR,
    phone_type VARCHAR,
    invalid_reason VARCHAR,
    PRIMARY KEY (phone_raw, country_hint, metadata_version)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    mode VARCHAR NOT NULL,
    as_of TIMESTAMP NOT NULL,
    started_at TIMESTAMP NOT NULL,
    published_at TIMESTAMP,
    finished_at TIMESTAMP,
    status VARCHAR NOT NULL,
    files_seen BIGINT,
    files_read BIGINT,
    rows_read BIGINT,
    events BIGINT,
    new_events BIGINT,
    quarantined BIGINT,
    skipped BIGINT,
    contacts_reconciled BIGINT,
    checks_failed VARCHAR[],
    check_outcomes JSON,
    retention JSON,
    per_channel JSON,
    step_seconds JSON
);
"""



def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_DDL)
    con.execute(PRIVACY_DDL)


def known_files(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(channel, content hash) of every file already ingested."""
    return {tuple(r) for r in con.execute("SELECT DISTINCT channel, file_hash FROM source_files").fetchall()}


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
    ):
        # A connection only while reading or writing the cache: parsing holds no lock.
        self.connect = connect
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
        )
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
        missing = wanted.join(cached, on=["phone_raw", "country_hint"], how="anti", maintain_order="left")
        missing_pairs = [(raw, hint or None) for raw, hint in missing.iter_rows()]
        self.hits, self.misses = cached.height, len(missing_pairs)
        fresh = normalise_frame(missing_pairs, workers=self.workers, progress=self.progress)
        if fresh.height:
            with self.connect() as con:
                con.register("fresh_phones", fresh.with_columns(metadata_version=pl.lit(METADATA_VERSION)))
                con.execute(
                    "INSERT OR IGNORE INTO phone_cache BY NAME SELECT * FROM fresh_phones"
                )
                con.unregister("fresh_phones")
        return PhoneBook(pl.concat([cached.cast(PHONE_BOOK_SCHEMA), fresh], how="vertical"))


STAGING_SLICE_ROWS = 250_000


def write_staging(
    con: duckdb.DuckDBPyConnection,
    staged: StagedExports,
    *,
    notices: NoticeFolder | None = None,
    run_id: str,
    mode: str,
    as_of: datetime,
    started_at: datetime,
) -> None:
    """Replace the staging tables with this run's reading, in one transaction."""
    files = pl.DataFrame(
        [
            {**{k: v for k, v in asdict(f).items() if k != "notes"}, "notes": list(f.notes)}
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
            "ignored": [staged.ignored], "step_seconds": [json.dumps(staged.seconds)],
        },
        schema={
            "run_id": pl.Utf8, "mode": pl.Utf8, "as_of": pl.Datetime("us"), "started_at": pl.Datetime("us"),
            "ignored": pl.List(pl.Utf8), "step_seconds": pl.Utf8,
        },
    )
    frames = {
        "stg_consent_events": staged.events,
        "stg_quarantine": staged.quarantine,
        "stg_skipped": staged.skipped.rename({"quarantine_id": "skipped_id"}),
        "stg_message_statuses": staged.sends,
        "stg_notices": (notices or NoticeFolder([], [])).frame(),
        "stg_notices_refused": pl.DataFrame(
            (notices or NoticeFolder([], [])).refused, schema={"source_file": pl.Utf8, "reason": pl.Utf8}, orient="row"
        ),
        "stg_source_files": files,
        "stg_run": run,
    }
    with transaction(con):
        for table, frame in frames.items():
            # In slices: each is converted to Arrow on its own, so a large run is never copied whole.
            for n, part in enumerate(frame.iter_slices(STAGING_SLICE_ROWS) if frame.height else [frame]):
                con.register("frame", part)
                if n == 0:
                    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM frame")
                else:
                    con.execute(f"INSERT INTO {table} SELECT * FROM frame")
                con.unregister("frame")
    crash_point("after_staging")


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
) -> StagedExports:
    """Read the exports not seen before into the `stg_*` tables (the first half of a run).

    Holds a warehouse connection only to look up known files and cached
    numbers and to write the staging tables: reading and parsing hold no lock.
    """
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)
    with connect() as con:
        known = known_files(con)
        # A full run hashes every file again; an incremental one trusts unchanged size and mtime.
        fingerprints = {} if mode == "full" else {
            (f, size, mtime): h
            for f, size, mtime, h in con.execute("SELECT source_file, size_bytes, mtime_ns, file_hash FROM file_fingerprints").fetchall()
        }
    cache = PhoneCache(connect, workers=workers, progress=progress)
    staged = stage_exports(
        exports_dir,
        policy=policy,
        channels=channels,
        known_hashes=known,
        resolve_phones=cache.resolve,
        ingested_at=as_of,
        run_id=run_id,
        progress=progress,
        fingerprints=fingerprints,
    )
    staged.seconds["phone_cache_hits"] = cache.hits
    staged.seconds["phone_cache_misses"] = cache.misses
    notices = read_notices(exports_dir)
    with connect() as con:
        write_staging(con, staged, notices=notices, run_id=run_id, mode=mode, as_of=as_of, started_at=started_at)
    return staged


def _touched_contacts_sql(full: bool) -> str:
    if full:
        return "SELECT DISTINCT phone_e164 FROM consent_events"
    # New events, plus contacts whose status can change with time alone:
    # a pending request may expire, a consent may pass its validity, and a
    # future-dated opt-in may stop being in the future.
    return """
        SELECT phone_e164 FROM stg_consent_events
        UNION SELECT phone_e164 FROM consent_status WHERE status = 'pending'
        UNION SELECT phone_e164 FROM consent_status WHERE status = 'opted_in' AND $validity
        UNION SELECT phone_e164 FROM consent_violations WHERE rule = 'future_date'
        -- a notice registered now changes how earlier opt-ins that name it are judged
        UNION SELECT phone_e164 FROM consent_events
              WHERE notice_version IN (SELECT notice_version FROM consent_notices WHERE run_id = $run_id)
    """


RECONCILE_RANGE_EVENTS = 250_000


def _contact_ranges(con: duckdb.DuckDBPyConnection, events_per_range: int) -> list[tuple[str, str, int]]:
    """(first number, last number, contacts) of consecutive ranges of touched contacts,
    each holding about `events_per_range` ledger events (a contact is never split)."""
    counts = con.execute(
        """
        SELECT phone_e164, count(*) FROM consent_events
        WHERE phone_e164 IN (SELECT phone_e164 FROM stg_touched)
        GROUP BY phone_e164 ORDER BY phone_e164
        """
    ).fetchall()
    ranges: list[tuple[str, str, int]] = []
    start, events, contacts = None, 0, 0
    for phone, n in counts:
        if start is None:
            start = phone
        events += n
        contacts += 1
        if events >= events_per_range:
            ranges.append((start, phone, contacts))
            start, events, contacts = None, 0, 0
    if start is not None:
        ranges.append((start, counts[-1][0], contacts))
    return ranges


@bulk_phase()
def publish(
    con: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    salt: str,
    full: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Append the staged run to the ledger and recompute affected statuses, atomically.

    Returns the run summary written to `runs`.
    """
    run_id, mode, as_of, started_at, ignored, step_seconds = con.execute(
        "SELECT run_id, mode, as_of, started_at, ignored, step_seconds FROM stg_run"
    ).fetchone()
    seconds = json.loads(step_seconds)
    with transaction(con):
        t0 = time.perf_counter()
        # Erased numbers stay out unless a new consent dated after the erasure arrives.
        suppressed = suppress_staged(con, salt)
        new_events = con.execute(
            """
            INSERT INTO consent_events
            -- one row per new event id: the first by file, line, pointer (an aggregate of row ids,
            -- not a window sorting whole rows: ~2 s less at 1M events)
            SELECT s.* FROM stg_consent_events s
            WHERE s.rowid IN (
                SELECT arg_min(rowid, (source_file, source_line, source_pointer))
                FROM stg_consent_events ANTI JOIN consent_events USING (event_id)
                GROUP BY event_id
            )
            """
        ).fetchone()[0]
        con.execute("INSERT OR IGNORE INTO quarantine SELECT * FROM stg_quarantine")
        con.execute("INSERT OR IGNORE INTO skipped_items SELECT * FROM stg_skipped")
        con.execute(
            """
            INSERT OR IGNORE INTO message_statuses
            SELECT * EXCLUDE (rank) FROM (
                SELECT *, row_number() OVER (PARTITION BY message_id, status ORDER BY source_file, source_line) AS rank
                FROM stg_message_statuses
            ) WHERE rank = 1
            """
        )
        per_file_new = dict(
            con.execute(
                "SELECT source_file, count(*) FROM consent_events WHERE run_id = ? GROUP BY source_file", [run_id]
            ).fetchall()
        )
        # A changed file (same name, new content): which events of its earlier versions it no longer holds.
        removed = dict(
            con.execute(
                """
                SELECT f.source_file, count(e.event_id)
                FROM stg_source_files f
                JOIN consent_events e ON e.source_file = f.source_file AND e.channel = f.channel AND e.file_hash <> f.file_hash
                WHERE f.state = 'new'
                  AND e.event_id NOT IN (SELECT event_id FROM stg_consent_events WHERE source_file = f.source_file)
                GROUP BY f.source_file
                """
            ).fetchall()
        )
        con.execute(
            """
            INSERT INTO source_files
            SELECT channel, source_file, file_hash, size_bytes, $run_id, $run_id, rows_read, events,
                   NULL, quarantined, skipped, NULL, notes
            FROM stg_source_files WHERE state <> 'unsupported'
            ON CONFLICT (channel, source_file, file_hash) DO UPDATE SET last_seen_run = excluded.last_seen_run
            """,
            {"run_id": run_id},
        )
        con.execute(
            "INSERT OR REPLACE INTO file_fingerprints "
            "SELECT source_file, size_bytes, mtime_ns, file_hash FROM stg_source_files WHERE state <> 'unsupported'"
        )
        for source_file, count in per_file_new.items():
            con.execute(
                "UPDATE source_files SET new_events = ? WHERE source_file = ? AND first_seen_run = ?",
                [count, source_file, run_id],
            )
        for source_file, count in removed.items():
            con.execute(
                "UPDATE source_files SET events_no_longer_in_file = ?, "
                "notes = list_append(notes, 'content changed: ' || ? || ' earlier events no longer in the file') "
                "WHERE source_file = ? AND first_seen_run = ?",
                [count, count, source_file, run_id],
            )
        seconds["ledger"] = time.perf_counter() - t0
        crash_point("publish_after_ledger")

        # The notices registry is append-only: a changed version is refused, never overwritten.
        con.execute(
            """
            INSERT INTO stg_notices_refused
            SELECT s.source_file, 'version ' || s.notice_version || ' is already registered with other content '
                   || '(from ' || n.source_file || '); evidence must not change after the fact'
            FROM stg_notices s JOIN consent_notices n USING (notice_version)
            WHERE s.content_hash <> n.content_hash
            """
        )
        con.execute(
            "INSERT INTO consent_notices SELECT s.*, $as_of, $run_id FROM stg_notices s ANTI JOIN consent_notices USING (notice_version)",
            {"as_of": as_of, "run_id": run_id},
        )
        new_notices = con.execute("SELECT notice_version FROM consent_notices WHERE run_id = ?", [run_id]).fetchall()
        notices = terms_from_rows(
            con.execute(
                "SELECT notice_version, purposes, valid_from, valid_until, names_business, mentions_whatsapp, "
                "says_how_to_opt_out FROM consent_notices"
            ).fetchall()
        )

        t0 = time.perf_counter()
        touched_sql = _touched_contacts_sql(full).replace(
            "$validity", "TRUE" if policy.consent_validity_days is not None else "FALSE"
        )
        # Kept as a staging table: the status check validates the rows this run decided.
        con.execute(f"CREATE OR REPLACE TABLE stg_touched AS {touched_sql}", {"run_id": run_id} if "$run_id" in touched_sql else {})
        where = "" if full else " WHERE phone_e164 IN (SELECT phone_e164 FROM stg_touched)"
        for table in ("consent_status", "consent_violations", "consent_status_history"):
            con.execute(f"DELETE FROM {table}{where}")
        # Contacts are reconciled in ranges of about RECONCILE_RANGE_EVENTS events (by number),
        # each read, decided and written before the next: memory holds one range, not the ledger.
        ranges = _contact_ranges(con, RECONCILE_RANGE_EVENTS)
        done = 0
        for low, high, contacts_in_range in ranges:
            history = con.execute(
                f"SELECT {', '.join(INPUT_COLUMNS)} FROM consent_events "
                "WHERE phone_e164 BETWEEN ? AND ? AND phone_e164 IN (SELECT phone_e164 FROM stg_touched)",
                [low, high],
            ).pl()
            derived = reconcile(history, policy, as_of, notices=notices)
            del history
            for table, frame, schema in zip(
                ("consent_status", "consent_violations", "consent_status_history"),
                derived,
                (STATUS_SCHEMA, VIOLATION_SCHEMA, HISTORY_SCHEMA),
            ):
                con.register("derived", frame.select(list(schema)))
                con.execute(f"INSERT INTO {table} SELECT * FROM derived")
                con.unregister("derived")
            done += contacts_in_range
            if progress:
                progress("reconciling contacts", done, sum(r[2] for r in ranges))
        contacts = con.execute("SELECT count(*) FROM stg_touched").fetchone()[0]
        seconds["reconcile"] = time.perf_counter() - t0
        crash_point("publish_after_status")

        per_channel = {
            channel: dict(zip(("files_seen", "files_read", "rows_read", "events", "quarantined", "skipped"), counts))
            for channel, *counts in con.execute(
                """
                SELECT channel, count(*), count(*) FILTER (WHERE state = 'new'), sum(rows_read), sum(events),
                       sum(quarantined), sum(skipped)
                FROM stg_source_files GROUP BY channel ORDER BY channel
                """
            ).fetchall()
        }
        for channel, count in con.execute(
            "SELECT channel, count(*) FROM consent_events WHERE run_id = ? GROUP BY channel", [run_id]
        ).fetchall():
            per_channel.setdefault(channel, {})["new_events"] = count
        totals = {
            key: sum(int(c.get(key) or 0) for c in per_channel.values())
            for key in ("files_seen", "files_read", "rows_read", "events", "quarantined", "skipped")
        }
        summary = {
            "run_id": run_id,
            "mode": mode,
            "as_of": as_of.isoformat(sep=" "),
            **totals,
            "new_events": int(new_events),
            "contacts_reconciled": int(contacts),
            "suppressed_events": int(suppressed),
            "new_notices": [v for (v,) in new_notices],
            "notices_refused": [
                {"source_file": f, "reason": r}
                for f, r in con.execute("SELECT source_file, reason FROM stg_notices_refused ORDER BY ALL").fetchall()
            ],
            "per_channel": per_channel,
            "ignored": list(ignored or []),
            "step_seconds": seconds,
        }
        con.execute(
            """
            INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, now()::TIMESTAMP, NULL, 'published', ?, ?, ?, ?, ?, ?, ?, ?, [], NULL, NULL, ?, ?)
            """,
            [
                run_id, mode, as_of, started_at, totals["files_seen"], totals["files_read"], totals["rows_read"],
                totals["events"], int(new_events), totals["quarantined"], totals["skipped"], int(contacts),
                json.dumps(per_channel), json.dumps(seconds),
            ],
        )
    crash_point("after_publish")
    return summary


def finish_run(
    con: duckdb.DuckDBPyConnection, run_id: str, status: str, checks_failed: list[str], check_outcomes: dict | None = None
) -> None:
    con.execute(
        "UPDATE runs SET finished_at = now()::TIMESTAMP, status = ?, checks_failed = ?, check_outcomes = ? WHERE run_id = ?",
        [status, checks_failed, json.dumps(check_outcomes or {}), run_id],
    )


def run_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The run's row of `runs` with its file notes: counts and names only, no phone numbers."""
    row = con.execute(
        "SELECT run_id, mode, as_of, status, files_seen, files_read, rows_read, events, new_events, quarantined, "
        "skipped, contacts_reconciled, checks_failed, per_channel, step_seconds FROM runs WHERE run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        return {"run_id": run_id, "status": "failed", "published": False}
    keys = ("run_id", "mode", "as_of", "status", "files_seen", "files_read", "rows_read", "events", "new_events",
            "quarantined", "skipped", "contacts_reconciled", "checks_failed", "per_channel", "step_seconds")
    summary = dict(zip(keys, row))
    summary["as_of"] = str(summary["as_of"])
    summary["per_channel"] = json.loads(summary["per_channel"] or "{}")
    summary["step_seconds"] = json.loads(summary["step_seconds"] or "{}")
    summary["published"] = True
    summary["file_notes"] = [
        {"channel": c, "source_file": f, "notes": list(n)}
        for c, f, n in con.execute(
            "SELECT channel, source_file, notes FROM source_files WHERE last_seen_run = ? AND len(notes) > 0 ORDER BY ALL",
            [run_id],
        ).fetchall()
    ]
    return summary
