"""Building canonical events column by column: the fast path for CSV files.

`build_events` (consent/domain/events.py) turns rows into events one at a time; it
is the reference and handles every case. Most rows of a large export are
ordinary: a known event type, a valid number, dates and flags that parse.
`build_file` computes those rows with Polars expressions (every distinct
date, purpose list or flag parsed once, numbers joined from the phone book,
ids hashed as the row path hashes them) and sends every other row (unknown type, bad number,
unreadable field, an opt-out with warnings, non-ASCII text whose case
mapping could differ) through `build_events` unchanged. A property test
holds the two paths equal on mutated exports.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl

from consent.reading.channels.base import FileRead
from consent.reading.channels.csv_export import PY_WHITESPACE, CsvTable
from consent.reading.channels.whatsapp_webhook import WebhookTable, in_item_order, item_order
from consent.domain.events import (
    CANONICAL_CSV_COLUMNS,
    EVENT_SCHEMA,
    EVENT_TYPES,
    BuiltBatch,
    FileContext,
    RowError,
    _acquisition_source,
    build_events,
    event_id,
    parse_bool,
    parse_purposes,
    parse_timestamp,
    phone_keys,
)
from consent.domain.schema import LINK_SCHEMA, QUARANTINE_SCHEMA, SEND_SCHEMA, SKIPPED_SCHEMA
from consent.domain.phones import PhoneBook

_ASCII = r"^[\x00-\x7f]*$"


def _strip(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars(PY_WHITESPACE)


def phone_pairs(read: FileRead, ctx: FileContext) -> set[tuple[str, str | None]]:
    """Every (raw, region hint) pair the file's rows are normalised by."""
    pairs = {key for row in read.rows for key in phone_keys(row, ctx)}
    if read.webhook is not None and read.webhook.height:
        # Every ordinary item needs its own number (a message's sender, a status's recipient).
        hint = _webhook_hint(ctx)
        pairs.update((raw, hint) for raw in read.webhook.frame.get_column("phone").unique().to_list())
    if read.table is not None and read.table.height:
        frame = _canonical(read.table, ctx).select("phone", "hint").unique().collect()
        pairs.update((raw, hint or None) for raw, hint in frame.iter_rows())
    return pairs


def _canonical(table: CsvTable, ctx: FileContext, with_identity: bool = False) -> pl.LazyFrame:
    """The canonical fields as the CSV adapter defines them: stripped, mapped,
    defaulted; "" where the file has no such column (the row path's None).
    With `with_identity`, also `id_text`: the row's identity, as `events.event_id` takes it.
    Lazy, so a caller that needs two columns computes only those."""
    exprs = []
    if with_identity:
        # The row's content in column-name order, as `CsvTable.source_rows` joins it.
        cells = [pl.concat_str([pl.lit(table.header[i] + "\x1f"), pl.col(f"c{i}")]) for i in table.identity_order()]
        exprs.append(pl.concat_str(cells, separator="\x1e").alias("id_text"))
    for canonical in CANONICAL_CSV_COLUMNS:
        position = table.column_of(canonical)
        value = pl.lit("") if position is None else _strip(pl.col(f"c{position}"))
        mapped = table.config.values.get(canonical)
        if mapped and position is not None:
            value = value.replace(mapped)
        default = table.config.defaults.get(canonical)
        if default:
            value = pl.when(value == "").then(pl.lit(default)).otherwise(value)
        exprs.append(value.alias(canonical))
    frame = table.cells.lazy().select("line", *exprs)
    # What `phone_key` computes: the stripped country cell, or the channel's default region, upper-cased.
    country = _strip(pl.col("country"))
    hint = pl.when(country != "").then(country).otherwise(pl.lit(ctx.default_region or "")).str.to_uppercase()
    return frame.with_columns(hint=hint)


def _parsed(frame: pl.DataFrame, column: str, parse, dtype: pl.DataType) -> pl.DataFrame:
    """Join each distinct value's parse (value, or null with ok=false) onto the frame."""
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


def build_file(
    read: FileRead,
    ctx: FileContext,
    phones: PhoneBook,
    purposes: list[str],
    ingested_at: datetime,
    run_id: str,
) -> BuiltBatch:
    """Canonical events, quarantine, skipped items and sends of one file read."""
    rows = list(read.rows)
    table = read.table
    webhook = read.webhook if read.webhook is not None and read.webhook.height else None
    fast = None
    if webhook is not None:
        items, slow_positions = _build_webhook_table(webhook, ctx, phones, purposes, ingested_at, run_id)
        rows.extend(webhook.source_rows(slow_positions))
        rows.sort(key=lambda r: item_order(r.line, r.pointer))  # the rows' results in file order, as the fast ones
    if table is not None and table.height:
        fast, slow_positions = _build_table(table, ctx, phones, purposes, ingested_at, run_id)
        rows.extend(table.source_rows(slow_positions))
    lookup = phones.lookup({key for row in rows for key in phone_keys(row, ctx)})
    built = build_events(rows, ctx, lookup, purposes, ingested_at, run_id)
    if webhook is not None:
        return _merged(items, built)
    if table is None:
        return built
    in_file_order = ("source_line", "source_pointer")
    return BuiltBatch(
        events=pl.concat([fast, built.events], how="vertical").sort(in_file_order) if fast is not None else built.events,
        quarantine=built.quarantine.sort(in_file_order),
        skipped=built.skipped,
        sends=built.sends,
        links=built.links,
    )


def _build_table(
    table: CsvTable, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime, run_id: str
) -> tuple[pl.DataFrame, list[int]]:
    """Events of the ordinary rows, and the positions of the rows left to `build_events`."""
    tz = ZoneInfo(ctx.timezone)
    frame = _canonical(table, ctx, with_identity=True).collect().with_row_index("position")
    frame = frame.with_columns(event_type_lower=_strip(pl.col("event_type")).str.to_lowercase())
    book = phones.frame.rename({"phone_raw": "phone", "country_hint": "hint"})
    frame = frame.join(book, on=["phone", "hint"], how="left", maintain_order="left")
    frame = _parsed(frame, "occurred_at", lambda v: parse_timestamp(v, tz, ctx.date_format), pl.Datetime("us"))
    frame = _parsed(frame, "acquisition_source", _acquisition_source, pl.Utf8)
    frame = _parsed(frame, "purposes", lambda v: parse_purposes(v, purposes), pl.List(pl.Utf8))
    frame = _parsed(frame, "checkbox_pre_ticked", parse_bool, pl.Boolean)
    frame = _parsed(frame, "bundled_with_terms", parse_bool, pl.Boolean)
    ordinary = (
        pl.col("event_type_lower").is_in([t for t in EVENT_TYPES if t != "number_change"])
        & pl.col("phone_e164").is_not_null()
        # rows naming a WhatsApp user ID (validated, linked) are left to Python
        & (pl.col("whatsapp_user_id") == "")
        & pl.col("occurred_at__ok")
        & pl.col("acquisition_source__ok")
        & pl.col("purposes__ok")
        & pl.col("checkbox_pre_ticked__ok")
        & pl.col("bundled_with_terms__ok")
        # case mapping of non-ASCII text is left to Python
        & pl.col("event_type").str.contains(_ASCII)
        & pl.col("consent_method").str.contains(_ASCII)
        & pl.col("hint").str.contains(_ASCII)
    )
    frame = frame.with_columns(ordinary=ordinary.fill_null(False))
    slow = frame.filter(~pl.col("ordinary")).get_column("position").sort().to_list()
    good = frame.filter(pl.col("ordinary"))
    # The same function as the row-by-row path (hashlib beats DuckDB's sha256 here, Arrow copy included).
    ids = pl.Series("event_id", [event_id(ctx.channel, text) for text in good.get_column("id_text").to_list()], dtype=pl.Utf8)

    def text_or_null(column: str) -> pl.Expr:
        value = _strip(pl.col(column))
        return pl.when(value != "").then(value).otherwise(None)

    events = good.with_columns(event_id=ids).select(
        "event_id",
        pl.lit(ctx.channel).alias("channel"),
        pl.col("event_type_lower").alias("event_type"),
        pl.col("phone").alias("phone_raw"),
        pl.when(pl.col("hint") != "").then(pl.col("hint")).otherwise(None).alias("country_hint"),
        "phone_e164",
        "phone_region",
        "phone_type",
        pl.col("purposes__value").alias("purposes"),
        pl.col("occurred_at__value").alias("occurred_at"),
        text_or_null("consent_method").str.to_lowercase().alias("consent_method"),
        text_or_null("notice_version").alias("notice_version"),
        pl.col("checkbox_pre_ticked__value").alias("checkbox_pre_ticked"),
        pl.col("bundled_with_terms__value").alias("bundled_with_terms"),
        pl.col("acquisition_source__value").alias("acquisition_source"),
        text_or_null("evidence_ref").alias("evidence_ref"),
        pl.lit(ctx.source_file).alias("source_file"),
        pl.col("line").alias("source_line"),
        pl.lit(None, dtype=pl.Utf8).alias("source_pointer"),
        pl.lit(ctx.file_hash).alias("file_hash"),
        pl.lit(ingested_at, dtype=pl.Datetime("us")).alias("ingested_at"),
        pl.lit(run_id).alias("run_id"),
        pl.lit([], dtype=pl.List(pl.Utf8)).alias("warnings"),
        pl.lit(ctx.business).alias("business"),
        *(pl.lit(None, dtype=pl.Utf8).alias(c) for c in ("whatsapp_user_id", "parent_user_id", "changed_to")),
    )
    return events.cast(EVENT_SCHEMA), slow


def _build_webhook_table(
    table: WebhookTable, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime, run_id: str
) -> tuple[BuiltBatch, list[int]]:
    """Events (messages), skipped items and sends (statuses) of a webhook read's ordinary items, and the
    positions of the items left to `build_events`: a number that is not valid, a `phone_number_id`
    no business claims, a purpose the policy does not know (what the row path warns or rejects on)."""
    hint = _webhook_hint(ctx)
    frame = table.frame.with_row_index("position").with_columns(hint=pl.lit(hint or "", dtype=pl.Utf8))
    book = phones.frame.rename({"phone_raw": "phone", "country_hint": "hint"})
    frame = frame.join(book, on=["phone", "hint"], how="left", maintain_order="left")
    if ctx.number_businesses is None:
        business = pl.lit(ctx.business, dtype=pl.Utf8)
    else:  # as `events.business_of`: the number's business; an unclaimed number goes to the row path
        business = pl.when(pl.col("phone_number_id").is_null()).then(pl.lit(ctx.business)).otherwise(
            pl.col("phone_number_id").replace_strict(ctx.number_businesses, default=None, return_dtype=pl.Utf8))
    frame = frame.with_columns(business=business)
    # A message's purposes as the row path reads them (`_lenient`: for an opt-out an unknown purpose is
    # a warning, which the row path writes): each distinct value once; a value that does not parse
    # cleanly goes to the row path.
    frame = _parsed(frame.with_columns(purposes=pl.col("purposes").fill_null("")), "purposes",
                    lambda v: parse_purposes(v, purposes), pl.List(pl.Utf8))
    is_message = pl.col("skip_reason").is_null()
    ordinary = pl.col("phone_e164").is_not_null() & pl.col("business").is_not_null() & (
        ~is_message | pl.col("purposes__ok"))
    frame = frame.with_columns(ordinary=ordinary.fill_null(False))
    slow = frame.filter(~pl.col("ordinary")).get_column("position").to_list()
    good = frame.filter(pl.col("ordinary"))
    source = [pl.lit(ctx.source_file).alias("source_file"), pl.col("line").alias("source_line"),
              pl.col("pointer").alias("source_pointer")]
    lineage = [pl.lit(ingested_at, dtype=pl.Datetime("us")).alias("ingested_at"), pl.lit(run_id).alias("run_id")]

    messages = good.filter(is_message)
    ids = pl.Series("event_id", [event_id(ctx.channel, i) for i in messages.get_column("identity").to_list()], dtype=pl.Utf8)
    events = messages.with_columns(event_id=ids).select(
        "event_id",
        pl.lit(ctx.channel).alias("channel"),
        "event_type",
        pl.col("phone").alias("phone_raw"),
        pl.lit(hint, dtype=pl.Utf8).alias("country_hint"),
        "phone_e164",
        "phone_region",
        "phone_type",
        pl.col("purposes__value").alias("purposes"),
        "occurred_at",
        "consent_method",
        pl.lit(None, dtype=pl.Utf8).alias("notice_version"),
        pl.lit(None, dtype=pl.Boolean).alias("checkbox_pre_ticked"),
        pl.lit(None, dtype=pl.Boolean).alias("bundled_with_terms"),
        pl.lit("organic").alias("acquisition_source"),
        "evidence_ref",
        *source,
        pl.lit(ctx.file_hash).alias("file_hash"),
        *lineage,
        pl.lit([], dtype=pl.List(pl.Utf8)).alias("warnings"),
        "business",
        *(pl.lit(None, dtype=pl.Utf8).alias(c) for c in ("whatsapp_user_id", "parent_user_id", "changed_to")),
    )
    statuses = good.filter(~is_message)
    skipped_ids = [event_id(ctx.channel, f"{ctx.file_hash}\x1f{line}\x1f{pointer}")
                   for line, pointer in statuses.select("line", "pointer").iter_rows()]
    skipped = statuses.with_columns(quarantine_id=pl.Series(skipped_ids, dtype=pl.Utf8)).select(
        "quarantine_id", pl.lit(ctx.channel).alias("channel"), *source, pl.lit(ctx.file_hash).alias("file_hash"),
        pl.col("raw").alias("raw_row"), pl.col("skip_reason").alias("reason"), *lineage,
    )
    sends = statuses.filter(pl.col("message_id") != "").select(
        "message_id", "status", pl.col("occurred_at").alias("status_at"), pl.col("phone_e164").alias("recipient_e164"),
        "pricing_category", "error_codes", *source, *lineage, "business",
        pl.lit(None, dtype=pl.Utf8).alias("recipient_user_id"),
    )
    built = BuiltBatch(
        events=events.cast(EVENT_SCHEMA),
        quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
        skipped=skipped.select(list(SKIPPED_SCHEMA)).cast(SKIPPED_SCHEMA),
        sends=sends.select(list(SEND_SCHEMA)).cast(SEND_SCHEMA),
        links=pl.DataFrame(schema=LINK_SCHEMA),
    )
    return built, slow


def _webhook_hint(ctx: FileContext) -> str | None:
    """The region hint of a webhook item's number: the channel's default region (`events.phone_key`;
    webhook items have no country field)."""
    return ctx.default_region.upper() if ctx.default_region else None


def _merged(fast: BuiltBatch, slow: BuiltBatch) -> BuiltBatch:
    """The two builds of one read's items, each frame in the items' file order (the row path's)."""
    def both(name: str) -> pl.DataFrame:
        a, b = getattr(fast, name), getattr(slow, name)
        if not a.height or not b.height:
            return a if a.height else b
        return in_item_order(pl.concat([a, b], how="vertical"))

    return BuiltBatch(**{name: both(name) for name in ("events", "quarantine", "skipped", "sends", "links")})


__all__ = ["build_file", "phone_pairs"]
