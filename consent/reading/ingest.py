"""Reading an exports folder into staged events, quarantine and skipped items.

Plain Python: finds the files (`list_exports`, the one rule the sensors use too),
reads each once into the bytes that are both hashed and parsed, skips those
already ingested (by content hash), parses the rest with their channel's adapter,
normalises every distinct phone spelling once (through a caller-supplied cache),
and builds the canonical frames. Nothing here writes to the warehouse.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat as stat_mode
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

import polars as pl

from consent.reading.channels import FileRead, WholeFile, adapter_for
from consent.reading.columnar import build_file, phone_pairs
from consent.domain.events import (
    EVENT_SCHEMA,
    LINK_SCHEMA,
    QUARANTINE_SCHEMA,
    SEND_SCHEMA,
    SKIPPED_SCHEMA,
    BuiltBatch,
    FileContext,
    SourceRow,
)
from consent.storage.bulk import bulk_phase
from consent.storage.faults import crash_point
from consent.domain.phones import PhoneBook
from consent.domain.policy import ChannelsFile, Policy

CONFIG_FILES = {"channels.yaml", "policy.yaml", "businesses.yaml"}
_DIGITS = re.compile(r"\d{5,}")
Pair = tuple[str, str | None]
PhoneResolver = Callable[[list[Pair]], PhoneBook]
Progress = Callable[[str, int, int], None]


@dataclass
class ExportFile:
    channel: str
    source_file: str  # path relative to the exports folder, with "/"
    path: Path  # as listed (a symlink inside the exports folder stays a symlink here)
    size_bytes: int
    file_hash: str  # "" until the file is read (or its fingerprint matched)
    mtime_ns: int = 0
    root: Path | None = None  # the exports folder, resolved: the boundary of every read
    changed_ns: int = 0  # the file's status-change time (ctime), which no copy can set back


@dataclass
class FileStats:
    channel: str
    source_file: str
    file_hash: str
    size_bytes: int
    state: str  # new | unchanged | unsupported | unread (an OS error or a file that kept changing: not registered)
    mtime_ns: int | None = 0  # fingerprint time (`fingerprint_ns`); None: no fingerprint is kept
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



Fingerprint = tuple[str, int, int]  # (source_file, size in bytes, fingerprint time in ns: `fingerprint_ns`)


@dataclass
class Listing:
    """What a listing of the exports folder found: files to consider, names ignored (not export
    files), and files or folders that could not be listed or may not be followed (with why)."""

    files: list[ExportFile]
    ignored: list[str]
    unread: list[tuple[str, str, str]]  # (channel, source_file, note): names only, never content


def list_exports(exports_dir: Path, include_notices: bool = False) -> Listing:
    """Every file of the channel folders, sorted: the one rule the staging step and the sensors use.

    Dot names are left out; `notices/` too unless `include_notices`. A symlink is followed only
    when its target resolves inside the exports folder; one that leads out, loops or leads nowhere,
    a folder that cannot be listed, and a file that cannot be looked at are noted by name in
    `unread` (the rest of the folder is still listed)."""
    root = exports_dir.resolve()
    listing = Listing([], [], [])
    seen = {_dir_key(root.stat())}
    for entry in _entries(root):
        path, relative = root / entry, entry
        found = _look(path, root, entry, relative, listing)
        if found is None:
            continue
        target, status = found
        if stat_mode.S_ISDIR(status.st_mode):
            if entry != "notices" or include_notices:
                _walk(path, root, entry, relative + "/", listing, seen)
        elif entry not in CONFIG_FILES:
            listing.ignored.append(f"{entry}: not in a channel folder")
    return listing


def _entries(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith("."))


def _dir_key(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _walk(folder: Path, root: Path, channel: str, prefix: str, listing: Listing, seen: set) -> None:
    """One folder of a channel, depth first, in name order."""
    try:
        status = folder.stat()
        names = _entries(folder)
    except OSError as exc:
        listing.unread.append((channel, prefix, f"folder could not be listed ({type(exc).__name__}): "
                                                "none of its files was read"))
        return
    if _dir_key(status) in seen:
        listing.unread.append((channel, prefix, "folder already listed under another name (symlink loop): "
                                                "not listed again"))
        return
    seen = seen | {_dir_key(status)}
    for name in names:
        path, relative = folder / name, prefix + name
        found = _look(path, root, channel, relative, listing)
        if found is None:
            continue
        target, status = found
        if stat_mode.S_ISDIR(status.st_mode):
            _walk(path, root, channel, relative + "/", listing, seen)
        elif stat_mode.S_ISREG(status.st_mode):
            listing.files.append(ExportFile(channel, relative, path, status.st_size, "", status.st_mtime_ns, root,
                                            status.st_ctime_ns))
        else:
            listing.ignored.append(f"{relative}: not a regular file (a pipe, socket or device): not read")


def _look(path: Path, root: Path, channel: str, relative: str, listing: Listing):
    """(target, its status) of a listed name, or None with the reason noted in `listing.unread`."""
    try:
        target, problem = inside(path, root)
        if problem is not None:
            listing.unread.append((channel, relative, problem))
            return None
        return target, target.stat()
    except OSError as exc:
        listing.unread.append((channel, relative, f"could not be looked at ({type(exc).__name__}): not read"))
        return None


def inside(path: Path, root: Path) -> tuple[Path, str | None]:
    """Where a name leads (itself, or a symlink's target) and why it may not be followed, if so:
    the exports folder is the boundary of every read."""
    if not path.is_symlink():
        return path, None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a loop (RuntimeError before Python 3.13) or a missing target
        return path, "symlink loops or leads nowhere: not followed"
    if not target.is_relative_to(root):
        return path, "symlink leads outside the exports folder: not followed"
    return target, None


def fingerprint_ns(export: ExportFile) -> int:
    # The later of mtime and ctime: a copy that keeps times (cp -p, rsync -t, touch -d) sets mtime
    # back, never ctime, so a rewrite with the same size still looks changed.
    return max(export.mtime_ns, export.changed_ns)


class Unread(Exception):
    """A file that could not be read as a whole: noted by name, not registered, read again next run."""


# A file that changes while it is read is read again, this many times in all.
READ_ATTEMPTS = 3
# A file changed this recently gets no fingerprint: a write in the same clock tick as the read
# would leave size and time as they were (the next run hashes it again).
RACY_NS = 2_000_000_000


def read_export(export: ExportFile) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read once, and its status while they were read (size and times the same
    before and after the read, and the size the bytes read). A file that changed meanwhile is read
    again; one that keeps changing, or cannot be opened or read, raises `Unread`."""
    root = export.root or export.path.parent
    for _ in range(READ_ATTEMPTS):
        target, problem = inside(export.path, root)
        if problem is not None:
            raise Unread(problem)
        try:
            data, before, after = _read_stable(target)
        except OSError as exc:
            raise Unread(f"could not be read ({type(exc).__name__}): not registered, read again next run") from exc
        if not stat_mode.S_ISREG(after.st_mode):
            raise Unread("not a regular file: not read")
        if _stamp(before) == _stamp(after) and len(data) == after.st_size:
            return data, after
    raise Unread(f"changed while it was read ({READ_ATTEMPTS} attempts): not registered, read again next run")


def _read_stable(target: Path) -> tuple[bytes, os.stat_result, os.stat_result]:
    # O_NONBLOCK: a name that became a pipe since the listing must not hang the night.
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not stat_mode.S_ISREG(before.st_mode):
            return b"", before, before
        data = handle.read()
        return data, before, os.fstat(handle.fileno())


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns


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
    handed on) has its rows taken back with `retract(source_file)` first.

    A file is read once: the bytes hashed are the bytes parsed. A file whose path, size and
    fingerprint time match an earlier run's fingerprint keeps that run's hash and is not read when
    the hash is known (exports accumulate: a night should not re-read every old file)."""
    seconds = {"read": 0.0, "normalise": 0.0, "build": 0.0}
    started = time.perf_counter()
    listing = list_exports(exports_dir)
    seconds["read"] += time.perf_counter() - started
    stats, batches = _plan(listing, fingerprints or {}, known_hashes, batch_bytes)
    staged = StagedExports(files=stats, ignored=listing.ignored, seconds=seconds)
    counted = {"files": sum(s.state != "new" for s in stats), "read": 0, "built": 0}
    if progress and counted["files"]:
        progress("reading files", counted["files"], len(stats))
    out = _Outbox(sink, retract, FLUSH_ROWS)
    for batch in batches:
        _stage_batch(batch, policy, channels, resolve_phones, ingested_at, run_id, out, progress,
                     staged, counted, len(stats), known_hashes)
    out.flush()
    read = [s for s in stats if s.state == "new"]
    staged.events = sum(s.events for s in read)
    staged.quarantined = sum(s.quarantined for s in read)
    staged.skipped = sum(s.skipped for s in read)
    return staged


def _plan(listing, fingerprints: dict[Fingerprint, str], known_hashes: set[tuple[str, str]],
          batch_bytes: int) -> tuple[list[FileStats], list[list[tuple[FileStats, ExportFile]]]]:
    """Every file's stats (sorted by name), and the files to read in batches of about `batch_bytes`:
    a file whose fingerprint names a known hash is unchanged, one no adapter reads is unsupported."""
    stats = [FileStats(channel, name, "", 0, "unread", notes=[note]) for channel, name, note in listing.unread]
    batches: list[list[tuple[FileStats, ExportFile]]] = [[]]
    size = 0
    for export in listing.files:
        known = fingerprints.get((export.source_file, export.size_bytes, fingerprint_ns(export)))
        stat = FileStats(export.channel, export.source_file, known or "", export.size_bytes, "new",
                         fingerprint_ns(export))
        stats.append(stat)
        if known and (export.channel, known) in known_hashes:
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
    stats.sort(key=lambda s: s.source_file)
    return stats, batches


def _open_export(stat: FileStats, export: ExportFile, known_hashes: set[tuple[str, str]]) -> bytes | None:
    """The file's bytes to parse, hashed into `stat`; None when there is nothing to parse (the
    content is known: `unchanged`; it could not be read whole: `unread`, with the note)."""
    try:
        data, status = read_export(export)
    except Unread as why:
        stat.state, stat.file_hash, stat.notes[:] = "unread", "", [str(why)]
        return None
    stat.file_hash = hashlib.sha256(data).hexdigest()
    stat.size_bytes = len(data)
    stat.mtime_ns = max(status.st_mtime_ns, status.st_ctime_ns)
    if time.time_ns() - stat.mtime_ns < RACY_NS:
        stat.mtime_ns = None  # no fingerprint: see RACY_NS
    if (export.channel, stat.file_hash) in known_hashes:
        stat.state = "unchanged"
        return None
    return data


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
                 staged: StagedExports, counted: dict[str, int], files_found: int,
                 known_hashes: set[tuple[str, str]]) -> None:
    """Read, normalise and build one batch of files into `out`."""
    # Files below STREAM_BYTES are read whole and their numbers resolved together (one cache lookup
    # for the batch); a larger file is read, resolved and built part by part.
    reads: dict[str, list[FileRead]] = {}
    started = time.perf_counter()
    for stat, export in batch:
        if not _streamed(export):
            data = _open_export(stat, export, known_hashes)
            if data is not None:
                ctx, config = _context(export, stat, channels), channels.for_channel(export.channel)
                reads[export.source_file] = (_read_whole(data, ctx, export, config, policy), data[:HEAD_BYTES])
    staged.seconds["read"] += time.perf_counter() - started
    started = time.perf_counter()
    pairs: set[Pair] = set()
    for stat, export in batch:
        for read in reads.get(export.source_file, ([], None))[0]:
            try:
                pairs.update(phone_pairs(read, _context(export, stat, channels)))
            except FILE_FAILURES:  # _stage_file quarantines that file
                pass
    book = resolve_phones(sorted(pairs, key=lambda p: (p[0], p[1] or ""))) if reads else None
    staged.seconds["normalise"] += time.perf_counter() - started
    for stat, export in batch:
        parts = None
        if export.source_file in reads:
            whole, head = reads.pop(export.source_file)
            parts, resolve = iter(whole), (lambda _pairs: book)
        elif _streamed(export) and stat.state == "new":
            started = time.perf_counter()
            data = _open_export(stat, export, known_hashes)
            staged.seconds["read"] += time.perf_counter() - started
            if data is not None:
                config = channels.for_channel(export.channel)
                parts, head = _parts(data, _context(export, stat, channels), export, config, policy), data[:HEAD_BYTES]
                resolve = resolve_phones
                del data  # the parts hold what they need
        if parts is not None:
            _stage_file(stat, export, _context(export, stat, channels), parts, policy, resolve, ingested_at, run_id,
                        staged.seconds, progress, counted, out, head)
        counted["files"] += 1
        if progress:
            progress("reading files", counted["files"], files_found)
    if progress and counted["read"]:
        progress("building events", counted["built"], counted["read"])


def _context(export: ExportFile, stat: FileStats, channels: ChannelsFile) -> FileContext:
    config = channels.for_channel(export.channel)
    return FileContext(
        channel=export.channel,
        source_file=export.source_file,
        file_hash=stat.file_hash,
        timezone=config.timezone,
        default_region=config.default_region,
        date_format=config.date_format,
        business=channels.business_of(export.channel),
        number_businesses=channels.number_businesses(),
    )


def _stage_file(stat: FileStats, export: ExportFile, ctx: FileContext, parts: Iterator[FileRead], policy,
                resolve_phones, ingested_at, run_id, seconds: dict[str, float], progress,
                counted: dict[str, int], out: _Outbox, head: bytes | None = None) -> None:
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

    for read in _reads(parts, start_over, seconds, head):
        crash_point("after_reading")
        stat.rows_read += read.row_count
        stat.notes.extend(read.notes)

        started = time.perf_counter()
        read, pairs, failed = _phone_pairs(read, ctx, stat, start_over, head)
        resolved = resolve_phones(sorted(pairs, key=lambda p: (p[0], p[1] or "")))
        seconds["normalise"] += time.perf_counter() - started
        crash_point("after_normalising")

        started = time.perf_counter()
        try:
            add(build_file(read, ctx, resolved, policy.purposes, ingested_at, run_id))
        except FILE_FAILURES as exc:
            unbuilt = unreadable_file(None, exc, "could not be built into events", rows_read=max(stat.rows_read, 1))
            rows_read, notes = stat.rows_read, [*stat.notes, *unbuilt.notes]
            start_over()
            stat.rows_read, stat.notes[:] = rows_read, notes
            add(build_file(unbuilt, ctx, resolved, policy.purposes, ingested_at, run_id))
            failed = True
        counted["built"] += read.row_count
        counted["read"] += read.row_count
        if progress:  # throttled while the batch goes on; exact at its end (_stage_batch)
            progress("building events", counted["built"], counted["read"] + 1)
        seconds["build"] += time.perf_counter() - started
        if failed:  # the file failed whole: its later parts are not read
            break


def _reads(parts: Iterator[FileRead], start_over: Callable[[], None], seconds: dict[str, float],
           head: bytes | None) -> Iterator[FileRead]:
    """The file's parts as read; a malformed document, or a file that fails to read, starts the
    file over as one read (its reference read, or an unreadable file)."""
    while True:
        started = time.perf_counter()
        try:
            read = next(parts)
        except StopIteration:
            return
        except WholeFile as whole:  # the document is malformed: the file is its adapter's reference read
            start_over()
            parts = iter([whole.read])
            continue
        except FILE_FAILURES as exc:
            start_over()
            parts = iter([unreadable_file(None, exc, "could not be read", head=head)])
            continue
        finally:
            seconds["read"] += time.perf_counter() - started
        yield read


def _phone_pairs(read: FileRead, ctx: FileContext, stat: FileStats, start_over: Callable[[], None],
                 head: bytes | None) -> tuple[FileRead, set, bool]:
    """(the read, its (raw, hint) pairs, whether the file failed whole): a row the build could not
    key fails the whole file, which starts over as one unreadable read."""
    try:
        return read, phone_pairs(read, ctx), False
    except FILE_FAILURES as exc:
        rows_read, notes = max(stat.rows_read, 1), list(stat.notes)
        start_over()
        read = unreadable_file(None, exc, "could not be read", rows_read=rows_read, head=head)
        stat.rows_read = read.row_count
        stat.notes[:] = [*notes, *read.notes]
        return read, set(), True


# A file larger than this is read, resolved and built part by part (the parts its adapter yields:
# a part of a CSV is about 16 MB of text, of a webhook file 50,000 payloads).
STREAM_BYTES = 32 * 1024 * 1024


def _streamed(export: ExportFile) -> bool:
    return export.size_bytes > STREAM_BYTES


def _read_whole(data: bytes, ctx: FileContext, export: ExportFile, config, policy: Policy) -> list[FileRead]:
    """A file's reads, all at once (what `_parts` yields; a failure becomes the file's one read)."""
    try:
        return list(_parts(data, ctx, export, config, policy))
    except WholeFile as whole:
        return [whole.read]
    except FILE_FAILURES as exc:
        return [unreadable_file(None, exc, "could not be read", head=data[:HEAD_BYTES])]


def _parts(data: bytes, ctx: FileContext, export: ExportFile, config, policy: Policy) -> Iterator[FileRead]:
    """The file's reads (of the bytes read once: `read_export`), part by part, as its adapter yields them."""
    yield from adapter_for(export.path).read(data, ctx, config, policy)


# Whatever one file does to its reader, the night goes on: the file becomes one quarantined row.
# (RecursionError and MemoryError are Exceptions too; KeyboardInterrupt and SystemExit are not.)
FILE_FAILURES = Exception
HEAD_BYTES = 4096


def unreadable_file(path: Path | None, exc: BaseException, what: str, rows_read: int = 1,
                    head: bytes | None = None) -> FileRead:
    """One error row for a whole file (its first bytes, `head` or read from `path`, kept as the raw
    row, like any quarantined row).

    `rows_read` rows are accounted for: the first carries the reason, the others point to it,
    so rows read = quarantined still holds for the file."""
    message = mask_numbers(str(exc))[:200]
    reason = f"file {what} ({type(exc).__name__}{': ' + message if message else ''}): nothing of it was ingested"
    if head is None and path is not None:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    raw = head[:HEAD_BYTES].decode("utf-8", "replace") if head is not None else None
    rows = [SourceRow(line=1, raw=raw, identity="", error=reason)]
    rows += [SourceRow(line=n, raw=None, identity="", error="file refused: see line 1") for n in range(2, rows_read + 1)]
    return FileRead(rows=rows, notes=[reason])


def mask_numbers(text: str) -> str:
    """An error message may quote a row: numbers and BSUIDs are masked (`consent.domain.redact.redact`)."""
    from consent.domain.redact import redact

    return redact(text)


def _concat(frames: Iterable[pl.DataFrame], schema: dict) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=schema)
