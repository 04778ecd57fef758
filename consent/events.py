"""The canonical consent event (consent-rules.md section 2) and its value parsers.

Every channel adapter produces `SourceRow`s: one per input row or webhook
item, already split into fields. `build_events` turns a batch of them into the
canonical event frame and the quarantine frame, so that parsing rules (dates,
booleans, purposes, phone numbers) live in one place for all channels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

import polars as pl

from consent.phones import NormalisedPhone
# The canonical event frame has the ledger's columns (defined once, in consent/schema.py).
from consent.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, SEND_SCHEMA, SKIPPED_SCHEMA

EVENT_TYPES = ("opt_in", "opt_in_request", "opt_in_confirm", "opt_out", "resume", "inbound_message")
OPT_IN_TYPES = ("opt_in", "opt_in_request", "opt_in_confirm")
ACQUISITION_SOURCES = ("organic", "purchased", "rented", "scraped", "partner", "implied")
CANONICAL_CSV_COLUMNS = (
    "phone", "country", "event_type", "purposes", "occurred_at", "consent_method",
    "notice_version", "checkbox_pre_ticked", "bundled_with_terms",
    "acquisition_source", "evidence_ref",
)
REQUIRED_CSV_COLUMNS = ("phone", "event_type")

_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}

class RowError(ValueError):
    """A field that cannot be read; the row goes to quarantine with this reason."""


@dataclass(slots=True)
class SourceRow:
    """One input row or webhook item, split into canonical fields (all text).

    `identity` is what makes the event unique within its channel: the row's
    content for CSV (so a renamed or re-exported file adds nothing), the
    WhatsApp message id for webhooks (so a redelivered webhook adds nothing).
    """

    line: int
    raw: str | None
    identity: str
    fields: dict[str, str | None] = field(default_factory=dict)
    pointer: str | None = None
    # Set by adapters for rows that are not consent events (counted, kept).
    skip_reason: str | None = None
    # Set by adapters for rows they already know are bad.
    error: str | None = None
    # Already-UTC timestamps (webhooks) bypass text date parsing.
    occurred_at: datetime | None = None
    # A WhatsApp message status: what the business sent, to whom, when (send audit).
    send: dict | None = None
    # CSV rows keep their cells; the raw JSON is built only if the row is rejected.
    header: list[str] | None = None
    record: list[str] | None = None

    @property
    def raw_text(self) -> str:
        if self.raw is not None:
            return self.raw
        return raw_json(dict(zip(self.header or [], self.record or [])))

    @property
    def needs_phone(self) -> bool:
        return self.error is None and (self.skip_reason is None or self.send is not None)


def event_id(channel: str, identity: str) -> str:
    """Deterministic id: the same source row or message always gets the same id."""
    return hashlib.sha256(f"{channel}\x1f{identity}".encode("utf-8")).hexdigest()[:32]


def parse_bool(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"unreadable boolean {value.strip()[:40]!r}")


def parse_timestamp(value: str | None, tz: ZoneInfo, date_format: str | None = None) -> datetime | None:
    """ISO 8601 (or the channel's format) to a naive UTC datetime.

    A value without offset is read in the channel's time zone.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if date_format:
            parsed = datetime.strptime(text, date_format)
        else:
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RowError(f"unreadable date {value.strip()[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None)


def parse_purposes(value: str | None, known: Iterable[str]) -> list[str]:
    if value is None or not value.strip():
        return []
    purposes = sorted({p.strip().lower() for p in value.replace(",", ";").split(";") if p.strip()})
    unknown = [p for p in purposes if p not in set(known)]
    if unknown:
        raise RowError(f"unknown purpose {unknown[0]!r}")
    return purposes


def _memo(parse: Callable[[str | None], object]) -> Callable[[str | None], object]:
    """`parse` with its results (and its RowErrors) remembered per value."""
    cache: dict = {}

    def call(value):
        try:
            ok, result = cache[value]
        except KeyError:
            try:
                ok, result = True, parse(value)
            except RowError as exc:
                ok, result = False, str(exc)
            cache[value] = (ok, result)
        if ok:
            return result
        raise RowError(result)

    return call


def _lenient(parse, value, default, event_type: str, warnings: list[str]):
    """`parse(value)`; for an opt-out, a field it cannot read becomes a warning and the
    safe default, never a lost opt-out (rules, section 4). Other events raise."""
    try:
        return parse(value)
    except RowError as exc:
        if event_type != "opt_out":
            raise
        warnings.append(f"{exc}: ignored")
        return default


def _acquisition_source(value: str | None) -> str:
    source = (_text(value) or "organic").lower()
    if source not in ACQUISITION_SOURCES:
        raise RowError(f"unknown acquisition source {source[:40]!r}")
    return source


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass
class FileContext:
    """What an adapter knows about the file it reads."""

    channel: str
    source_file: str
    file_hash: str
    timezone: str = "UTC"
    default_region: str | None = None
    date_format: str | None = None


def phone_key(row: SourceRow, ctx: FileContext) -> tuple[str, str | None]:
    """The (raw, region hint) pair a row's number is normalised by."""
    hint = _text(row.fields.get("country")) or ctx.default_region or None
    return (row.fields.get("phone") or "", hint.upper() if hint else None)


@dataclass
class BuiltBatch:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    skipped: pl.DataFrame
    sends: pl.DataFrame


def build_events(
    rows: list[SourceRow],
    ctx: FileContext,
    phones: Mapping[tuple[str, str | None], NormalisedPhone],
    purposes: list[str],
    ingested_at: datetime,
    run_id: str,
) -> BuiltBatch:
    """Turn adapter rows into canonical events, quarantine rows and skipped items.

    `phones` holds the normalisation of every (raw, hint) pair of the rows.
    """
    tz = ZoneInfo(ctx.timezone)
    # Exports repeat the same dates, purposes and flags many times: parse each value once.
    read_timestamp = _memo(lambda value: parse_timestamp(value, tz, ctx.date_format))
    read_purposes = _memo(lambda value: tuple(parse_purposes(value, purposes)))
    read_bool = _memo(parse_bool)
    read_source = _memo(_acquisition_source)
    events: list[dict] = []
    quarantine: list[dict] = []
    skipped: list[dict] = []
    sends: list[dict] = []

    def reject(row: SourceRow, reason: str, into: list[dict]) -> None:
        into.append(
            {
                "quarantine_id": event_id(ctx.channel, f"{ctx.file_hash}\x1f{row.line}\x1f{row.pointer or ''}"),
                "channel": ctx.channel,
                "source_file": ctx.source_file,
                "source_line": row.line,
                "source_pointer": row.pointer,
                "file_hash": ctx.file_hash,
                "raw_row": row.raw_text,
                "reason": reason,
                "ingested_at": ingested_at,
                "run_id": run_id,
            }
        )

    for row in rows:
        if row.send is not None and row.error is None:
            recipient = phones[phone_key(row, ctx)]
            if recipient.is_valid and row.send.get("message_id"):
                sends.append(
                    {**row.send, "status_at": row.occurred_at, "recipient_e164": recipient.phone_e164,
                     "source_file": ctx.source_file, "source_line": row.line, "source_pointer": row.pointer,
                     "ingested_at": ingested_at, "run_id": run_id}
                )
        if row.skip_reason is not None:
            reject(row, row.skip_reason, skipped)
            continue
        if row.error is not None:
            reject(row, row.error, quarantine)
            continue
        f = row.fields
        try:
            event_type = (_text(f.get("event_type")) or "").lower()
            if not event_type:
                raise RowError("missing event type")
            if event_type not in EVENT_TYPES:
                raise RowError(f"unknown event type {event_type[:40]!r}")
            key = phone_key(row, ctx)
            hint = key[1]
            phone = phones[key]
            if not phone.is_valid:
                raise RowError(phone.invalid_reason or "invalid phone number")
            warnings: list[str] = []
            occurred_at = row.occurred_at or _lenient(read_timestamp, f.get("occurred_at"), None, event_type, warnings)
            source = _lenient(read_source, f.get("acquisition_source"), "organic", event_type, warnings)
            # one tuple in EVENT_SCHEMA order (building a frame from tuples is cheaper than from dicts)
            event = (
                event_id(ctx.channel, row.identity),  # event_id
                ctx.channel,  # channel
                event_type,  # event_type
                f.get("phone") or "",  # phone_raw
                hint,  # country_hint
                phone.phone_e164,  # phone_e164
                phone.phone_region,  # phone_region
                phone.phone_type,  # phone_type
                list(_lenient(read_purposes, f.get("purposes"), (), event_type, warnings)),  # purposes
                occurred_at,  # occurred_at
                (_text(f.get("consent_method")) or "").lower() or None,  # consent_method
                _text(f.get("notice_version")),  # notice_version
                _lenient(read_bool, f.get("checkbox_pre_ticked"), None, event_type, warnings),  # checkbox_pre_ticked
                _lenient(read_bool, f.get("bundled_with_terms"), None, event_type, warnings),  # bundled_with_terms
                source,  # acquisition_source
                _text(f.get("evidence_ref")),  # evidence_ref
                ctx.source_file,  # source_file
                row.line,  # source_line
                row.pointer,  # source_pointer
                ctx.file_hash,  # file_hash
                ingested_at,  # ingested_at
                run_id,  # run_id
                warnings,  # warnings
            )
        except RowError as exc:
            reject(row, str(exc), quarantine)
            continue
        events.append(event)

    return BuiltBatch(
        events=pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row"),
        quarantine=pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA),
        skipped=pl.DataFrame(skipped, schema=SKIPPED_SCHEMA),
        sends=pl.DataFrame(sends, schema=SEND_SCHEMA),
    )


def raw_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
