"""The canonical consent event (consent-rules.md section 2) and its value parsers.

Every channel adapter produces `SourceRow`s: one per input row or webhook
item, already split into fields. `build_events` turns a batch of them into the
canonical event frame and the quarantine frame, so that parsing rules (dates,
booleans, purposes, phone numbers) live in one place for all channels.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

import polars as pl

from consent.domain.phones import NormalisedPhone
# The canonical event frame has the ledger's columns (defined once, in consent/domain/schema.py).
from consent.domain.schema import EVENT_SCHEMA, LINK_SCHEMA, QUARANTINE_SCHEMA, SEND_SCHEMA, SKIPPED_SCHEMA

EVENT_TYPES = (
    "opt_in", "opt_in_request", "opt_in_confirm", "opt_out", "resume", "inbound_message",
    # The person's number changed (WhatsApp `user_changed_number`): `changed_to` holds the new one.
    "number_change",
)
OPT_IN_TYPES = ("opt_in", "opt_in_request", "opt_in_confirm")
ACQUISITION_SOURCES = ("organic", "purchased", "rented", "scraped", "partner", "implied")
CANONICAL_CSV_COLUMNS = (
    "phone", "country", "event_type", "purposes", "occurred_at", "consent_method",
    "notice_version", "checkbox_pre_ticked", "bundled_with_terms",
    "acquisition_source", "evidence_ref", "whatsapp_user_id",
)
REQUIRED_CSV_COLUMNS = ("event_type",)
# A row names its person by one of these at least (a file with neither column is refused).
IDENTIFIER_CSV_COLUMNS = ("phone", "whatsapp_user_id")

# Business-scoped user IDs (consent-rules.md section 9): ISO country code, a period, up to 128
# letters and digits; a parent BSUID has "ENT." after the country code.
BSUID = re.compile(r"[A-Z]{2}\.[A-Za-z0-9]{1,128}")
PARENT_BSUID = re.compile(r"[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}")

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
    # Webhooks: the business phone number the item came through (`metadata.phone_number_id`).
    phone_number_id: str | None = None
    # Identifiers the item shows together (each: phone (raw), user_id, parent_user_id,
    # previous_user_id): each becomes an identifier link, kept with the row's lineage.
    links: list[dict] | None = None

    @property
    def raw_text(self) -> str:
        if self.raw is not None:
            return self.raw
        return raw_json(dict(zip(self.header or [], self.record or [])))

    @property
    def needs_phone(self) -> bool:
        return self.error is None and (self.skip_reason is None or self.send is not None)

    def phone_texts(self) -> list[str]:
        """Every phone spelling the row needs normalised: its own, a new number, its links'."""
        if self.error is not None:
            return []
        texts = [self.fields.get("phone") or ""] if self.needs_phone else []
        texts += [self.fields.get("changed_to") or ""] if self.fields.get("changed_to") else []
        texts += [link["phone"] for link in self.links or () if link.get("phone")]
        return texts


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
    # The business of the file's channel folder (businesses.yaml; `default` without it) and,
    # when businesses.yaml exists, the business of each WhatsApp phone_number_id.
    business: str = "default"
    number_businesses: dict[str, str] | None = None


def phone_key(row: SourceRow, ctx: FileContext, text: str | None = None) -> tuple[str, str | None]:
    """The (raw, region hint) pair a row's number (or `text`, another number of the row) is normalised by."""
    hint = _text(row.fields.get("country")) or ctx.default_region or None
    return (row.fields.get("phone") or "" if text is None else text, hint.upper() if hint else None)


def phone_keys(row: SourceRow, ctx: FileContext) -> list[tuple[str, str | None]]:
    return [phone_key(row, ctx, text) for text in row.phone_texts()]


def business_of(row: SourceRow, ctx: FileContext) -> str:
    """The business a row is for: its WhatsApp number's, else its folder's (RowError if unclaimed)."""
    if row.phone_number_id is None or ctx.number_businesses is None:
        return ctx.business
    business = ctx.number_businesses.get(row.phone_number_id)
    if business is None:
        raise RowError("phone_number_id of the webhook is not claimed by any business in businesses.yaml")
    return business


def reject_business(row: SourceRow, ctx: FileContext) -> str | None:
    """The business a row that cannot become an event counts under: the one its event would have
    had (`business_of`), or None when its WhatsApp number is claimed by no business."""
    try:
        return business_of(row, ctx)
    except RowError:
        return None


def user_id(value: str | None, parent: bool = False) -> str | None:
    """A valid BSUID (or parent BSUID), None when empty; RowError when malformed (never quoted: personal data)."""
    text = _text(value)
    if text is None:
        return None
    if not (PARENT_BSUID if parent else BSUID).fullmatch(text):
        raise RowError(f"invalid WhatsApp {'parent ' if parent else ''}user ID (expected CC.{'ENT.' if parent else ''} and up to 128 letters or digits)")
    return text


@dataclass
class BuiltBatch:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    skipped: pl.DataFrame
    sends: pl.DataFrame
    links: pl.DataFrame


class _Parsers:
    """The field parsers of one batch: exports repeat the same dates, purposes and flags many
    times, so each value is parsed once."""

    __slots__ = ("timestamp", "purposes", "bool", "source")

    def __init__(self, ctx: FileContext, purposes: list[str]):
        tz = ZoneInfo(ctx.timezone)
        self.timestamp = _memo(lambda value: parse_timestamp(value, tz, ctx.date_format))
        self.purposes = _memo(lambda value: tuple(parse_purposes(value, purposes)))
        self.bool = _memo(parse_bool)
        self.source = _memo(_acquisition_source)


class _Out:
    """The frames of one batch, row by row (tuples or dicts in their schema's order)."""

    def __init__(self, ctx: FileContext, ingested_at: datetime, run_id: str):
        self.ctx, self.ingested_at, self.run_id = ctx, ingested_at, run_id
        self.events: list[tuple] = []
        self.quarantine: list[dict] = []
        self.skipped: list[dict] = []
        self.sends: list[dict] = []
        self.links: list[tuple] = []

    def reject(self, row: SourceRow, reason: str, into: list[dict]) -> None:
        ctx = self.ctx
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
                "ingested_at": self.ingested_at,
                "run_id": self.run_id,
                "business": reject_business(row, ctx),
            }
        )

    def send(self, row: SourceRow, phones, business: str) -> None:
        """A status's send record, when it names its recipient (a valid number or BSUID) and message."""
        recipient = phones[phone_key(row, self.ctx)]
        recipient_user = _valid_or_none(row.send.get("recipient_user_id"))
        if (recipient.is_valid or recipient_user) and row.send.get("message_id"):
            self.sends.append(
                {**row.send, "status_at": row.occurred_at, "recipient_e164": recipient.phone_e164,
                 "recipient_user_id": recipient_user, "business": business,
                 "source_file": self.ctx.source_file, "source_line": row.line, "source_pointer": row.pointer,
                 "ingested_at": self.ingested_at, "run_id": self.run_id}
            )

    def frames(self) -> BuiltBatch:
        return BuiltBatch(
            events=pl.DataFrame(self.events, schema=EVENT_SCHEMA, orient="row"),
            quarantine=pl.DataFrame(self.quarantine, schema=QUARANTINE_SCHEMA),
            skipped=pl.DataFrame(self.skipped, schema=SKIPPED_SCHEMA),
            sends=pl.DataFrame(self.sends, schema=SEND_SCHEMA),
            links=pl.DataFrame(self.links, schema=LINK_SCHEMA, orient="row"),
        )


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
    parsers = _Parsers(ctx, purposes)
    out = _Out(ctx, ingested_at, run_id)
    for row in rows:
        if row.error is None:
            try:
                business = business_of(row, ctx)
            except RowError as exc:
                row.error = str(exc)
        if row.send is not None and row.error is None:
            out.send(row, phones, business)
        if row.links and row.error is None:
            out.links.extend(_links(row, ctx, phones, business, ingested_at, run_id))
        if row.skip_reason is not None:
            out.reject(row, row.skip_reason, out.skipped)
            continue
        if row.error is not None:
            out.reject(row, row.error, out.quarantine)
            continue
        try:
            event, phone = _event(row, ctx, phones, parsers, business, ingested_at, run_id)
        except RowError as exc:
            out.reject(row, str(exc), out.quarantine)
            continue
        out.events.append(event)
        bsuid, parent = event[_USER_ID], event[_PARENT_USER_ID]
        if phone is not None and (bsuid or parent) and not row.links:
            # An export row naming the person by number and BSUID links them.
            ids = (phone.phone_e164, bsuid, parent, None)
            linked_at = event[_OCCURRED_AT] or ingested_at
            out.links.append(link_row(business, ids, linked_at, event[0], ctx, row, ingested_at, run_id))
    return out.frames()


_OCCURRED_AT, _USER_ID, _PARENT_USER_ID = (list(EVENT_SCHEMA).index(c) for c in
                                           ("occurred_at", "whatsapp_user_id", "parent_user_id"))


def _event(row: SourceRow, ctx: FileContext, phones, parsers: _Parsers, business: str, ingested_at: datetime,
           run_id: str) -> tuple[tuple, NormalisedPhone | None]:
    """One event (a tuple in EVENT_SCHEMA order) and the person's valid number; RowError if the row
    cannot be one. For an opt-out, unreadable optional fields are warnings (`_lenient`)."""
    f = row.fields
    event_type = (_text(f.get("event_type")) or "").lower()
    if not event_type:
        raise RowError("missing event type")
    if event_type not in EVENT_TYPES:
        raise RowError(f"unknown event type {event_type[:40]!r}")
    key = phone_key(row, ctx)
    warnings: list[str] = []
    phone, bsuid, parent = _person(row, key, phones, warnings)
    changed_to = None
    if event_type == "number_change":
        new = phones.get(phone_key(row, ctx, f.get("changed_to") or "")) if f.get("changed_to") else None
        if new is None or not new.is_valid:
            raise RowError("number change without a valid new number")
        changed_to = new.phone_e164
    occurred_at = row.occurred_at or _lenient(parsers.timestamp, f.get("occurred_at"), None, event_type, warnings)
    source = _lenient(parsers.source, f.get("acquisition_source"), "organic", event_type, warnings)
    # one tuple in EVENT_SCHEMA order (building a frame from tuples is cheaper than from dicts)
    event = (
        event_id(ctx.channel, row.identity),  # event_id
        ctx.channel,  # channel
        event_type,  # event_type
        f.get("phone") or "",  # phone_raw
        key[1],  # country_hint
        phone.phone_e164 if phone else None,  # phone_e164
        phone.phone_region if phone else None,  # phone_region
        phone.phone_type if phone else None,  # phone_type
        list(_lenient(parsers.purposes, f.get("purposes"), (), event_type, warnings)),  # purposes
        occurred_at,  # occurred_at
        (_text(f.get("consent_method")) or "").lower() or None,  # consent_method
        _text(f.get("notice_version")),  # notice_version
        _lenient(parsers.bool, f.get("checkbox_pre_ticked"), None, event_type, warnings),  # checkbox_pre_ticked
        _lenient(parsers.bool, f.get("bundled_with_terms"), None, event_type, warnings),  # bundled_with_terms
        source,  # acquisition_source
        _text(f.get("evidence_ref")),  # evidence_ref
        ctx.source_file,  # source_file
        row.line,  # source_line
        row.pointer,  # source_pointer
        ctx.file_hash,  # file_hash
        ingested_at,  # ingested_at
        run_id,  # run_id
        warnings,  # warnings
        business,  # business
        bsuid,  # whatsapp_user_id
        parent,  # parent_user_id
        changed_to,  # changed_to
    )
    return event, phone


def _person(row: SourceRow, key: tuple[str, str | None], phones,
            warnings: list[str]) -> tuple[NormalisedPhone | None, str | None, str | None]:
    """The row's valid number (by its `phone_key`; None when it has none, or one kept against a BSUID
    with a warning), BSUID and parent BSUID; RowError when the row names nobody it can be kept against."""
    bsuid = user_id(row.fields.get("whatsapp_user_id"))
    parent = user_id(row.fields.get("parent_user_id"), parent=True)
    phone = phones[key] if key[0].strip() else None
    if phone is None and not (bsuid or parent):
        raise RowError("no phone number and no WhatsApp user ID")
    if phone is not None and not phone.is_valid:
        if not (bsuid or parent):
            raise RowError(phone.invalid_reason or "invalid phone number")
        # The person is still known by the BSUID: the event is kept against it.
        warnings.append(f"{phone.invalid_reason or 'invalid phone number'}: kept against the WhatsApp user ID")
        phone = None
    return phone, bsuid, parent


def _valid_or_none(value: str | None, parent: bool = False) -> str | None:
    try:
        return user_id(value, parent)
    except RowError:
        return None


def _links(row: SourceRow, ctx: FileContext, phones, business: str, ingested_at: datetime, run_id: str) -> list[tuple]:
    """Identifier links the row shows (two identifiers or more, each valid), with its lineage.

    One row per distinct link: `link_id` hashes the identifiers, so seeing the same link again
    adds nothing (publish keeps the earliest sighting)."""
    out = []
    for link in row.links or ():
        phone = phones.get(phone_key(row, ctx, link["phone"])) if link.get("phone") else None
        e164 = phone.phone_e164 if phone is not None and phone.is_valid else None
        ids = (e164, _valid_or_none(link.get("user_id")), _valid_or_none(link.get("parent_user_id"), parent=True),
               _valid_or_none(link.get("previous_user_id")))
        if sum(i is not None for i in ids) >= 2:
            eid = event_id(ctx.channel, row.identity) if row.skip_reason is None and row.identity else None
            out.append(link_row(business, ids, row.occurred_at or ingested_at, eid, ctx, row, ingested_at, run_id))
    return out


def link_row(business: str, ids: tuple, linked_at: datetime, eid: str | None, ctx: FileContext, row: SourceRow,
             ingested_at: datetime, run_id: str) -> tuple:
    """One `identifier_links` row (LINK_SCHEMA order); ids = (phone, BSUID, parent BSUID, previous BSUID)."""
    link_id = event_id("link", "\x1f".join([business, *(i or "" for i in ids)]))
    return (link_id, business, *ids, linked_at, eid, ctx.channel, ctx.source_file, row.line, row.pointer,
            ingested_at, run_id)


def raw_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
