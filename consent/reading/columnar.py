"""Building a file read's canonical frames: its table's column build plus the reference for the rest.

`build_events` (consent/domain/events.py) turns rows into events one at a time; it is the
reference and handles every case. Most rows of a large export are ordinary, and an adapter may
hold those in a column table (`channels.base.ColumnTable`) that builds them with Polars and
leaves every other row (by position) to `build_events`. `build_file` puts the two together in
file order; it and the helpers below are what every format's column build shares. Property tests
hold the two paths equal on mutated exports.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable

import polars as pl

from consent.domain.events import EVENT_SCHEMA, BuiltBatch, FileContext, RowError, build_events, event_id, phone_keys
from consent.domain.phones import PhoneBook
from consent.domain.schema import LINK_SCHEMA, QUARANTINE_SCHEMA, SEND_SCHEMA, SKIPPED_SCHEMA

if TYPE_CHECKING:
    from consent.reading.channels.base import FileRead, Pair

FRAMES = ("events", "quarantine", "skipped", "sends", "links")
_SCHEMAS = {"events": EVENT_SCHEMA, "quarantine": QUARANTINE_SCHEMA, "skipped": SKIPPED_SCHEMA,
            "sends": SEND_SCHEMA, "links": LINK_SCHEMA}


def phone_pairs(read: FileRead, ctx: FileContext) -> set[Pair]:
    """Every (raw, region hint) pair the file's rows are normalised by."""
    pairs = {key for row in read.rows for key in phone_keys(row, ctx)}
    if read.table is not None and read.table.height:
        pairs |= read.table.phone_pairs(ctx)
    return pairs


def build_file(
    read: FileRead,
    ctx: FileContext,
    phones: PhoneBook,
    purposes: list[str],
    ingested_at: datetime,
    run_id: str,
) -> BuiltBatch:
    """Canonical events, quarantine, skipped items, sends and links of one file read, in file order."""
    rows, table = list(read.rows), read.table
    if table is None or not table.height:
        return _build_rows(rows, ctx, phones, purposes, ingested_at, run_id)
    fast, slow_positions = table.build(ctx, phones, purposes, ingested_at, run_id)
    rows.extend(table.source_rows(slow_positions))
    rows.sort(key=table.row_order)  # the rows' results in file order, as the table's
    slow = _build_rows(rows, ctx, phones, purposes, ingested_at, run_id)
    return _merged(fast, slow, table.in_file_order)


def _build_rows(rows, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime,
                run_id: str) -> BuiltBatch:
    lookup = phones.lookup({key for row in rows for key in phone_keys(row, ctx)})
    return build_events(rows, ctx, lookup, purposes, ingested_at, run_id)


def _merged(fast: BuiltBatch, slow: BuiltBatch, in_file_order: Callable[[pl.DataFrame], pl.DataFrame]) -> BuiltBatch:
    """The two builds of one read's rows, each frame in the rows' file order (the row path's)."""
    def both(name: str) -> pl.DataFrame:
        a, b = getattr(fast, name), getattr(slow, name)
        if not a.height or not b.height:
            return a if a.height else b
        return in_file_order(pl.concat([a, b], how="vertical"))

    return BuiltBatch(**{name: both(name) for name in FRAMES})


def batch(**frames: pl.DataFrame) -> BuiltBatch:
    """A `BuiltBatch` of the frames given (each already in its schema), the others empty."""
    return BuiltBatch(**{name: frames.get(name, pl.DataFrame(schema=schema)) for name, schema in _SCHEMAS.items()})


def join_phones(frame: pl.DataFrame, phones: PhoneBook) -> pl.DataFrame:
    """`frame` (with `phone` and `hint`) with its number's normalisation: `phone_e164` (null when the
    number is not valid), `phone_region`, `phone_type`, in the frame's order."""
    book = phones.frame.rename({"phone_raw": "phone", "country_hint": "hint"})
    return frame.join(book, on=["phone", "hint"], how="left", maintain_order="left")


def join_parsed(frame: pl.DataFrame, column: str, parse, dtype: pl.DataType) -> pl.DataFrame:
    """Join each distinct value's parse (`column__value`, or null with `column__ok` false) onto the frame."""
    values = frame.get_column(column).unique().to_list()
    results, ok = [], []
    for value in values:
        try:
            results.append(parse(value))
            ok.append(True)
        except RowError:
            results.append(None)
            ok.append(False)
    lookup = pl.DataFrame(
        {column: values, f"{column}__value": results, f"{column}__ok": ok},
        schema={column: pl.Utf8, f"{column}__value": dtype, f"{column}__ok": pl.Boolean},
    )
    return frame.join(lookup, on=column, how="left", maintain_order="left")


def event_ids(ctx: FileContext, identities: list[str]) -> pl.Series:
    # The same function as the row-by-row path (hashlib beats DuckDB's sha256 here, Arrow copy included).
    return pl.Series("event_id", [event_id(ctx.channel, text) for text in identities], dtype=pl.Utf8)


def event_columns(ctx: FileContext, ingested_at: datetime, run_id: str, **given: pl.Expr) -> list[pl.Expr]:
    """The event frame's columns in EVENT_SCHEMA order: those `given`, the file's and run's lineage,
    no warnings, the folder's business, and null for the rest (cast the result to EVENT_SCHEMA)."""
    lineage = {
        "channel": pl.lit(ctx.channel),
        "source_file": pl.lit(ctx.source_file),
        "file_hash": pl.lit(ctx.file_hash),
        "ingested_at": pl.lit(ingested_at, dtype=pl.Datetime("us")),
        "run_id": pl.lit(run_id),
        "warnings": pl.lit([], dtype=pl.List(pl.Utf8)),
        "business": pl.lit(ctx.business),
    }
    out = []
    for name, dtype in EVENT_SCHEMA.items():
        expr = given.pop(name, None)
        if expr is None:
            expr = lineage.get(name, pl.lit(None, dtype=dtype))
        out.append(expr.alias(name))
    if given:
        raise ValueError(f"not event columns: {sorted(given)}")
    return out


__all__ = ["batch", "build_file", "event_columns", "event_ids", "join_parsed", "join_phones", "phone_pairs"]
