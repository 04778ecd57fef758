"""Synthetic exports in the public input contract, for samples and benchmarks.

    python bench/generate.py OUT_DIR --events 400 --seed 7

Writes one folder per channel: canonical CSV for form, app, support, QR,
double opt-in link and preference-centre exports, a form-tool export mapped
by `channels.yaml`, and WhatsApp Cloud API webhook payloads (JSON and JSONL).
Numbers come from 10 regions; each contact appears in several spellings (E.164,
international with spaces, national with a country hint, 00 prefix, wa_id),
and a share of rows is bad on purpose (invalid or spreadsheet-mangled numbers,
unknown event types, unreadable dates) or breaks a consent rule (pre-ticked,
bought lists). No row lacks a consent method or date, so the sample run passes
its ERROR checks.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import phonenumbers

REGIONS = ["DE", "GB", "FR", "ES", "IT", "BR", "IN", "US", "MX", "ZA"]
START = datetime(2026, 9, 1, tzinfo=timezone.utc)
CSV_COLUMNS = [
    "phone", "country", "event_type", "purposes", "occurred_at", "consent_method", "notice_version",
    "checkbox_pre_ticked", "bundled_with_terms", "acquisition_source", "evidence_ref",
]
CHANNEL_SHARE = {
    "web_form": 0.25, "in_app": 0.12, "qr_code": 0.06, "support": 0.06, "email_link": 0.1,
    "sms_link": 0.06, "preference_center": 0.08, "typeform_signups": 0.07, "whatsapp": 0.2,
}


def make_contact(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    # Six random digits: up to a million numbers per region, so the contacts grow with the events
    # (with four, every size had at most 100k distinct numbers: at 5M events each contact had
    # ~50 events, at 100k ~3, and a night's work grew with N for that reason alone).
    while True:
        tail = "".join(rng.choice("0123456789") for _ in range(6))
        candidate = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=int(national[:-6] + tail))
        if phonenumbers.is_valid_number(candidate):
            return candidate


def spell(rng: random.Random, number: phonenumbers.PhoneNumber, region: str) -> tuple[str, str]:
    """One spelling of the number and the country hint written beside it."""
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    choice = rng.randrange(5)
    if choice == 0:
        return e164, ""
    if choice == 1:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL), ""
    if choice == 2:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL), region
    if choice == 3:
        return "00" + e164[1:], ""
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return national.replace(" ", "-"), region.lower()


def bad_phone(rng: random.Random) -> tuple[str, str]:
    return rng.choice([("12345", "DE"), ("4.47911E+11", ""), ("not a number", ""), ("0151 1234", ""), ("+999 123 456", "")])


def iso(moment: datetime, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.astimezone(timezone(timedelta(hours=2))).isoformat()


def generate(out: Path, events: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    contacts = [(region, make_contact(rng, region)) for region in (rng.choice(REGIONS) for _ in range(max(10, events // 3)))]
    rows: dict[str, list[list[str]]] = {c: [] for c in CHANNEL_SHARE if c != "whatsapp"}
    webhook_items: list[tuple[datetime, dict]] = []
    channels = list(CHANNEL_SHARE)
    weights = list(CHANNEL_SHARE.values())
    for i in range(events):
        channel = rng.choices(channels, weights)[0]
        region, number = rng.choice(contacts)
        moment = START + timedelta(minutes=rng.randrange(60 * 24 * 80))
        if channel == "whatsapp":
            webhook_items.append((moment, whatsapp_item(rng, number, moment, i)))
            continue
        phone, hint = spell(rng, number, region)
        if rng.random() < 0.04:
            phone, hint = bad_phone(rng)
        row = csv_row(rng, channel, phone, hint, moment, i)
        if channel == "email_link" or channel == "sms_link":
            rows[channel].append(row)
            if rng.random() < 0.7:  # most people confirm, some too late
                delay = timedelta(hours=rng.choice([1, 5, 30, 24 * 9]))
                confirm = csv_row(rng, channel, phone, hint, moment + delay, i, event_type="opt_in_confirm")
                confirm[3] = rng.choice([row[3], ""])  # a confirmation repeats the request's purposes, or names none
                rows[channel].append(confirm)
            continue
        rows[channel].append(row)

    written: dict[str, int] = {}
    for channel, channel_rows in rows.items():
        folder = out / channel
        folder.mkdir(parents=True, exist_ok=True)
        if channel == "typeform_signups":
            write_typeform(folder / "responses.csv", channel_rows)
        else:
            with (folder / f"{channel}_export.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(CSV_COLUMNS)
                writer.writerows(channel_rows)
        written[channel] = len(channel_rows)
    write_webhooks(out / "whatsapp", webhook_items, rng)
    written["whatsapp"] = len(webhook_items)
    written["notices"] = write_notices(out / "notices")
    return written


def write_notices(folder: Path) -> int:
    """The consent texts the sample opt-ins name, with a few flaws on purpose:
    in_app-v1 asks for marketing only, support-v2 does not say how to opt out,
    and qr_code-v2 is missing from the registry."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for channel in ("web_form", "in_app", "qr_code", "support", "email_link", "sms_link", "preference_center"):
        for version, valid_from in (("v1", "2026-08-01"), ("v2", "2026-09-01")):
            name = f"{channel}-{version}"
            if name == "qr_code-v2":
                continue
            purposes = ["marketing"] if name == "in_app-v1" else ["marketing", "utility"]
            opt_out = "" if name == "support-v2" else " Reply STOP at any time to opt out."
            text = (f"Yes, Acme Shoes may send me {' and '.join(purposes)} messages on WhatsApp, "
                    f"up to 4 a month.{opt_out}")
            (folder / f"{name}.yaml").write_text(
                f"version: {name}\nbusiness_name: Acme Shoes\nchannels: [{channel}]\npurposes: [{', '.join(purposes)}]\n"
                f"frequency: up to 4 messages a month\nprivacy_policy_url: https://acme.example/privacy\n"
                f"valid_from: {valid_from}\ntext: \"{text}\"\n",
                encoding="utf-8",
            )
            count += 1
    (folder / "typeform-2026-09.md").write_text(
        "---\nversion: typeform-2026-09\nbusiness_name: Acme Shoes\nchannels: [typeform_signups]\n"
        "purposes: [marketing]\nfrequency: weekly\nvalid_from: 2026-09-01\n---\n"
        "I agree that Acme Shoes may send me offers on WhatsApp every week. "
        "I can unsubscribe at any time by replying STOP.\n",
        encoding="utf-8",
    )
    return count + 1


def csv_row(rng, channel, phone, hint, moment, i, event_type=None) -> list[str]:
    defaults = {
        "web_form": ("opt_in", "checkbox"), "in_app": ("opt_in", "in_app_prompt"), "qr_code": ("opt_in", "whatsapp_button"),
        "support": ("opt_in", "verbal_recorded"), "email_link": ("opt_in_request", "confirmation_link"),
        "sms_link": ("opt_in_request", "confirmation_link"), "preference_center": ("opt_out", ""),
        "typeform_signups": ("opt_in", "checkbox"),
    }
    kind, method = defaults[channel]
    event_type = event_type or kind
    if channel == "support" and rng.random() < 0.4:
        event_type, method = "inbound_message", ""
    if channel == "preference_center" and rng.random() < 0.4:
        event_type, method = "opt_in", "typed_form"
    purposes = rng.choice(["marketing", "marketing;utility", "utility"]) if event_type != "opt_out" else rng.choice(["", "marketing"])
    pre_ticked = "true" if channel == "web_form" and rng.random() < 0.05 else rng.choice(["false", "no", "0", ""])
    source = "purchased" if rng.random() < 0.03 else rng.choice(["organic", ""])
    if rng.random() < 0.02:
        event_type = "subscribe"  # unknown event type: quarantined
    occurred = iso(moment, rng) if rng.random() > 0.015 else moment.strftime("%d/%m/%Y %H:%M")
    return [
        phone, hint, event_type, purposes, occurred, method,
        f"{channel}-v{1 + (moment.month % 2)}" if event_type.startswith("opt_in") else "",
        pre_ticked, rng.choice(["false", ""]), source, f"sub-{i:06d}",
    ]


def write_typeform(path: Path, channel_rows: list[list[str]]) -> None:
    """A form tool's own export: its column names and values, mapped by channels.yaml."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Response ID", "Submitted At", "WhatsApp number", "Country", "I agree to receive offers on WhatsApp", "Form version"])
        for row in channel_rows:
            phone, hint, event_type, _, occurred, *_ = row
            stamp = occurred if "T" not in occurred else occurred[:19].replace("T", " ")
            answer = "Yes" if event_type != "subscribe" else "Maybe"
            writer.writerow([row[10], stamp, phone, hint, answer, "typeform-2026-09"])


def whatsapp_item(rng: random.Random, number, moment: datetime, i: int) -> dict:
    wa_id = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    ts = str(int(moment.timestamp()))
    kind = rng.random()
    if kind < 0.12:
        return {"statuses": [{"id": f"wamid.S{i:08d}", "status": "failed", "timestamp": ts, "recipient_id": wa_id,
                              "errors": [{"code": 131050, "title": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business."}]}]}
    if kind < 0.3:
        return {"statuses": [{"id": f"wamid.S{i:08d}", "status": rng.choice(["sent", "delivered", "read"]), "timestamp": ts,
                              "recipient_id": wa_id, "pricing": {"billable": True, "pricing_model": "PMP", "category": rng.choice(["marketing", "utility"])}}]}
    if kind < 0.42:
        return {"user_preferences": [{"wa_id": wa_id, "detail": "User requested to stop marketing messages", "category": "marketing_messages",
                                      "value": rng.choice(["stop", "stop", "resume"]), "timestamp": int(ts)}], "contacts": [{"profile": {"name": "Customer"}, "wa_id": wa_id}]}
    message: dict = {"from": wa_id, "id": f"wamid.M{i:08d}", "timestamp": ts}
    if kind < 0.6:
        message.update(type="text", text={"body": rng.choice(["STOP", "stop ", "Stop!", "UNSUBSCRIBE", "baja", "START"])})
    elif kind < 0.7:
        message.update(type="button", button={"payload": "STOP_PROMOTIONS", "text": "Stop promotions"})
    elif kind < 0.75:
        message.update(type="interactive", interactive={"type": "button_reply", "button_reply": {"id": "opt-out", "title": "Stop promotions"}})
    else:
        message.update(type="text", text={"body": rng.choice(["Hi, where is my order?", "Do you ship to Spain?", "Thanks!"])})
    return {"contacts": [{"profile": {"name": "Customer"}, "wa_id": wa_id}], "messages": [message]}


def write_webhooks(folder: Path, items: list[tuple[datetime, dict]], rng: random.Random) -> None:
    """Group items into payloads of 1-3 changes, as Meta batches them; JSONL by day plus one JSON array."""
    folder.mkdir(parents=True, exist_ok=True)
    items.sort(key=lambda x: x[0])
    payloads = []
    start = 0
    while start < len(items):
        size = rng.randint(1, 3)
        take, start = items[start : start + size], start + size
        changes = []
        for _, value in take:
            field = "user_preferences" if "user_preferences" in value else "messages"
            changes.append({"field": field, "value": {"messaging_product": "whatsapp",
                                                       "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
                                                       **value}})
        payloads.append({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": changes}]})
    half = len(payloads) // 2
    with (folder / "webhooks.jsonl").open("w", encoding="utf-8") as handle:
        for payload in payloads[:half]:
            handle.write(json.dumps(payload) + "\n")
    (folder / "webhooks_batch.json").write_text(json.dumps(payloads[half:], indent=1), encoding="utf-8")


TYPEFORM_MAPPING = """\
# How each channel's own export maps onto the canonical columns (see README).
# Example: a form tool's CSV export ("typeform_signups" folder).
channels:
  typeform_signups:
    columns:
      phone: WhatsApp number
      country: Country
      occurred_at: Submitted At
      event_type: I agree to receive offers on WhatsApp
      notice_version: Form version
      evidence_ref: Response ID
    values:
      event_type:
        "Yes": opt_in
        "No": inbound_message
    defaults:
      consent_method: checkbox
      purposes: marketing
    timezone: Europe/Berlin
    date_format: "%Y-%m-%d %H:%M:%S"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = generate(args.out, args.events, args.seed)
    (args.out / "channels.yaml").write_text(TYPEFORM_MAPPING, encoding="utf-8")
    print(json.dumps(written))


if __name__ == "__main__":
    main()
