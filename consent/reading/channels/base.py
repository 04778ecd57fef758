"""The contract between the pipeline and a file format: what an adapter is, what it returns.

An adapter is a module of this package with `SUFFIXES` (the file names it reads) and `read`
(bytes to `FileRead`s, in file order). It reads odd rows one by one (`SourceRow`s, built by
`consent.domain.events.build_events`, the reference) and may put its ordinary rows in a
`ColumnTable`, which builds their events itself and hands back, by position, the rows it leaves
to the reference. The pipeline (`consent.reading.ingest`, `consent.reading.columnar`) knows only
this contract, never a format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Protocol

import polars as pl

from consent.domain.events import BuiltBatch, FileContext, SourceRow

if TYPE_CHECKING:
    from consent.domain.phones import PhoneBook
    from consent.domain.policy import ChannelConfig, Policy

Pair = tuple[str, str | None]


class ColumnTable(Protocol):
    """A read's ordinary rows, column by column, with their own build."""

    @property
    def height(self) -> int: ...

    def source_rows(self, positions: list[int] | None = None) -> list[SourceRow]:
        """The rows (all, or those at `positions`) as `SourceRow`s, exactly as a row reader reads them."""

    def row_order(self, row: SourceRow) -> tuple:
        """Where a row (of the table or of the read's `rows`) stands in the file: its sort key."""

    def in_file_order(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A built frame (with `source_line`, `source_pointer`) sorted as `row_order` sorts, stably."""

    def phone_pairs(self, ctx: FileContext) -> set[Pair]:
        """Every (raw, region hint) pair the rows' numbers are normalised by."""

    def build(self, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime,
              run_id: str) -> tuple[BuiltBatch, list[int]]:
        """The frames of the rows it can build, and the positions of those left to `build_events`:
        together exactly what `build_events` makes of `source_rows()` (a property test holds them equal)."""


class Adapter(Protocol):
    """A file format: a module with these two names, and one line in `channels.FORMATS`."""

    SUFFIXES: tuple[str, ...]  # lower case, with the dot: ".csv"

    def read(self, data: bytes, ctx: FileContext, config: ChannelConfig, policy: Policy) -> Iterable[FileRead]:
        """The file's reads, in file order (one, or several parts of a large file); at least one."""


@dataclass
class FileRead:
    """The rows of one file (every row, good or bad) and file-level notes.

    `rows` are read one by one (rows that are malformed or odd); `table`, when the adapter has one,
    holds the ordinary rows column by column."""

    rows: list[SourceRow]
    notes: list[str] = field(default_factory=list)
    table: ColumnTable | None = None
    # The rows the input itself says it holds, counted apart from the reader (a webhook file's items,
    # counted in its payloads): a reader that drops an item then breaks conservation instead of hiding it.
    items: int | None = None

    @property
    def row_count(self) -> int:
        if self.items is not None:
            return self.items
        return len(self.rows) + (self.table.height if self.table is not None else 0)

    def all_rows(self) -> list[SourceRow]:
        """Every row as a `SourceRow`, in file order."""
        if self.table is None:
            return list(self.rows)
        return sorted([*self.rows, *self.table.source_rows()], key=self.table.row_order)


class WholeFile(Exception):
    """An adapter reading in parts found a problem that concerns the whole file (a malformed
    document): the file is `read`, whatever parts came before (the caller drops them)."""

    def __init__(self, read: FileRead):
        super().__init__("the file is read whole")
        self.read = read
