"""Staging: a run's first half. The exports not seen before are read into the `stg_*` tables of
the schema `staging` (never `main`, which holds what is published), batch by batch, with their
numbers normalised through the warehouse's phone cache; `stg_run`, written last, marks the staged
run complete (`publish` reads it back as `StagedRun`).

Plain Python over DuckDB connections (opened by the Dagster `warehouse` resource or by tests).
Nothing here touches a published table: a run that dies while staging leaves the warehouse as
it was, and the next run stages afresh.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ContextManager

import duckdb
import polars as pl

from consent.storage.db import transaction, write_frame
from consent.storage.faults import crash_point
from consent.reading.ingest import Pair, Progress, StagedExports, StagedFrames, stage_exports
from consent.reading.notices import NoticeFolder, read_notices
from consent.domain.phones import METADATA_VERSION, PHONE_BOOK_SCHEMA, PhoneBook, normalise_frame
from consent.domain.policy import ChannelsFile, Policy
from consent.domain.redact import redact
from consent.domain.schema import EVENT_SCHEMA, LINK_SCHEMA, QUARANTINE_SCHEMA, SEND_SCHEMA, SKIPPED_SCHEMA


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
        a salted hash, never as a cached spelling (hashed by the connection's `salted_hash`, only
        when some number was erased)."""
        if not con.execute("SELECT count(*) FROM suppression_list").fetchone()[0]:
            return fresh
        con.register("fresh_numbers", fresh.select(pl.col("phone_e164").drop_nulls().unique()))
        hit = [n for (n,) in con.execute(
            "SELECT phone_e164 FROM fresh_numbers WHERE salted_hash(phone_e164) IN (SELECT phone_hash FROM suppression_list)"
        ).fetchall()]
        con.unregister("fresh_numbers")
        return fresh.filter(~pl.col("phone_e164").is_in(hit).fill_null(False)) if hit else fresh


STAGING_SLICE_ROWS = 250_000
# The staging tables a run's batches append to (schema of each: consent/domain/schema.py).
BATCH_TABLES = {
    "staging.stg_consent_events": ("events", EVENT_SCHEMA),
    "staging.stg_quarantine": ("quarantine", QUARANTINE_SCHEMA),
    "staging.stg_skipped": ("skipped", SKIPPED_SCHEMA),
    "staging.stg_message_statuses": ("sends", SEND_SCHEMA),
    "staging.stg_identifier_links": ("links", LINK_SCHEMA),
}


def begin_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Empty staging tables for a new run (and no `stg_run` row: a half-staged run cannot be published)."""
    with transaction(con):
        for table, (_, schema) in BATCH_TABLES.items():
            _write_frame(con, table, _staging_frame(table, pl.DataFrame(schema=schema)), replace=True)
        con.execute("DROP TABLE IF EXISTS staging.stg_run")


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
        "staging.stg_notices": notices.frame(),
        "staging.stg_notices_refused": pl.DataFrame(
            notices.refused, schema={"source_file": pl.Utf8, "reason": pl.Utf8}, orient="row"
        ),
        "staging.stg_source_files": files,
        "staging.stg_run": run,
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
    return frame.rename({"quarantine_id": "skipped_id"}) if table == "staging.stg_skipped" else frame


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

    cache = PhoneCache(connect, workers=workers, progress=progress)
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
            "SELECT run_id, mode, as_of, started_at, ignored, step_seconds FROM staging.stg_run"
        ).fetchone()
        return cls(run_id, mode, as_of, started_at, list(ignored or []), json.loads(step_seconds))

