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
from typing import Callable, Iterable, Iterator

import polars as pl

from consent.channels import Adapter, FileRead, adapter_for
from consent.channels.whatsapp_webhook import WholeFile
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
class StagedFrames:
    """Canonical frames of one batch of files (what `stage_exports` hands its sink)."""

    events: pl.DataFrame
    quarantine: pl.DataFrame
    skipped: pl.DataFrame
    sends: pl.DataFrame
    links: pl.DataFrame


@dataclass
class StagedExports:
    """What a run read: per-file counts, totals, and the time of each step (the frames went to the sink)."""

    files: list[FileStats]
    ignored: list[str]
    seconds: dict[str, float]
    events: int = 0
    quarantined: int = 0
    skipped: int = 0


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


# Files of up to STREAM_BYTES are read whole in batches of about this many bytes (their numbers
# resolved with one cache lookup); a larger file is read part by part. Memory holds one batch or
# one part, and FLUSH_ROWS built rows, whatever the night's size.
BATCH_BYTES = 64 * 1024 * 1024
# Built frames are handed to the sink once about this many rows wait.
FLUSH_ROWS = 250_000


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
    sink: Callable[[StagedFrames], None],
    retract: Callable[[str], None],
    progress: Progress | None = None,
    fingerprints: dict[Fingerprint, str] | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> StagedExports:
    """Read every export not ingested before into canonical frames, handed to `sink` about
    FLUSH_ROWS rows at a time. A file that starts over (it failed after some of its parts were
    handed on) has its rows taken back with `retract(source_file)` first."""
    seconds = {"read": 0.0, "normalise": 0.0, "build": 0.0}
    started = time.perf_counter()
    found, ignored = discover(exports_dir, fingerprints)
    seconds["read"] += time.perf_counter() - started
    stats: list[FileStats] = []
    batches: list[list[tuple[FileStats, ExportFile]]] = [[]]
    size = 0
    for export in found:
        stat = FileStats(export.channel, export.source_file, export.file_hash, export.size_bytes, "new", export.mtime_ns)
        stats.append(stat)
        if (export.channel, export.file_hash) in known_hashes:
            stat.state = "unchanged"
        elif adapter_for(export.path) is None:
            stat.state = "unsupported"
            stat.notes.append(f"unsupported file type {export.path.suffix or '(none)'}: not read")
        else:
            if batches[-1] and size + export.size_bytes > batch_bytes:
                batches.append([])
                size = 0
            batches[-1].append((stat, export))
            size += export.size_bytes
    staged = StagedExports(files=stats, ignored=ignored, seconds=seconds)
    counted = {"files": sum(s.state != "new" for s in stats), "read": 0, "built": 0}
    if progress and counted["files"]:
        progress("reading files", counted["files"], len(found))
    out = _Outbox(sink, retract, FLUSH_ROWS)
    for batch in batches:
        _stage_batch(batch, policy, channels, resolve_phones, ingested_at, run_id, out, progress,
                     staged, counted, len(found))
    out.flush()
    read = [s for s in stats if s.state == "new"]
    staged.events = sum(s.events for s in read)
    staged.quarantined = sum(s.quarantined for s in read)
    staged.skipped = sum(s.skipped for s in read)
    return staged


_FIELDS = {"events": EVENT_SCHEMA, "quarantine": QUARANTINE_SCHEMA, "skipped": SKIPPED_SCHEMA,
           "sends": SEND_SCHEMA, "links": LINK_SCHEMA}


class _Outbox:
    """Built frames on their way to the sink, `flush_rows` rows at a time. A file that starts over
    is dropped: its waiting frames here, and what was already handed on, through `retract`."""

    def __init__(self, sink: Callable[[StagedFrames], None], retract: Callable[[str], None], flush_rows: int):
        self.sink, self.retract, self.flush_rows = sink, retract, flush_rows
        self.waiting: list[tuple[str, BuiltBatch]] = []
        self.rows = 0
        self.handed_on: set[str] = set()

    def add(self, source_file: str, built: BuiltBatch) -> None:
        self.waiting.append((source_file, built))
        self.rows += sum(getattr(built, name).height for name in _FIELDS)
        if self.rows >= self.flush_rows:
            self.flush()

    def drop(self, source_file: str) -> None:
        self.waiting = [(f, b) for f, b in self.waiting if f != source_file]
        self.rows = sum(getattr(b, name).height for _, b in self.waiting for name in _FIELDS)
        if source_file in self.handed_on:
            self.retract(source_file)
            self.handed_on.discard(source_file)

    def flush(self) -> None:
        if not self.waiting:
            return
        frames = StagedFrames(**{
            name: _concat([getattr(b, name) for _, b in self.waiting], schema) for name, schema in _FIELDS.items()
        })
        self.handed_on.update(f for f, _ in self.waiting)
        self.waiting, self.rows = [], 0
        self.sink(frames)


def _stage_batch(batch, policy, channels, resolve_phones, ingested_at, run_id, out: _Outbox, progress,
                 staged: StagedExports, counted: dict[str, int], files_found: int) -> None:
    """Read, normalise and build one batch of files into `out`."""
    contexts = []
    for stat, export in batch:
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
        contexts.append((stat, export, ctx, config))
    # Files below STREAM_BYTES are read whole and their numbers resolved together (one cache lookup
    # for the batch); a larger file is read, resolved and built part by part.
    small = [c for c in contexts if not _streamed(c[1])]
    reads: dict[str, list[FileRead]] = {}
    started = time.perf_counter()
    for stat, export, ctx, config in small:
        reads[export.source_file] = _read_whole(export, ctx, config, policy)
    staged.seconds["read"] += time.perf_counter() - started
    started = time.perf_counter()
    pairs: set[Pair] = set()
    for stat, export, ctx, config in small:
        for read in reads[export.source_file]:
            try:
                pairs.update(phone_pairs(read, ctx))
            except FILE_FAILURES:  # _stage_file quarantines that file
                pass
    book = resolve_phones(sorted(pairs, key=lambda p: (p[0], p[1] or ""))) if small else None
    staged.seconds["normalise"] += time.perf_counter() - started
    for stat, export, ctx, config in contexts:
        if export.source_file in reads:
            parts, resolve = iter(reads.pop(export.source_file)), (lambda _pairs: book)
        else:
            parts, resolve = _parts(export, ctx, config, policy), resolve_phones
        _stage_file(stat, export, ctx, parts, policy, resolve, ingested_at, run_id, staged.seconds, progress,
                    counted, out)
        counted["files"] += 1
        if progress:
            progress("reading files", counted["files"], files_found)
    if progress and counted["read"]:
        progress("building events", counted["built"], counted["read"])


def _stage_file(stat: FileStats, export: ExportFile, ctx: FileContext, parts: Iterator[FileRead], policy,
                resolve_phones, ingested_at, run_id, seconds: dict[str, float], progress,
                counted: dict[str, int], out: _Outbox) -> None:
    """One file's canonical frames, built part by part into `out` (a large file is read in parts, so
    memory holds one part's rows). A file that fails anywhere is quarantined whole: the parts
    built before are dropped."""

    def start_over() -> None:
        out.drop(export.source_file)
        stat.rows_read, stat.events, stat.quarantined, stat.skipped = 0, 0, 0, 0
        stat.notes[:] = []

    def add(built: BuiltBatch) -> None:
        out.add(export.source_file, built)
        stat.events += built.events.height
        stat.quarantined += built.quarantine.height
        stat.skipped += built.skipped.height

    while True:
        started = time.perf_counter()
        try:
            read = next(parts)
        except StopIteration:
            break
        except WholeFile as whole:  # the document is malformed: the file is its reference read
            start_over()
            parts = iter([whole.read])
            continue
        except FILE_FAILURES as exc:
            start_over()
            parts = iter([unreadable_file(export.path, exc, "could not be read")])
            continue
        finally:
            seconds["read"] += time.perf_counter() - started
        crash_point("after_reading")
        stat.rows_read += read.row_count
        stat.notes.extend(read.notes)

        started = time.perf_counter()
        try:
            pairs = phone_pairs(read, ctx)
        except FILE_FAILURES as exc:  # a row the build could not key: the whole file
            rows_read, notes = max(stat.rows_read, 1), list(stat.notes)
            start_over()
            parts = iter([])
            read = unreadable_file(export.path, exc, "could not be read", rows_read=rows_read)
            stat.rows_read = read.row_count
            stat.notes[:] = [*notes, *read.notes]
            pairs = set()
        resolved = resolve_phones(sorted(pairs, key=lambda p: (p[0], p[1] or "")))
        seconds["normalise"] += time.perf_counter() - started
        crash_point("after_normalising")

        started = time.perf_counter()
        try:
            add(build_file(read, ctx, resolved, policy.purposes, ingested_at, run_id))
        except FILE_FAILURES as exc:
            failed = unreadable_file(None, exc, "could not be built into events", rows_read=max(stat.rows_read, 1))
            rows_read, notes = stat.rows_read, [*stat.notes, *failed.notes]
            start_over()
            stat.rows_read, stat.notes[:] = rows_read, notes
            add(build_file(failed, ctx, resolved, policy.purposes, ingested_at, run_id))
            parts = iter([])
        counted["built"] += read.row_count
        counted["read"] += read.row_count
        if progress:  # throttled while the batch goes on; exact at its end (_stage_batch)
            progress("building events", counted["built"], counted["read"] + 1)
        seconds["build"] += time.perf_counter() - started


# A file larger than this is read, resolved and built part by part (its adapter's parts: about
# consent.channels.csv_export.PART_CHARS of a CSV, consent.channels.whatsapp_webhook.PART_PAYLOADS
# payloads of a webhook file).
STREAM_BYTES = 32 * 1024 * 1024


def _streamed(export: ExportFile) -> bool:
    return export.size_bytes > STREAM_BYTES


def _read_whole(export: ExportFile, ctx: FileContext, config, policy: Policy) -> list[FileRead]:
    """A file's reads, all at once (what `_parts` yields; a failure becomes the file's one read)."""
    try:
        return list(_parts(export, ctx, config, policy))
    except WholeFile as whole:
        return [whole.read]
    except FILE_FAILURES as exc:
        return [unreadable_file(export.path, exc, "could not be read")]


def _parts(export: ExportFile, ctx: FileContext, config, policy: Policy) -> Iterator[FileRead]:
    """The file's reads, part by part, as its adapter yields them."""
    yield from adapter_for(export.path)(export.path.read_bytes(), ctx, config, policy)


# Whatever one file does to its reader, the night goes on: the file becomes one quarantined row.
# (RecursionError and MemoryError are Exceptions too; KeyboardInterrupt and SystemExit are not.)
FILE_FAILURES = Exception
HEAD_BYTES = 4096


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
    """An error message may quote a row: numbers and BSUIDs are masked (`consent.redact.redact`)."""
    from consent.redact import redact

    return redact(text)


def _concat(frames: Iterable[pl.DataFrame], schema: dict) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=schema)
