"""Each adapter on real-format fixtures, including bad input."""

from datetime import datetime
from pathlib import Path

import pytest

from consent.reading.channels.csv_export import read_csv
from consent.reading.channels.whatsapp_webhook import read_webhooks
from consent.reading.columnar import build_file, phone_pairs
from consent.domain.events import FileContext, build_events, phone_key
from consent.domain.phones import PhoneBook, normalise
from consent.domain.policy import ChannelConfig, Policy

FIXTURES = Path(__file__).parent / "fixtures" / "exports"
NOW = datetime(2026, 11, 10)


def ctx(channel="web_form", source_file=None, **kw) -> FileContext:
    return FileContext(channel=channel, source_file=source_file or f"{channel}/x", file_hash="h", **kw)


def build(rows, context):
    phones = {phone_key(r, context): normalise(*phone_key(r, context)) for r in rows if r.needs_phone}
    return build_events(rows, context, phones, ["marketing", "utility"], NOW, "run-1")


def csv_batch(data: bytes, config=None, context=None):
    context = context or ctx()
    read = read_csv(data, context, config or ChannelConfig())
    phones = PhoneBook.of_pairs(phone_pairs(read, context))
    return read, build_file(read, context, phones, ["marketing", "utility"], NOW, "run-1")


def test_canonical_csv_rows_become_events_or_quarantine_with_reasons():
    read, batch = csv_batch((FIXTURES / "web_form" / "signups_2026-11-01.csv").read_bytes())
    assert read.row_count == 8
    assert batch.events.height + batch.quarantine.height == 8
    reasons = sorted(batch.quarantine["reason"].to_list())
    assert any("spreadsheet" in r for r in reasons)
    assert "unknown event type 'subscribe'" in reasons
    assert "unreadable date 'yesterday'" in reasons
    first = batch.events.row(0, named=True)
    assert first["phone_e164"] == "+4915112345678"
    assert first["purposes"] == ["marketing", "utility"]
    assert first["occurred_at"] == datetime(2026, 11, 1, 9, 0)
    assert (first["source_file"], first["source_line"]) == ("web_form/x", 2)


def test_offsets_and_channel_time_zone_are_converted_to_utc():
    data = b"phone,event_type,occurred_at\n+4915112345678,opt_out,2026-11-01T10:00:00+01:00\n+4915112345678,opt_out,2026-11-01 10:00:00\n"
    _, batch = csv_batch(data, ChannelConfig(timezone="Europe/Berlin"), ctx(timezone="Europe/Berlin"))
    assert batch.events["occurred_at"].to_list() == [datetime(2026, 11, 1, 9), datetime(2026, 11, 1, 9)]


def test_bom_crlf_and_booleans_are_read():
    data = "\ufeffphone,event_type,checkbox_pre_ticked,bundled_with_terms\r\n+4915112345678,opt_in,YES,0\r\n".encode("utf-8")
    _, batch = csv_batch(data)
    row = batch.events.row(0, named=True)
    assert (row["checkbox_pre_ticked"], row["bundled_with_terms"]) == (True, False)


def test_unreadable_boolean_is_quarantined():
    _, batch = csv_batch(b"phone,event_type,checkbox_pre_ticked\n+4915112345678,opt_in,maybe\n")
    assert batch.quarantine["reason"].to_list() == ["unreadable boolean 'maybe'"]


def test_missing_required_column_refuses_the_file_and_names_the_column():
    read, batch = csv_batch(b"phone;event_type\n+4915112345678;opt_in\n")
    refusal = [n for n in read.notes if n.startswith("file refused")]
    assert refusal == ["file refused: missing required column 'phone' (the header looks ';'-delimited)"]
    assert batch.events.height == 0 and batch.quarantine.height == 1


def test_ragged_rows_and_unknown_columns():
    read, batch = csv_batch(b"phone,event_type,favourite_colour\n+4915112345678,opt_out,blue\n+4915112345678,opt_out\n")
    assert read.notes == ["unknown columns ignored: favourite_colour"]
    assert batch.events.height == 1
    assert batch.quarantine["reason"].to_list() == ["ragged row: 2 fields, header has 3"]


def test_latin1_and_utf16_files_are_decoded_with_a_note():
    latin = "phone,event_type,evidence_ref\n+4915112345678,opt_out,Müller\n".encode("latin-1")
    read, batch = csv_batch(latin)
    assert "Latin-1" in read.notes[0] and batch.events["evidence_ref"].to_list() == ["Müller"]
    utf16 = "phone,event_type\n+4915112345678,opt_out\n".encode("utf-16")
    read, batch = csv_batch(utf16)
    assert batch.events.height == 1 and "UTF-16" in read.notes[0]


def test_empty_and_header_only_files_have_no_rows():
    assert csv_batch(b"")[0].row_count == 0 and csv_batch(b"")[0].notes == ["empty file"]
    assert csv_batch(b"phone,event_type\n")[0].notes == ["header only"]


def test_unbalanced_quote_quarantines_the_rest_of_the_file_as_one_row():
    read, batch = csv_batch(b'phone,event_type\n+4915112345678,opt_out\n"+447400123456,opt_out\n+12015550123,opt_out\n')
    assert batch.events.height == 1
    assert batch.quarantine.height == 1
    assert "malformed CSV" in batch.quarantine["reason"][0] or "ragged" in batch.quarantine["reason"][0]


def test_same_row_content_gets_the_same_event_id_whatever_the_file_or_column_order():
    _, a = csv_batch(b"phone,event_type\n+4915112345678,opt_out\n", context=ctx(source_file="a.csv"))
    _, b = csv_batch(b"event_type,phone\nopt_out,+4915112345678\n", context=ctx(source_file="b.csv"))
    assert a.events["event_id"].to_list() == b.events["event_id"].to_list()


def test_channel_mapping_turns_a_form_tool_export_into_canonical_events():
    config = ChannelConfig(
        columns={"phone": "WhatsApp number", "occurred_at": "Submitted At", "event_type": "Agree"},
        values={"event_type": {"Yes": "opt_in"}},
        defaults={"consent_method": "checkbox", "purposes": "marketing"},
        timezone="Europe/Berlin",
        default_region="DE",
        date_format="%d.%m.%Y %H:%M",
    )
    data = "Response ID,Submitted At,WhatsApp number,Agree\nr1,01.11.2026 10:00,0151 12345678,Yes\n".encode()
    read, batch = csv_batch(data, config, ctx(channel="typeform", timezone="Europe/Berlin", default_region="DE", date_format="%d.%m.%Y %H:%M"))
    row = batch.events.row(0, named=True)
    assert (row["phone_e164"], row["event_type"], row["consent_method"], row["purposes"]) == (
        "+4915112345678", "opt_in", "checkbox", ["marketing"],
    )
    assert row["occurred_at"] == datetime(2026, 11, 1, 9, 0)
    assert read.notes == ["unknown columns ignored: Response ID"]


# --- WhatsApp Cloud API webhooks ----------------------------------------------


def webhook_batch(name: str):
    path = FIXTURES / "whatsapp" / name
    context = ctx(channel="whatsapp")
    read = read_webhooks(path.read_bytes(), context, Policy(), path.suffix)
    return read, build(read.rows, context)


def test_webhook_with_several_entries_changes_and_messages():
    read, batch = webhook_batch("webhooks_2026-11-03.json")
    assert len(read.rows) == 5  # 2 messages, 2 statuses, 1 user preference
    events = {r["phone_e164"]: r for r in batch.events.iter_rows(named=True)}
    assert events["+447400123456"]["event_type"] == "opt_out"  # " Stop. " keyword
    assert events["+447400123456"]["purposes"] == []  # all purposes
    assert events["+12015550123"]["event_type"] == "inbound_message"
    assert events["+4915112345678"]["event_type"] == "opt_out"  # failed send, error 131050
    assert events["+4915112345678"]["purposes"] == ["marketing"]
    assert events["+918123456789"]["event_type"] == "opt_out"  # user_preferences stop
    assert events["+447400123456"]["evidence_ref"].startswith("wamid.")
    assert events["+447400123456"]["occurred_at"] == datetime(2026, 11, 3, 9, 0)
    assert batch.skipped["reason"].to_list() == ["message status 'delivered' is not a consent event"]
    assert events["+4915112345678"]["source_pointer"] == "entry[0].changes[1].value.statuses[0]"


def test_jsonl_buttons_system_messages_bad_lines_and_redelivery():
    read, batch = webhook_batch("webhooks_2026-11-04.jsonl")
    assert len(read.rows) == 5
    by_type = {(r["phone_e164"], r["event_type"]) for r in batch.events.iter_rows(named=True)}
    assert ("+5511961234567", "opt_out") in by_type  # "Stop promotions" quick reply
    assert ("+918123456789", "resume") in by_type  # system user_preference_changed
    reasons = batch.quarantine["reason"].to_list()
    assert any(r.startswith("malformed JSON line") for r in reasons)
    assert "not a WhatsApp Business webhook payload" in reasons
    assert batch.quarantine["source_line"].to_list() == [3, 4]


def test_redelivered_message_has_the_event_id_of_the_first_delivery():
    _, first = webhook_batch("webhooks_2026-11-03.json")
    _, second = webhook_batch("webhooks_2026-11-04.jsonl")
    redelivered = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
    ids = [{r["evidence_ref"]: r["event_id"] for r in batch.events.iter_rows(named=True)} for batch in (first, second)]
    # The one message delivered in both files has one event id; every other event has its own.
    assert ids[0][redelivered] == ids[1][redelivered]
    assert set(ids[0].values()) & set(ids[1].values()) == {ids[0][redelivered]}


@pytest.mark.parametrize(
    ("body", "event_type"),
    [("STOP", "opt_out"), ("stop all", "opt_out"), ("Opt-Out!", "opt_out"), ("  unsubscribe. ", "opt_out"),
     ("Baja", "opt_out"), ("START", "resume"), ("please stop sending", "inbound_message"), ("stopp", "inbound_message")],
)
def test_keywords_are_whole_message_case_and_punctuation_insensitive(body, event_type):
    payload = (
        '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":'
        '{"messages":[{"from":"4915112345678","id":"wamid.X","timestamp":"1762160400","type":"text","text":{"body":%s}}]}}]}]}'
    ) % __import__("json").dumps(body)
    read = read_webhooks(payload.encode(), ctx(channel="whatsapp"), Policy(), ".json")
    assert read.rows[0].fields["event_type"] == event_type


def test_unknown_message_type_is_still_an_inbound_message():
    payload = b'{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"messages":[{"from":"4915112345678","id":"wamid.R","timestamp":"1762160400","type":"reaction","reaction":{"emoji":"x"}}]}}]}]}'
    read = read_webhooks(payload, ctx(channel="whatsapp"), Policy(), ".json")
    assert read.rows[0].fields["event_type"] == "inbound_message"


def test_malformed_json_file_is_one_quarantined_row():
    read = read_webhooks(b'{"object": "whatsapp_business_account", "entry": [', ctx(channel="whatsapp"), Policy(), ".json")
    assert len(read.rows) == 1 and read.rows[0].error.startswith("malformed JSON file")


def test_webhook_item_with_fields_of_the_wrong_type_is_quarantined():
    payload = b'{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"messages":[{"from":"4915112345678","id":"wamid.W","type":"text","text":"STOP"}]}}]}]}'
    read = read_webhooks(payload, ctx(channel="whatsapp"), Policy(), ".json")
    assert [r.error for r in read.rows] == ["malformed webhook item in messages"]
