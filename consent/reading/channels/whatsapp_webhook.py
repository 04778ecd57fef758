"""WhatsApp Cloud API webhooks, exactly as Meta posts them.

`object: whatsapp_business_account` > `entry[]` > `changes[]` > `value`, in a
`.json` file (one payload or an array of payloads) or a `.jsonl` file (one
payload per line). Each message, status or user preference becomes one row:

| item | becomes |
|---|---|
| text message equal to an opt-out keyword | `opt_out`, all purposes |
| text message equal to START / UNSTOP | `resume`, all purposes |
| button / interactive reply "Stop promotions" (or a keyword) | `opt_out`, marketing |
| `system` message `user_preference_changed` (stop / resume) | `opt_out` / `resume`, marketing |
| any other message (any type) | `inbound_message` |
| `user_preferences` value `stop` / `resume` | `opt_out` / `resume`, marketing |
| `statuses` `failed` with error 131050 | `opt_out`, marketing |
| any other status | skipped with its reason (counted, kept) |
| `system` message `user_changed_number` | `number_change` (old number -> `system.wa_id`) |
| `system` message `user_changed_user_id`, `user_id_update` | skipped: an identifier link (previous BSUID -> new) |

Identifiers (consent-rules.md section 9), by the names of Meta's webhook
reference (2026): phone `from`, `contacts[].wa_id`, `recipient_id`, `wa_id`;
business-scoped user ID `from_user_id`, `contacts[].user_id`,
`recipient_user_id`, `user_id`; parent BSUID `contacts[].parent_user_id`,
`recipient_parent_user_id`, `parent_user_id`; changes `system.wa_id`,
`system.user_id`, `system.previous_user_id`, `system.parent_user_id`,
`system.previous_parent_user_id`. Every set of identifiers an item shows
together becomes an identifier link. Usernames (`contacts[].profile.username`)
are display names: never read. An item's business is the one claiming its
`metadata.phone_number_id` in businesses.yaml.

Rows are identified by WhatsApp's own ids (`wamid`), so a redelivered webhook
adds nothing. Ordinary items go into a `WebhookTable`, which builds them with
Polars and leaves the rest (an invalid number, an unclaimed `phone_number_id`,
an unknown purpose) to `build_events`.
"""

from __future__ import annotations

import codecs
import json
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Iterator

import polars as pl

from consent.reading.channels.base import FileRead, Pair, WholeFile
from consent.reading.columnar import batch, event_columns, event_ids, join_parsed, join_phones
from consent.domain.events import EVENT_SCHEMA, BuiltBatch, FileContext, SourceRow, event_id, parse_purposes, raw_json
from consent.domain.phones import PhoneBook, wa_id_to_raw
from consent.domain.policy import ChannelConfig, Policy, keyword_key
from consent.domain.schema import SEND_SCHEMA, SKIPPED_SCHEMA

SUFFIXES = (".json", ".jsonl")

MARKETING_OPT_OUT_ERROR = 131050
TOO_DEEP = "malformed JSON {what}: nested too deeply for the JSON parser"


def _timestamp(value: object) -> datetime | None:
    try:
        seconds = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)


def _payloads(data: bytes, suffix: str) -> list[tuple[int, object, str | None]]:
    """(line or payload number, payload, error) for each payload in the file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [(1, None, "webhook file is not UTF-8")]
    if suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((number, json.loads(line), None))
            except json.JSONDecodeError as exc:
                out.append((number, line, f"malformed JSON line: {exc.msg}"))
            except RecursionError:  # the parser's own nesting limit: this line only
                out.append((number, line[:4096], TOO_DEEP.format(what="line")))
        return out
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [(1, text, f"malformed JSON file: {exc.msg} at line {exc.lineno}")]
    except RecursionError:
        return [(1, text[:4096], TOO_DEEP.format(what="file"))]
    payloads = document if isinstance(document, list) else [document]
    return [(number, payload, None) for number, payload in enumerate(payloads, start=1)]


class _ItemReader:
    def __init__(self, policy: Policy):
        self.policy = policy
        self.marketing = policy.whatsapp_marketing_purpose
        self.stop_buttons = {keyword_key(b) for b in policy.stop_promotions_buttons}
        # Computed once per file, not per message.
        self.opt_out_keywords = policy.all_opt_out_keywords
        self.resume_keywords = policy.all_resume_keywords

    def message(self, msg: dict, line: int, pointer: str, contacts: list[dict]) -> SourceRow:
        fields, links, skip, sender = self.message_fields(msg, contacts)
        msg_id = str(msg.get("id") or "")
        return SourceRow(
            line=line,
            raw=raw_json(msg),
            identity=f"message\x1f{msg_id}" if msg_id else f"message\x1f{raw_json(msg)}",
            fields=fields,
            pointer=pointer,
            occurred_at=_timestamp(msg.get("timestamp")),
            error=None if sender else "message without sender (from, from_user_id)",
            skip_reason=skip,
            links=links,
        )

    def message_fields(self, msg: dict, contacts: list[dict]) -> tuple[dict[str, str | None], list[dict], str | None, bool]:
        """A message's canonical fields, identifier links, skip reason and whether it names its sender
        (the row reader and the column reader both use this)."""
        msg_id = str(msg.get("id") or "")
        kind = str(msg.get("type") or "unknown")
        skip = None
        sender = _contact_of(contacts, msg.get("from"), msg.get("from_user_id"))
        phone = wa_id_to_raw(msg.get("from") or sender.get("wa_id"))
        user = _text(msg.get("from_user_id") or sender.get("user_id"))
        parent = _text(msg.get("from_parent_user_id") or sender.get("parent_user_id"))
        fields: dict[str, str | None] = {
            "phone": phone,
            "whatsapp_user_id": user,
            "parent_user_id": parent,
            "event_type": "inbound_message",
            "evidence_ref": msg_id or None,
        }
        links = [{"phone": phone or None, "user_id": user, "parent_user_id": parent}]
        if kind == "text":
            words = keyword_key(str((msg.get("text") or {}).get("body") or ""))
            if words in self.opt_out_keywords:
                fields.update(event_type="opt_out", consent_method="keyword_reply")
            elif words in self.resume_keywords:
                fields.update(event_type="resume", consent_method="keyword_reply")
        elif kind in ("button", "interactive"):
            label = self._reply_label(msg)
            if label in self.stop_buttons:
                fields.update(event_type="opt_out", purposes=self.marketing, consent_method="whatsapp_button")
            elif label in self.opt_out_keywords:
                fields.update(event_type="opt_out", consent_method="whatsapp_button")
        elif kind == "system":
            system = msg.get("system") or {}
            previous = _text(system.get("previous_user_id"))
            new_user = _text(system.get("user_id"))
            new_parent = _text(system.get("parent_user_id"))
            if system.get("type") in ("user_changed_number", "user_changed_user_id"):
                fields.update(whatsapp_user_id=previous or user, parent_user_id=_text(system.get("previous_parent_user_id")) or parent)
                links = [
                    {"phone": phone or None, "user_id": previous or user},
                    {"user_id": new_user, "previous_user_id": previous or user},
                    {"user_id": new_user, "parent_user_id": new_parent},
                ]
            if system.get("type") == "user_changed_number":
                new_phone = wa_id_to_raw(system.get("wa_id") or system.get("new_wa_id"))
                fields.update(event_type="number_change", changed_to=new_phone)
                links.append({"phone": new_phone or None, "user_id": new_user, "parent_user_id": new_parent})
            elif system.get("type") == "user_changed_user_id":
                skip = "BSUID change: recorded as an identifier link, not a consent event"
            elif system.get("type") == "user_preference_changed":
                value = str(system.get("value") or system.get("body") or "").lower()
                if "resume" in value:
                    fields.update(event_type="resume", purposes=self.marketing, consent_method="whatsapp_settings")
                elif "stop" in value:
                    fields.update(event_type="opt_out", purposes=self.marketing, consent_method="whatsapp_settings")
        return fields, links, skip, bool(phone or user or parent)

    @staticmethod
    def _reply_label(msg: dict) -> str:
        if msg.get("type") == "button":
            button = msg.get("button") or {}
            return keyword_key(str(button.get("text") or button.get("payload") or ""))
        interactive = msg.get("interactive") or {}
        reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
        return keyword_key(str(reply.get("title") or reply.get("id") or ""))

    def status(self, status: dict, line: int, pointer: str, contacts: list[dict]) -> SourceRow:
        fields, send, skip, occurred_at = self.status_fields(status, contacts)
        return SourceRow(
            line=line,
            raw=raw_json(status),
            identity=f"status\x1f{status.get('id')}\x1f{send['status']}\x1f{status.get('timestamp')}",
            links=[{"phone": fields["phone"] or None, "user_id": fields["whatsapp_user_id"],
                    "parent_user_id": fields["parent_user_id"]}],
            fields=fields,
            pointer=pointer,
            occurred_at=occurred_at,
            send=send,
            skip_reason=skip,
        )

    def status_fields(self, status: dict, contacts: list[dict]) -> tuple[dict[str, str | None], dict, str | None, datetime | None]:
        """A status's canonical fields (an opt-out if it is error 131050), its send record, skip reason
        and time (the row reader and the column reader both use this)."""
        state = str(status.get("status") or "unknown")
        codes = {e.get("code") for e in status.get("errors") or [] if isinstance(e, dict)}
        recipient = _contact_of(contacts, status.get("recipient_id"), status.get("recipient_user_id"))
        phone = wa_id_to_raw(status.get("recipient_id") or recipient.get("wa_id"))
        user = _text(status.get("recipient_user_id") or recipient.get("user_id"))
        parent = _text(status.get("recipient_parent_user_id") or recipient.get("parent_user_id"))
        fields: dict[str, str | None] = {
            "phone": phone,
            "whatsapp_user_id": user,
            "parent_user_id": parent,
            "event_type": "opt_out",
            "purposes": self.marketing,
            "evidence_ref": str(status.get("id") or "") or None,
            "consent_method": "send_error_131050",
        }
        occurred_at = _timestamp(status.get("timestamp"))
        # Every status is also a record of a business-sent message, for the send audit.
        send = {
            "message_id": str(status.get("id") or ""),
            "status": state,
            "pricing_category": str((status.get("pricing") or {}).get("category") or "") or None,
            "recipient_user_id": user,
            "error_codes": sorted(int(c) for c in codes if str(c).isdigit()),
        }
        skip = None
        if not (state == "failed" and (MARKETING_OPT_OUT_ERROR in codes or str(MARKETING_OPT_OUT_ERROR) in codes)):
            skip = f"message status {state!r} is not a consent event"
        return fields, send, skip, occurred_at

    def preference(self, pref: dict, line: int, pointer: str, contacts: list[dict]) -> SourceRow:
        value = str(pref.get("value") or "").lower()
        category = str(pref.get("category") or "")
        person = _contact_of(contacts, pref.get("wa_id"), pref.get("user_id"))
        phone = wa_id_to_raw(pref.get("wa_id") or person.get("wa_id"))
        user = _text(pref.get("user_id") or person.get("user_id"))
        parent = _text(pref.get("parent_user_id") or person.get("parent_user_id"))
        who = pref.get("wa_id") or pref.get("user_id")
        row = SourceRow(
            line=line,
            raw=raw_json(pref),
            identity=f"user_preference\x1f{who}\x1f{category}\x1f{value}\x1f{pref.get('timestamp')}",
            links=[{"phone": phone or None, "user_id": user, "parent_user_id": parent}],
            fields={
                "phone": phone,
                "whatsapp_user_id": user,
                "parent_user_id": parent,
                "event_type": {"stop": "opt_out", "resume": "resume"}.get(value, ""),
                "purposes": self.marketing,
                "consent_method": "whatsapp_settings",
            },
            pointer=pointer,
            occurred_at=_timestamp(pref.get("timestamp")),
        )
        if category and category != "marketing_messages":
            row.skip_reason = f"user preference category {category[:40]!r} is not handled"
        elif value not in ("stop", "resume"):
            row.error = f"unknown user preference value {value[:40]!r}"
        return row


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _contact_of(contacts: list[dict], wa_id: object, user_id: object) -> dict:
    """The `contacts[]` entry of the item's person: matched by number or BSUID, else the only one."""
    for contact in contacts:
        if (wa_id and contact.get("wa_id") == wa_id) or (user_id and contact.get("user_id") == user_id):
            return contact
    return contacts[0] if len(contacts) == 1 and not (wa_id and user_id) else {}


def user_id_updates(value: dict, line: int, base: str) -> list[SourceRow]:
    """`user_id_update` items (a BSUID replaced by a new one): identifier links, skipped as events.

    Meta's changelog (2026-08-11) says these changes now arrive as `system` messages
    (`user_changed_user_id`); a payload in the older `user_id_update` shape is still read."""
    rows = []
    for i, item in enumerate(_list(value.get("user_id_update"))):
        if not isinstance(item, dict):
            rows.append(SourceRow(line=line, raw=raw_json(item)[:4096], identity="", pointer=f"{base}.user_id_update[{i}]",
                                  error="malformed webhook item in user_id_update"))
            continue
        previous = _text(item.get("previous_user_id") or (item.get("previous") or {}).get("user_id"))
        new = _text(item.get("user_id") or (item.get("current") or {}).get("user_id"))
        rows.append(SourceRow(
            line=line, raw=raw_json(item), pointer=f"{base}.user_id_update[{i}]",
            identity=f"user_id_update\x1f{previous}\x1f{new}\x1f{item.get('timestamp')}",
            occurred_at=_timestamp(item.get("timestamp")),
            fields={"phone": wa_id_to_raw(item.get("wa_id"))},
            links=[{"user_id": new, "previous_user_id": previous},
                   {"phone": wa_id_to_raw(item.get("wa_id")) or None, "user_id": new}],
            skip_reason="BSUID change: recorded as an identifier link, not a consent event",
        ))
    return rows


def read_webhooks(data: bytes, ctx: FileContext, policy: Policy, suffix: str) -> FileRead:
    """Every item of the file, read at once: the reference `read_webhook_parts` must equal."""
    reader = _ItemReader(policy)
    rows: list[SourceRow] = []
    items = 0
    for line, payload, error in _payloads(data, suffix):
        items += payload_items(payload, error)
        _read_payload(reader, rows, line, payload, error)
    return FileRead(rows=rows, items=items)


# Payloads per part when a file is read in parts: memory holds one part's items, not the file's.
PART_PAYLOADS = 50_000


def read(data: bytes, ctx: FileContext, config: ChannelConfig, policy: Policy) -> Iterator[FileRead]:
    """The adapter: the file in parts of PART_PAYLOADS payloads (read at each call, so a test can
    make every file many parts); `.json` or `.jsonl` by the file's name."""
    suffix = PurePosixPath(ctx.source_file).suffix.lower()
    return read_webhook_parts(data, ctx, policy, suffix, PART_PAYLOADS)


def read_webhook_parts(
    data: bytes, ctx: FileContext, policy: Policy, suffix: str, part_payloads: int = PART_PAYLOADS,
    columnar: bool = True,
) -> Iterator[FileRead]:
    """The items of the file in parts of `part_payloads` payloads, in file order: together exactly
    `read_webhooks` (a fuzz test holds them equal). A JSONL file is cut between lines; a JSON array
    is decoded element by element. Raises `WholeFile` when the document turns out malformed.

    With `columnar`, ordinary items go into each part's `table` (`WebhookTable`) instead
    of one `SourceRow` each; `FileRead.all_rows` gives them back as the row reader reads them."""
    reader = _ItemReader(policy)
    rows: list[SourceRow] = []
    table = _TableBuilder(reader) if columnar else None
    count = items = 0
    yielded = False
    try:
        for line, payload, error, source in _payload_stream(data, suffix):
            if table is not None:
                table.begin(source)
            items += payload_items(payload, error)
            _read_payload(reader, rows, line, payload, error, table)
            count += 1
            if count >= part_payloads:
                yield FileRead(rows=rows, table=table.done() if table else None, items=items)
                yielded = True
                rows, count, items = [], 0, 0
    except _Malformed:
        raise WholeFile(read_webhooks(data, ctx, policy, suffix)) from None
    if rows or not yielded or (table and table.rows):
        yield FileRead(rows=rows, table=table.done() if table else None, items=items)


class _Malformed(Exception):
    pass


_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A streamed file's bytes are decoded this many at a time: its text is never held whole beside them
# (the 10M-event benchmark's 685 MB webhook file was held twice, as bytes and as text).
_DECODE_BYTES = 8 * 1024 * 1024


def _payload_stream(data: bytes, suffix: str) -> Iterator[tuple[int, object, str | None, str]]:
    """`_payloads`, lazily, each with the text it was decoded from; the file's text is decoded a
    chunk at a time (`_texts`)."""
    if not _is_utf8(data):
        yield 1, None, "webhook file is not UTF-8", ""
        return
    if suffix == ".jsonl":
        number = 0
        for line in _lines(_texts(data)):
            number += 1
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None, line
            except json.JSONDecodeError as exc:
                yield number, line, f"malformed JSON line: {exc.msg}", line
            except RecursionError:
                yield number, line[:4096], TOO_DEEP.format(what="line"), line
        return
    window = _Window(_texts(data))
    at = window.skip(0)
    if at == len(window.text):  # nothing but whitespace
        return
    if window.text[at] != "[":
        text = data.decode("utf-8-sig")
        for number, payload, error in _payloads(data, suffix):  # one document, not an array: nothing to stream
            yield number, payload, error, text
        return
    decoder = json.JSONDecoder()
    try:
        at = window.skip(at + 1)
        number = 0
        if window.text[at] != "]":
            while True:
                payload, end = window.decode(decoder, at)
                number += 1
                yield number, payload, None, window.text[at:end]
                at = window.skip(end)
                if window.text[at] == ",":
                    at = window.skip(window.drop(at) + 1)
                    continue
                if window.text[at] == "]":
                    break
                raise _Malformed
        if window.skip(at + 1) != len(window.text):
            raise _Malformed
    except (json.JSONDecodeError, IndexError, RecursionError):
        raise _Malformed from None


def _texts(data: bytes) -> Iterator[str]:
    """`data.decode("utf-8-sig")` (UTF-8, a leading byte order mark dropped), a chunk at a time.
    Raises UnicodeDecodeError."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    view = memoryview(data)
    for at in range(0, len(data), _DECODE_BYTES):
        yield decoder.decode(view[at:at + _DECODE_BYTES], final=at + _DECODE_BYTES >= len(data))


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        for _ in _texts(data):
            pass
    except UnicodeDecodeError:
        return False
    return True


def _lines(texts: Iterator[str]) -> Iterator[str]:
    """`"".join(texts).splitlines()`, a piece at a time: a piece is cut after its last newline (a
    line boundary for `splitlines` too, a `\r\n` included), so the lines are the same."""
    rest = ""
    for text in texts:
        text = rest + text
        cut = text.rfind("\n") + 1
        rest = text[cut:]
        if cut:
            yield from text[:cut].splitlines()
    if rest:
        yield from rest.splitlines()


class _Window:
    """A JSON array's text read a chunk at a time: `text` holds what is read and not yet dropped;
    positions are into it."""

    def __init__(self, texts: Iterator[str]):
        self.text, self.texts = "", texts

    def more(self) -> bool:
        """The next chunk read into the window; False at the end of the file."""
        for chunk in self.texts:
            self.text += chunk
            return True
        return False

    def skip(self, at: int) -> int:
        """`at` moved past JSON whitespace, reading on while the window ends in it."""
        while True:
            at = _WHITESPACE.match(self.text, at).end()
            if at < len(self.text) or not self.more():
                return at

    def decode(self, decoder: json.JSONDecoder, at: int) -> tuple[object, int]:
        """The JSON value at `at` and where it ends, reading on while it may be cut by the window's
        end (a value that fails to decode, or ends where the window ends: `12` of `123`)."""
        while True:
            try:
                value, end = decoder.raw_decode(self.text, at)
            except json.JSONDecodeError:
                if self.more():
                    continue
                raise
            if end < len(self.text) or not self.more():
                return value, end

    def drop(self, at: int) -> int:
        """The text before `at` dropped once it is a chunk long; `at` in the window that is left."""
        if at < _DECODE_BYTES:
            return at
        self.text = self.text[at:]
        return 0


def payload_items(payload: object, error: str | None) -> int:
    """The rows one payload must account for, counted from the payload, not from what the reader made
    of it: each item of its `messages`, `statuses`, `user_preferences` and `user_id_update` lists, or
    one row for a payload that is malformed or holds no item."""
    if error or not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return 1
    items = 0
    for entry in _list(payload.get("entry")):
        for change in _list(entry.get("changes") if isinstance(entry, dict) else None):
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            items += sum(len(value.get(key) or []) for key in ("messages", "statuses", "user_preferences"))
            if change.get("field") == "user_id_update" or "user_id_update" in value:
                items += len(_list(value.get("user_id_update")))
    return max(items, 1)


def _read_payload(reader: "_ItemReader", rows: list[SourceRow], line: int, payload: object, error: str | None,
                  table: "_TableBuilder | None" = None) -> None:
    """The rows of one payload (a line of JSONL, an element of a JSON array), appended to `rows`
    (its ordinary items to `table`, when given)."""
    if error:
        rows.append(SourceRow(line=line, raw=str(payload)[:4096], identity="", error=error))
        return
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        rows.append(SourceRow(line=line, raw=raw_json(payload)[:4096], identity="", error="not a WhatsApp Business webhook payload"))
        return
    tabled = len(table.rows) if table is not None else 0
    before = len(rows)
    for e, entry in enumerate(_list(payload.get("entry"))):
        for c, change in enumerate(_list(entry.get("changes") if isinstance(entry, dict) else None)):
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            base = f"entry[{e}].changes[{c}].value"
            number_id = (value.get("metadata") or {}).get("phone_number_id") if isinstance(value.get("metadata"), dict) else None
            contacts = [x for x in _list(value.get("contacts")) if isinstance(x, dict)]
            first = len(rows)
            for key, read_item in (("messages", reader.message), ("statuses", reader.status), ("user_preferences", reader.preference)):
                for i, item in enumerate(value.get(key) or []):
                    pointer = f"{base}.{key}[{i}]"
                    if not isinstance(item, dict):
                        rows.append(SourceRow(line=line, raw=raw_json(item)[:4096], identity="", pointer=pointer, error=f"malformed webhook item in {key}"))
                        continue
                    try:
                        if table is not None and key != "user_preferences" and table.add(
                                key, item, line, pointer, contacts, number_id):
                            continue
                        rows.append(read_item(item, line, pointer, contacts))
                    except (AttributeError, TypeError, ValueError):  # a field of the wrong JSON type
                        rows.append(SourceRow(line=line, raw=raw_json(item)[:4096], identity="", pointer=pointer, error=f"malformed webhook item in {key}"))
            if change.get("field") == "user_id_update" or "user_id_update" in value:
                rows.extend(user_id_updates(value, line, base))
            for row in rows[first:]:
                row.phone_number_id = None if number_id is None else str(number_id)
    if len(rows) == before and (table is None or len(table.rows) == tabled):
        rows.append(
            SourceRow(line=line, raw=raw_json(payload)[:4096], identity="", skip_reason="webhook payload without messages, statuses or user preferences")
        )


# The column reader's table (one row per ordinary item; see `WebhookTable`).
TABLE_SCHEMA = {
    "line": pl.Int64, "pointer": pl.Utf8, "phone_number_id": pl.Utf8, "phone": pl.Utf8,
    "event_type": pl.Utf8, "purposes": pl.Utf8, "consent_method": pl.Utf8, "evidence_ref": pl.Utf8,
    "occurred_at": pl.Datetime("us"), "identity": pl.Utf8, "raw": pl.Utf8, "skip_reason": pl.Utf8,
    "message_id": pl.Utf8, "status": pl.Utf8, "pricing_category": pl.Utf8, "error_codes": pl.List(pl.Int64),
}


class WebhookTable:
    """The ordinary items of a webhook read, column by column: messages (not `system`) with an id and
    a time, and statuses that are not an opt-out (error 131050), each naming its person by number
    only (no BSUID or parent BSUID: those are validated and linked row by row).

    Messages carry their canonical fields, statuses their send record and raw JSON (they become
    skipped items). `build` builds the table with Polars and leaves what it cannot (an invalid
    number, an unclaimed `phone_number_id`, an unknown purpose) to `build_events` through
    `source_rows`, which reads those items exactly as the row reader does."""

    def __init__(self, reader: _ItemReader, rows: list[tuple], slots: list[int], sources: list[str]):
        self.frame = pl.DataFrame(rows, schema=TABLE_SCHEMA, orient="row")
        self._reader = reader
        # Each row's payload, as text: decoded again only for a row the column build leaves to the row
        # path (holding every item's parsed JSON instead costs the garbage collector ~40% of the read).
        self._slots = slots
        self._sources = sources

    @property
    def height(self) -> int:
        return self.frame.height

    def row_order(self, row: SourceRow) -> tuple[int, int, int, int, int]:
        return item_order(row.line, row.pointer)

    def in_file_order(self, frame: pl.DataFrame) -> pl.DataFrame:
        return in_item_order(frame)

    def phone_pairs(self, ctx: FileContext) -> set[Pair]:
        # Every ordinary item needs its own number (a message's sender, a status's recipient).
        hint = _hint(ctx)
        return {(raw, hint) for raw in self.frame.get_column("phone").unique().to_list()}

    def build(self, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime,
              run_id: str) -> tuple[BuiltBatch, list[int]]:
        """Events (messages), skipped items and sends (statuses) of the ordinary items, and the
        positions of those left to `build_events`: a number that is not valid, a `phone_number_id`
        no business claims, a purpose the policy does not know (what the row path warns or rejects on)."""
        frame = _classified(self, ctx, phones, purposes)
        slow = frame.filter(~pl.col("ordinary")).get_column("position").to_list()
        good = frame.filter(pl.col("ordinary"))
        is_message = pl.col("skip_reason").is_null()
        skipped, sends = _status_frames(good.filter(~is_message), ctx, ingested_at, run_id)
        events = _message_events(good.filter(is_message), ctx, ingested_at, run_id)
        return batch(events=events, skipped=skipped, sends=sends), slow

    def source_rows(self, positions: list[int] | None = None) -> list[SourceRow]:
        """The items (all, or those at `positions`) as the row reader reads them."""
        lines = self.frame.get_column("line").to_list()
        pointers = self.frame.get_column("pointer").to_list()
        number_ids = self.frame.get_column("phone_number_id").to_list()
        payloads: dict[int, dict] = {}
        out = []
        for p in range(self.height) if positions is None else positions:
            slot = self._slots[p]
            if slot not in payloads:
                payloads[slot] = json.loads(self._sources[slot])
            e, c, key, i = _POINTER.match(pointers[p]).groups()
            value = payloads[slot]["entry"][int(e)]["changes"][int(c)]["value"]
            item = value[key][int(i)]
            contacts = [x for x in _list(value.get("contacts")) if isinstance(x, dict)]
            read = self._reader.message if key == "messages" else self._reader.status
            row = read(item, lines[p], pointers[p], contacts)
            row.phone_number_id = number_ids[p]
            out.append(row)
        return out


class _TableBuilder:
    def __init__(self, reader: _ItemReader):
        self.reader = reader
        self.rows: list[tuple] = []  # one tuple per item, in TABLE_SCHEMA order
        self.slots: list[int] = []  # the payload of each row, in `sources`
        self.sources: list[str] = []  # the text of each payload with a row
        self._source, self._slot = "", None  # the payload being read, and its place in `sources` once it has a row

    def begin(self, source: str) -> None:
        """The next payload, decoded from `source`."""
        self._source, self._slot = source, None

    def add(self, key: str, item: dict, line: int, pointer: str, contacts: list[dict], number_id: object) -> bool:
        """Put an ordinary item in the table; False for any other (the caller reads it as a row).
        Raises what the row reader raises on the item (the caller makes it a malformed item)."""
        if key == "messages":
            fields, _links, skip, _sender = self.reader.message_fields(item, contacts)
            msg_id = str(item.get("id") or "")
            occurred_at = _timestamp(item.get("timestamp"))
            if (str(item.get("type") or "") == "system" or skip is not None or not fields["phone"] or not msg_id
                    or occurred_at is None or fields["whatsapp_user_id"] or fields["parent_user_id"]):
                return False
            values = (fields["phone"], fields["event_type"], fields.get("purposes"), fields.get("consent_method"),
                      _text(fields["evidence_ref"]), occurred_at, f"message\x1f{msg_id}", None, None, None, None, None,
                      None)
        else:
            fields, send, skip, occurred_at = self.reader.status_fields(item, contacts)
            if skip is None or not fields["phone"] or fields["whatsapp_user_id"] or fields["parent_user_id"]:
                return False
            values = (fields["phone"], None, None, None, None, occurred_at, None, raw_json(item), skip,
                      send["message_id"], send["status"], send["pricing_category"], send["error_codes"])
        self.rows.append((line, pointer, None if number_id is None else str(number_id), *values))
        if self._slot is None:
            self.sources.append(self._source)
            self._slot = len(self.sources) - 1
        self.slots.append(self._slot)
        return True

    def done(self) -> WebhookTable:
        """The table so far; the builder starts a new one."""
        table = WebhookTable(self.reader, self.rows, self.slots, self.sources)
        self.rows, self.slots, self.sources, self._slot = [], [], [], None
        return table


_POINTER = re.compile(r"^entry\[(\d+)\]\.changes\[(\d+)\]\.value\.(\w+)\[(\d+)\]$")
# Within a change, the row reader reads messages, then statuses, then user preferences, then BSUID updates.
_KEY_ORDER = {"messages": 0, "statuses": 1, "user_preferences": 2, "user_id_update": 3}


def item_order(line: int, pointer: str | None) -> tuple[int, int, int, int, int]:
    """Where an item stands in its file (the row reader's order): by line, then by pointer's numbers."""
    found = _POINTER.match(pointer or "")
    if found is None:
        return (line, -1, -1, -1, -1)
    return (line, int(found[1]), int(found[2]), _KEY_ORDER.get(found[3], 9), int(found[4]))


def in_item_order(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame with `source_line` and `source_pointer`, sorted as `item_order` sorts (stable)."""
    groups = pl.col("source_pointer").str.extract_groups(_POINTER.pattern)
    keys = frame.select(
        pl.col("source_line"),
        groups.struct.field("1").cast(pl.Int64).fill_null(-1).alias("e"),
        groups.struct.field("2").cast(pl.Int64).fill_null(-1).alias("c"),
        groups.struct.field("3").replace_strict(_KEY_ORDER, default=9, return_dtype=pl.Int64)
        .fill_null(-1).alias("k"),
        groups.struct.field("4").cast(pl.Int64).fill_null(-1).alias("i"),
    )
    return frame.with_columns(keys.select(pl.all().name.prefix("__o_"))).sort(
        ["__o_source_line", "__o_e", "__o_c", "__o_k", "__o_i"], maintain_order=True
    ).drop("__o_source_line", "__o_e", "__o_c", "__o_k", "__o_i")


def _hint(ctx: FileContext) -> str | None:
    """The region hint of a webhook item's number: the channel's default region (`events.phone_key`;
    webhook items have no country field)."""
    return ctx.default_region.upper() if ctx.default_region else None


def _classified(table: WebhookTable, ctx: FileContext, phones: PhoneBook, purposes: list[str]) -> pl.DataFrame:
    """The table with each item's number, business, parsed purposes, `position` and whether it is
    `ordinary` (built here; else left to the row path)."""
    frame = table.frame.with_row_index("position").with_columns(hint=pl.lit(_hint(ctx) or "", dtype=pl.Utf8))
    frame = join_phones(frame, phones)
    if ctx.number_businesses is None:
        business = pl.lit(ctx.business, dtype=pl.Utf8)
    else:  # as `events.business_of`: the number's business; an unclaimed number goes to the row path
        business = pl.when(pl.col("phone_number_id").is_null()).then(pl.lit(ctx.business)).otherwise(
            pl.col("phone_number_id").replace_strict(ctx.number_businesses, default=None, return_dtype=pl.Utf8))
    frame = frame.with_columns(business=business)
    # A message's purposes as the row path reads them (`_lenient`: for an opt-out an unknown purpose is
    # a warning, which the row path writes): each distinct value once; a value that does not parse
    # cleanly goes to the row path.
    frame = join_parsed(frame.with_columns(purposes=pl.col("purposes").fill_null("")), "purposes",
                        lambda v: parse_purposes(v, purposes), pl.List(pl.Utf8))
    is_message = pl.col("skip_reason").is_null()
    ordinary = pl.col("phone_e164").is_not_null() & pl.col("business").is_not_null() & (
        ~is_message | pl.col("purposes__ok"))
    return frame.with_columns(ordinary=ordinary.fill_null(False))


def _lineage(ctx: FileContext, ingested_at: datetime, run_id: str) -> list[pl.Expr]:
    return [pl.lit(ctx.source_file).alias("source_file"), pl.col("line").alias("source_line"),
            pl.col("pointer").alias("source_pointer"),
            pl.lit(ingested_at, dtype=pl.Datetime("us")).alias("ingested_at"), pl.lit(run_id).alias("run_id")]


def _message_events(messages: pl.DataFrame, ctx: FileContext, ingested_at: datetime, run_id: str) -> pl.DataFrame:
    """The event frame of ordinary messages, as `build_events` would write it."""
    events = messages.with_columns(event_ids(ctx, messages.get_column("identity").to_list())).select(event_columns(
        ctx, ingested_at, run_id,
        event_id=pl.col("event_id"),
        event_type=pl.col("event_type"),
        phone_raw=pl.col("phone"),
        country_hint=pl.lit(_hint(ctx), dtype=pl.Utf8),
        phone_e164=pl.col("phone_e164"),
        phone_region=pl.col("phone_region"),
        phone_type=pl.col("phone_type"),
        purposes=pl.col("purposes__value"),
        occurred_at=pl.col("occurred_at"),
        consent_method=pl.col("consent_method"),
        acquisition_source=pl.lit("organic"),
        evidence_ref=pl.col("evidence_ref"),
        source_line=pl.col("line"),
        source_pointer=pl.col("pointer"),
        business=pl.col("business"),
    ))
    return events.cast(EVENT_SCHEMA)


def _status_frames(statuses: pl.DataFrame, ctx: FileContext, ingested_at: datetime,
                   run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Skipped items and sends of ordinary statuses, as `build_events` would write them."""
    lineage = _lineage(ctx, ingested_at, run_id)
    skipped_ids = [event_id(ctx.channel, f"{ctx.file_hash}\x1f{line}\x1f{pointer}")
                   for line, pointer in statuses.select("line", "pointer").iter_rows()]
    skipped = statuses.with_columns(quarantine_id=pl.Series(skipped_ids, dtype=pl.Utf8)).select(
        "quarantine_id", pl.lit(ctx.channel).alias("channel"), *lineage, pl.lit(ctx.file_hash).alias("file_hash"),
        pl.col("raw").alias("raw_row"), pl.col("skip_reason").alias("reason"), "business",
    )
    sends = statuses.filter(pl.col("message_id") != "").select(
        "message_id", "status", pl.col("occurred_at").alias("status_at"), pl.col("phone_e164").alias("recipient_e164"),
        "pricing_category", "error_codes", *lineage, "business",
        pl.lit(None, dtype=pl.Utf8).alias("recipient_user_id"),
    )
    return (skipped.select(list(SKIPPED_SCHEMA)).cast(SKIPPED_SCHEMA),
            sends.select(list(SEND_SCHEMA)).cast(SEND_SCHEMA))
