"""Reading an exports folder into staged events, quarantine and skipped items.

Plain Python: finds the files, hashes them, skips those already ingested (by
content hash), reads the rest with their channel's adapter, normalises every
distinct phone spelling once (through a caller-supplied cache), and builds the
canonical frames. Nothing here writes to the warehouse.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import polars as pl

from consent.channels import Adapter, FileRead, adapter_for
from consent.columnar import build_file, phone_pairs
from consent.events import (
    EVENT_SCHEMA,
    LINK_SCHEMA,
    QUARANTINE_SCHEMA,
    SEND_SCHEMA,
    SKIPPED_SCHEMA,
    BuiltBatch,
    FileContext,
    SourceRow,
)
from consent.bulk import bulk_phase
from consent.faults import crash_point
from consent.phones import PhoneBook
from consent.policy import ChannelsFile, Policy

CONFIG_FILES = {"channels.yaml", "policy.yaml", "businesses.yaml"}
_DIGITS = re.compile(r"\d{5,}")
Pair = tuple[str, str | None]
PhoneResolver = Callable[[list[Pair]], PhoneBook]
Progress = Callable[[str, int, int], None]


@dataclass
class ExportFile:
    channel: str
    source_file: str  # path relative to the exports folder, with "/"
    path: Path
    size_bytes: int
    file_hash: str
    mtime_ns: int = 0


@dataclass
class FileStats:
    channel: str
    source_file: str
    file_hash: str
    size_bytes: int
    state: str  # new | unchanged | unsupported
    mtime_ns: int = 0
    rows_read: int = 0
    events: int = 0
    quarantined: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def conserved(self) -> bool:
        return self.rows_read == self.events + self.quarantined + self.skipped


@dataclass
class StagedExports:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    skipped: pl.DataFrame
    sends: pl.DataFrame
    links: pl.DataFrame
    files: list[FileStats]
    ignored: list[str]
    seconds: dict[str, float]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Fingerprint = tuple[str, int, int]  # (source_file, size in bytes, modification time in ns)


def discover(exports_dir: Path, fingerprints: dict[Fingerprint, str] | None = None) -> tuple[list[ExportFile], list[str]]:
    """Export files (one folder per channel) and what was ignored, sorted.

    A file whose path, size and modification time match a fingerprint of an
    earlier run keeps that run's content hash and is not read again to hash
    it (exports accumulate: a night should not re-read every old file).
    """
    fingerprints = fingerprints or {}
    files: list[ExportFile] = []
    ignored: list[str] = []
    for channel_dir in sorted(p for p in exports_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if channel_dir.name == "notices":
            continue
        for path in sorted(p for p in channel_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            relative = path.relative_to(exports_dir).as_posix()
            stat = path.stat()
            known = fingerprints.get((relative, stat.st_size, stat.st_mtime_ns))
            files.append(
                ExportFile(channel_dir.name, relative, path, stat.st_size, known or file_hash(path), stat.st_mtime_ns)
            )
    for path in sorted(p for p in exports_dir.iterdir() if p.is_file()):
        if path.name not in CONFIG_FILES and not path.name.startswith("."):
            ignored.append(f"{path.name}: not in a channel folder")
    return files, ignored


@bulk_phase()
def stage_exports(
    exports_dir: Path,
    *,
    policy: Policy,
    channels: ChannelsFile,
    known_hashes: set[tuple[str, str]],
    resolve_phones: PhoneResolver,
    ingested_at: datetime,
    run_id: str,
    progress: Progress | None = None,
    fingerprints: dict[Fingerprint, str] | None = None,
) -> StagedExports:
    """Read every export not ingested before into canonical frames."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    found, ignored = discover(exports_dir, fingerprints)
    stats: list[FileStats] = []
    reads = []
    for number, export in enumerate(found, start=1):
        stat = FileStats(export.channel, export.source_file, export.file_hash, export.size_bytes, "new", export.mtime_ns)
        stats.append(stat)
        adapter = adapter_for(export.path)
        if (export.channel, export.file_hash) in known_hashes:
            stat.state = "unchanged"
        elif adapter is None:
            stat.state = "unsupported"
            stat.notes.append(f"unsupported file type {export.path.suffix or '(none)'}: not read")
        else:
            config = channels.for_channel(export.channel)
            ctx = FileContext(
                channel=export.channel,
                source_file=export.source_file,
                file_hash=export.file_hash,
                timezone=config.timezone,
                default_region=config.default_region,
                date_format=config.date_format,
                business=channels.business_of(export.channel),
                number_businesses=channels.number_businesses(),
            )
            read = read_file(adapter, export, ctx, config, policy)
            stat.rows_read = read.row_count
            stat.notes.extend(read.notes)
            reads.append((stat, ctx, read))
        if progress:
            progress("reading files", number, len(found))
    seconds["read"] = time.perf_counter() - started
    crash_point("after_reading")

    started = time.perf_counter()
    pairs: set[Pair] = set()
    for n, (stat, ctx, read) in enumerate(reads):
        try:
            pairs.update(phone_pairs(read, ctx))
        except FILE_FAILURES as exc:  # a row the build could not key: that file only
            failed = unreadable_file(Path(exports_dir) / stat.source_file, exc, "could not be read",
                                     rows_read=max(read.row_count, 1))
            reads[n] = (stat, ctx, failed)
            stat.rows_read = failed.row_count
            stat.notes.extend(failed.notes)
    resolved = resolve_phones(sorted(pairs, key=lambda p: (p[0], p[1] or "")))
    seconds["normalise"] = time.perf_counter() - started
    crash_point("after_normalising")

    started = time.perf_counter()
    frames: dict[str, list[pl.DataFrame]] = {"events": [], "quarantine": [], "skipped": [], "sends": [], "links": []}
    done = 0
    total = sum(stat.rows_read for stat, _, _ in reads)
    for n, (stat, ctx, read) in enumerate(reads):
        built = build_one_file(read, ctx, resolved, policy.purposes, ingested_at, run_id, notes=stat.notes)
        reads[n] = (stat, ctx, None)  # a file's rows are not needed once built
        stat.events, stat.quarantined, stat.skipped = built.events.height, built.quarantine.height, built.skipped.height
        frames["events"].append(built.events)
        frames["quarantine"].append(built.quarantine)
        frames["skipped"].append(built.skipped)
        frames["sends"].append(built.sends)
        frames["links"].append(built.links)
        done += stat.rows_read
        if progress:
            progress("building events", done, total)
    seconds["build"] = time.perf_counter() - started

    return StagedExports(
        events=_concat(frames["events"], EVENT_SCHEMA),
        quarantine=_concat(frames["quarantine"], QUARANTINE_SCHEMA),
        skipped=_concat(frames["skipped"], SKIPPED_SCHEMA),
        sends=_concat(frames["sends"], SEND_SCHEMA),
        links=_concat(frames["links"], LINK_SCHEMA),
        files=stats,
        ignored=ignored,
        seconds=seconds,
    )


# Whatever one file does to its reader, the night goes on: the file becomes one quarantined row.
# (RecursionError and MemoryError are Exceptions too; KeyboardInterrupt and SystemExit are not.)
FILE_FAILURES = Exception
HEAD_BYTES = 4096


def read_file(adapter: Adapter, export: ExportFile, ctx: FileContext, config, policy: Policy) -> FileRead:
    """The file's rows; a file its adapter cannot read at all is one quarantined row with the reason."""
    try:
        return adapter(export.path.read_bytes(), ctx, config, policy)
    except FILE_FAILURES as exc:
        return unreadable_file(export.path, exc, "could not be read")


def build_one_file(
    read: FileRead, ctx: FileContext, resolved: PhoneBook, purposes, ingested_at, run_id, *, notes: list[str]
) -> BuiltBatch:
    """Canonical frames of one file; a file whose rows cannot be built is quarantined whole."""
    try:
        return build_file(read, ctx, resolved, purposes, ingested_at, run_id)
    except FILE_FAILURES as exc:
        failed = unreadable_file(None, exc, "could not be built into events", rows_read=max(read.row_count, 1))
        notes.extend(failed.notes)
        return build_file(failed, ctx, resolved, purposes, ingested_at, run_id)


def unreadable_file(path: Path | None, exc: BaseException, what: str, rows_read: int = 1) -> FileRead:
    """One error row for a whole file (its first bytes kept as the raw row, like any quarantined row).

    `rows_read` rows are accounted for: the first carries the reason, the others point to it,
    so rows read = quarantined still holds for the file."""
    message = mask_numbers(str(exc))[:200]
    reason = f"file {what} ({type(exc).__name__}{': ' + message if message else ''}): nothing of it was ingested"
    head = None
    if path is not None:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES).decode("utf-8", "replace")
    rows = [SourceRow(line=1, raw=head, identity="", error=reason)]
    rows += [SourceRow(line=n, raw=None, identity="", error="file refused: see line 1") for n in range(2, rows_read + 1)]
    return FileRead(rows=rows, notes=[reason])


def mask_numbers(text: str) -> str:
    """An error message may quote a row: runs of digits are masked, so no number leaves in it."""
    return _DIGITS.sub("#", text)


def _concat(frames: Iterable[pl.DataFrame], schema: dict) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=schema)
