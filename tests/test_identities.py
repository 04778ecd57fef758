"""Who consented to whom: business-scoped user IDs, number changes, consent per business.

Webhook payloads are in the shapes of Meta's 2026 webhook reference (messages
with `from_user_id` and `contacts[].user_id`, statuses with
`recipient_user_id`, `user_preferences` with `user_id`, `system` messages
`user_changed_number` / `user_changed_user_id`), through `consent run`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tests.conftest import query, run_cli

PHONE = "+4915112345678"
NEW_PHONE = "+4915199887766"
USER = "DE.13491208655302741918"
PARENT = "DE.ENT.11815799212886844830"
SHOES_NUMBER_ID, BANK_NUMBER_ID = "106540352242922", "106540352249999"
CSV_HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version,whatsapp_user_id\n"


def stamp(day: int, hour: int = 12) -> str:
    return str(int(datetime(2026, 11, day, hour, tzinfo=timezone.utc).timestamp()))


def payload(value: dict, number_id: str = SHOES_NUMBER_ID) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": number_id}, **value}}]}]}


def username_stop(day: int, mid: str = "wamid.stop1", number_id: str = SHOES_NUMBER_ID) -> dict:
    """A STOP from a user who adopted a username: no `from`, no `wa_id`, a BSUID only."""
    return payload({
        "contacts": [{"profile": {"name": "Kim", "username": "@kim.b"}, "user_id": USER}],
        "messages": [{"from_user_id": USER, "id": mid, "timestamp": stamp(day), "type": "text", "text": {"body": "STOP"}}],
    }, number_id)


def delivered(day: int, mid: str = "wamid.sent1", with_phone: bool = True) -> dict:
    status = {"id": mid, "status": "delivered", "timestamp": stamp(day), "recipient_user_id": USER,
              "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing"}}
    if with_phone:
        status["recipient_id"] = PHONE[1:]
    return payload({"statuses": [status]})


def write(exports: Path, name: str, content: str | list[dict]) -> None:
    path = exports / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else "\n".join(json.dumps(p) for p in content) + "\n")


def web_opt_in(exports: Path, *rows: str) -> None:
    lines = rows or (f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,",)
    write(exports, "web_form/signups.csv", CSV_HEADER + "\n".join(lines) + "\n")


def status_of(warehouse: Path, business: str = "default") -> dict[tuple[str, str], str]:
    rows = query(warehouse, "SELECT contact_id, purpose, status FROM consent_status WHERE business = ?", [business])
    return {(c, p): s for c, p, s in rows}


def test_a_stop_by_bsuid_only_reaches_the_number_it_is_linked_to(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    # The web form knows the number and (from an earlier chat) the BSUID: that row links them.
    web_opt_in(exports, f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    write(exports, "whatsapp/hooks.jsonl", [username_stop(5)])
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_out"}
    event = query(warehouse, "SELECT phone_e164, whatsapp_user_id, event_type FROM consent_events WHERE channel = 'whatsapp'")
    assert event == [(None, USER, "opt_out")]  # kept as received: no number in the payload
    links = query(warehouse, "SELECT phone_e164, whatsapp_user_id, source_file, source_line FROM identifier_links")
    assert links == [(PHONE, USER, "web_form/signups.csv", 2)]
    # The username is a display name: stored nowhere.
    for table in ("consent_events", "identifier_links", "consent_status"):
        assert "kim.b" not in json.dumps(query(warehouse, f"SELECT * FROM {table}"), default=str)


def test_the_link_learnt_in_a_later_run_than_the_stop_applies_it_and_the_bsuid_only_opt_out_is_suppressed(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports)
    write(exports, "whatsapp/hooks_1.jsonl", [username_stop(5)])
    assert run_cli(exports, warehouse, as_of="2026-11-06T00:00:00Z") == 0
    # Kept against the BSUID alone, never quarantined; the number is still opted in (no link yet).
    assert status_of(warehouse)[(USER, "marketing")] == "opted_out"
    assert status_of(warehouse)[(PHONE, "marketing")] == "opted_in"
    assert query(warehouse, "SELECT count(*) FROM quarantine") == [(0,)]
    out = tmp_path / "suppression.csv"
    from cli.main import main

    assert main(["export", "--suppression", "--purpose", "marketing", "--warehouse", str(warehouse), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("phone_e164,whatsapp_user_id,business,purpose")
    assert any(line.startswith(f",{USER},default,marketing") for line in lines[1:])

    # Next night: a status webhook of a message sent to the number shows both identifiers.
    write(exports, "whatsapp/hooks_2.jsonl", [delivered(6)])
    assert run_cli(exports, warehouse, as_of="2026-11-07T00:00:00Z") == 0
    assert status_of(warehouse) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_out"}
    row = query(warehouse, "SELECT status_since, opt_out_channel, whatsapp_user_id FROM consent_status "
                           "WHERE contact_id = ? AND purpose = 'marketing'", [PHONE])
    assert row == [(datetime(2026, 11, 5, 12), "whatsapp", USER)]  # decided at the STOP, not at the link


def test_user_preferences_stop_and_131050_failure_addressed_by_bsuid(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}",
               f"+4915155554444,,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,DE.777")
    preference = payload({"user_preferences": [{"user_id": USER, "category": "marketing_messages", "value": "stop",
                                                "timestamp": stamp(4), "detail": "User requested to stop marketing messages"}]})
    failed = payload({"statuses": [{"id": "wamid.failed1", "status": "failed", "timestamp": stamp(6), "recipient_user_id": "DE.777",
                                    "errors": [{"code": 131050, "title": "User has stopped marketing messages"}]}]})
    write(exports, "whatsapp/hooks.jsonl", [preference, failed])
    assert run_cli(exports, warehouse) == 0
    statuses = status_of(warehouse)
    assert statuses[(PHONE, "marketing")] == "opted_out" and statuses[("+4915155554444", "marketing")] == "opted_out"
    assert query(warehouse, "SELECT recipient_e164, recipient_user_id FROM message_statuses") == [(None, "DE.777")]


def test_a_malformed_bsuid_is_quarantined_with_the_reason_and_a_message_without_any_sender_too(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    bad = username_stop(5)
    bad["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = "13491208655302741918"
    nobody = payload({"messages": [{"id": "wamid.x", "timestamp": stamp(5), "type": "text", "text": {"body": "STOP"}}]})
    write(exports, "whatsapp/hooks.jsonl", [bad, nobody])
    assert run_cli(exports, warehouse) == 0
    reasons = sorted(r for (r,) in query(warehouse, "SELECT reason FROM quarantine"))
    assert reasons[0].startswith("invalid WhatsApp user ID") and "13491208655302741918" not in reasons[0]
    assert reasons[1] == "message without sender (from, from_user_id)"


def test_a_number_change_ends_the_old_numbers_consent_and_carries_opt_outs(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,utility,2026-11-01T10:00:00Z,checkbox,v1,",
               f"{PHONE},,opt_out,marketing,2026-11-02T10:00:00Z,,,")
    change = payload({"messages": [{"from": PHONE[1:], "id": "wamid.change", "timestamp": stamp(5), "type": "system",
                                    "system": {"body": "User Kim changed from 4915112345678 to 4915199887766",
                                               "wa_id": NEW_PHONE[1:], "type": "user_changed_number",
                                               "previous_user_id": USER, "user_id": "DE.24680"}}]})
    write(exports, "whatsapp/hooks.jsonl", [change])
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse) == {
        (PHONE, "utility"): "no_consent", (PHONE, "marketing"): "opted_out",  # the old number may be reassigned
        (NEW_PHONE, "utility"): "no_consent", (NEW_PHONE, "marketing"): "opted_out",  # the opt-out follows the person
    }
    decided = query(warehouse, "SELECT decided_by_event_id FROM consent_status WHERE contact_id = ? AND purpose = 'utility'", [PHONE])
    change_id = query(warehouse, "SELECT event_id FROM consent_events WHERE event_type = 'number_change'")
    assert decided == change_id
    assert (NEW_PHONE, "DE.24680") in query(warehouse, "SELECT phone_e164, whatsapp_user_id FROM identifier_links")

    # With `number_change: carry` the consent moves too, with its original evidence.
    write(exports, "policy.yaml", "number_change: carry\n")
    assert run_cli(exports, warehouse, "--full") == 0
    assert status_of(warehouse)[(NEW_PHONE, "utility")] == "opted_in"
    assert status_of(warehouse)[(PHONE, "utility")] == "no_consent"
    evidence = query(warehouse, "SELECT channel, consent_method, source_file, decided_by_event_id FROM consent_status "
                                "WHERE contact_id = ? AND purpose = 'utility'", [NEW_PHONE])
    assert evidence == [("web_form", "checkbox", "web_form/signups.csv", change_id[0][0])]


def test_a_bsuid_change_moves_the_link_to_the_new_bsuid(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    changed = payload({"messages": [{"from_user_id": "DE.99", "id": "wamid.uid", "timestamp": stamp(3), "type": "system",
                                     "system": {"body": "User Kim changed", "type": "user_changed_user_id",
                                                "previous_user_id": USER, "user_id": "DE.99"}}]})
    stop = username_stop(5)
    stop["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = "DE.99"
    stop["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = "DE.99"
    write(exports, "whatsapp/hooks.jsonl", [changed, stop])
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_out"}
    assert query(warehouse, "SELECT reason FROM skipped_items") == [("BSUID change: recorded as an identifier link, not a consent event",)]


BUSINESSES = f"""businesses:
  acme_shoes:
    channels: [web_form, whatsapp]
    whatsapp_phone_number_ids: ["{SHOES_NUMBER_ID}"]
  acme_bank:
    channels: [bank_form, whatsapp_bank]
    whatsapp_phone_number_ids: ["{BANK_NUMBER_ID}"]
"""


def two_brands(exports: Path) -> None:
    write(exports, "businesses.yaml", BUSINESSES)
    web_opt_in(exports)
    write(exports, "bank_form/signups.csv", CSV_HEADER + f"{PHONE},,opt_in,marketing,2026-11-01T11:00:00Z,checkbox,bank-v1,\n")
    stop = payload({"contacts": [{"profile": {"name": "Kim"}, "wa_id": PHONE[1:]}],
                    "messages": [{"from": PHONE[1:], "id": "wamid.bankstop", "timestamp": stamp(5), "type": "text",
                                  "text": {"body": "STOP"}}]}, BANK_NUMBER_ID)
    # The bank's webhook lands in the shoes folder: the phone_number_id decides, not the folder.
    write(exports, "whatsapp/hooks.jsonl", [stop])


def test_two_businesses_keep_separate_consent_and_a_stop_to_one_ends_only_its_own(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    two_brands(exports)
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse, "acme_shoes")[(PHONE, "marketing")] == "opted_in"
    assert status_of(warehouse, "acme_bank")[(PHONE, "marketing")] == "opted_out"
    assert query(warehouse, "SELECT count(*) FROM consent_status WHERE business = 'default'") == [(0,)]
    from cli.main import main

    assert main(["export", "--purpose", "marketing", "--warehouse", str(warehouse)]) == 2  # which business?
    out = tmp_path / "shoes.txt"
    assert main(["export", "--purpose", "marketing", "--business", "acme_shoes", "--warehouse", str(warehouse),
                 "--out", str(out)]) == 0
    assert out.read_text().split() == [PHONE]
    out_bank = tmp_path / "bank.txt"
    assert main(["export", "--purpose", "marketing", "--business", "acme_bank", "--warehouse", str(warehouse),
                 "--out", str(out_bank)]) == 0
    assert out_bank.read_text().split() == []


def test_opt_out_scope_all_businesses_ends_every_brands_consent(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    two_brands(exports)
    write(exports, "policy.yaml", "opt_out_scope: all_businesses\n")
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse, "acme_shoes")[(PHONE, "marketing")] == "opted_out"
    assert status_of(warehouse, "acme_bank")[(PHONE, "marketing")] == "opted_out"
    # The violation-free opt-out is recorded once, at the business that received it.
    assert query(warehouse, "SELECT DISTINCT business FROM consent_events WHERE event_type = 'opt_out'") == [("acme_bank",)]


def test_businesses_yaml_conflicts_are_configuration_errors_and_an_unclaimed_number_is_quarantined(tmp_path, capsys):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    two_brands(exports)
    write(exports, "businesses.yaml", BUSINESSES.replace("[bank_form, whatsapp_bank]", "[bank_form, web_form]"))
    assert run_cli(exports, warehouse) == 2
    assert "channel folder 'web_form' is claimed by both 'acme_shoes' and 'acme_bank'" in capsys.readouterr().err
    write(exports, "businesses.yaml", BUSINESSES.replace("[bank_form, whatsapp_bank]", "[whatsapp_bank]"))
    assert run_cli(exports, warehouse) == 2
    assert "channel folder 'bank_form' is not claimed by any business" in capsys.readouterr().err
    write(exports, "businesses.yaml", BUSINESSES.replace(BANK_NUMBER_ID, "999"))
    assert run_cli(exports, warehouse) == 0
    assert query(warehouse, "SELECT reason FROM quarantine") == [
        ("phone_number_id of the webhook is not claimed by any business in businesses.yaml",)]


def test_a_notice_shown_for_another_business_does_not_support_the_consent(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    two_brands(exports)
    write(exports, "notices/bank-v1.yaml", "version: bank-v1\nbusiness: acme_shoes\nbusiness_name: Acme Shoes\n"
          "purposes: [marketing]\ntext: Acme Shoes may send you offers on WhatsApp. Reply STOP to opt out.\n")
    assert run_cli(exports, warehouse) == 0
    violations = query(warehouse, "SELECT business, rule, refused FROM consent_violations WHERE rule = 'notice_names_other_business'")
    assert violations == [("acme_bank", "notice_names_other_business", True)]
    assert status_of(warehouse, "acme_bank")[(PHONE, "marketing")] == "opted_out"
    assert query(warehouse, "SELECT business FROM consent_notices") == [("acme_shoes",)]


def test_erase_and_access_by_bsuid_cover_the_linked_number(tmp_path, capsys):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    write(exports, "whatsapp/hooks.jsonl", [username_stop(5), delivered(3)])
    assert run_cli(exports, warehouse) == 0
    from cli.main import main

    assert main(["access", USER, "--warehouse", str(warehouse), "--out", str(tmp_path / "access.json")]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "access.json").read_text())
    assert sorted(report["identifiers"]) == [PHONE, USER] and len(report["consent_events"]) == 2
    assert main(["audit", "evidence", USER, "--warehouse", str(warehouse), "--format", "json"]) == 0
    kinds = [r["kind"] for r in json.loads(capsys.readouterr().out)]
    assert kinds.count("event") == 2 and kinds.count("link") == 1
    assert main(["erase", USER, "--warehouse", str(warehouse), "--exports", str(exports)]) == 0
    for table, column in (("consent_events", "coalesce(phone_e164, whatsapp_user_id)"), ("consent_status", "contact_id"),
                          ("identifier_links", "coalesce(phone_e164, whatsapp_user_id)"),
                          ("message_statuses", "coalesce(recipient_e164, recipient_user_id)")):
        assert query(warehouse, f"SELECT count(*) FROM {table} WHERE {column} IN (?, ?)", [PHONE, USER]) == [(0,)], table
    assert query(warehouse, "SELECT count(*) FROM suppression_list") == [(2,)]
    # Both exports come again, each with a row of another person more (so both files are read again):
    # neither identifier comes back, by number or by BSUID alone (the STOP names only the BSUID).
    other = username_stop(6, mid="wamid.other")
    other["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = "DE.42"
    other["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = "DE.42"
    write(exports, "whatsapp/hooks.jsonl", [username_stop(5), delivered(3), other])
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}",
               f"{NEW_PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,")
    assert run_cli(exports, warehouse, "--full") == 0
    assert query(warehouse, "SELECT files_read FROM runs ORDER BY started_at DESC LIMIT 1") == [(2,)]
    assert sorted(query(warehouse, "SELECT coalesce(phone_e164, whatsapp_user_id), event_type FROM consent_events")) == [
        (NEW_PHONE, "opt_in"), ("DE.42", "opt_out")]
    # The opt-in, the STOP and the delivery status naming them: skipped as erased, without raw rows.
    assert query(warehouse, "SELECT count(*), count(raw_row) FROM skipped_items WHERE reason LIKE 'erased%'") == [(3, 0)]
    # Nor do the links or sends that named them.
    assert query(warehouse, "SELECT count(*) FROM identifier_links") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM message_statuses") == [(0,)]


def test_a_bsuid_is_scoped_to_its_business_unless_a_parent_bsuid_ties_them(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    write(exports, "businesses.yaml", BUSINESSES)
    # The shoe shop linked the number to USER; the bank gets a STOP by the same BSUID text.
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    write(exports, "bank_form/signups.csv", CSV_HEADER + f"{PHONE},,opt_in,marketing,2026-11-01T11:00:00Z,checkbox,bank-v1,\n")
    write(exports, "whatsapp_bank/hooks.jsonl", [username_stop(5, number_id=BANK_NUMBER_ID)])
    assert run_cli(exports, warehouse) == 0
    # Another portfolio's BSUID is another person: the bank's number stays opted in, the STOP is kept by BSUID.
    assert status_of(warehouse, "acme_bank")[(PHONE, "marketing")] == "opted_in"
    assert status_of(warehouse, "acme_bank")[(USER, "marketing")] == "opted_out"
    assert status_of(warehouse, "acme_shoes")[(PHONE, "marketing")] == "opted_in"

    # A parent BSUID (enterprise-wide) ties them: the shop's link carries it, the bank's STOP too.
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    stop = username_stop(5, mid="wamid.stop2", number_id=BANK_NUMBER_ID)
    stop["entry"][0]["changes"][0]["value"]["contacts"][0]["parent_user_id"] = PARENT
    shop_hello = payload({"contacts": [{"profile": {"name": "Kim"}, "wa_id": PHONE[1:], "user_id": USER, "parent_user_id": PARENT}],
                          "messages": [{"from": PHONE[1:], "from_user_id": USER, "id": "wamid.hello", "timestamp": stamp(2),
                                        "type": "text", "text": {"body": "hello"}}]})
    write(exports, "whatsapp/hooks.jsonl", [shop_hello])
    write(exports, "whatsapp_bank/hooks_2.jsonl", [stop])
    assert run_cli(exports, warehouse, as_of="2026-11-11T00:00:00Z") == 0
    assert status_of(warehouse, "acme_bank")[(PHONE, "marketing")] == "opted_out"
    assert status_of(warehouse, "acme_shoes")[(PHONE, "marketing")] == "opted_in"


def test_a_user_id_update_item_in_the_older_shape_is_a_link(tmp_path):
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    update = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "user_id_update", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": SHOES_NUMBER_ID},
        "user_id_update": [{"previous": {"user_id": USER}, "current": {"user_id": "DE.5555"}, "timestamp": stamp(3)}]}}]}]}
    stop = username_stop(5)
    stop["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = "DE.5555"
    stop["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = "DE.5555"
    write(exports, "whatsapp/hooks.jsonl", [update, stop])
    assert run_cli(exports, warehouse) == 0
    assert status_of(warehouse)[(PHONE, "marketing")] == "opted_out"
    assert ("DE.5555", USER) in query(warehouse, "SELECT whatsapp_user_id, previous_user_id FROM identifier_links")


def test_a_night_reads_every_event_its_contacts_inherit_through_number_changes_and_links(tmp_path):
    """A night re-decides its contacts from the events and links it touched, grown until
    closed (consent/storage/sql/event_scope.sql). The new number's utility consent is carried from the old
    number's web-form opt-in, two steps away from the night's only event; the BSUID's STOP reaches
    the number it was linked to a night earlier. Same statuses and history as a full run."""
    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    write(exports, "policy.yaml", "number_change: carry\n")
    web_opt_in(exports, f"{PHONE},,opt_in,utility,2026-11-01T10:00:00Z,checkbox,v1,",
               f"+4915100000001,,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}")
    change = payload({"messages": [{"from": PHONE[1:], "id": "wamid.change", "timestamp": stamp(5), "type": "system",
                                    "system": {"body": "changed", "wa_id": NEW_PHONE[1:], "type": "user_changed_number"}}]})
    write(exports, "whatsapp/hooks.jsonl", [change])
    assert run_cli(exports, warehouse, as_of="2026-11-08T00:00:00Z") == 0
    write(exports, "in_app/night2.csv", CSV_HEADER + f"{NEW_PHONE},,opt_in,marketing,2026-11-08T10:00:00Z,checkbox,v1,\n")
    write(exports, "whatsapp/night2.jsonl", [username_stop(8)])
    assert run_cli(exports, warehouse, as_of="2026-11-10T00:00:00Z") == 0
    night = status_of(warehouse)
    assert night[(NEW_PHONE, "utility")] == "opted_in" and night[(NEW_PHONE, "marketing")] == "opted_in"
    assert night[("+4915100000001", "marketing")] == "opted_out"
    assert night[("+4915100000001", "utility")] == "opted_out"
    history = "SELECT * EXCLUDE (phone_e164) FROM consent_status_history ORDER BY ALL"
    by_night = query(warehouse, history)
    assert run_cli(exports, warehouse, "--full", as_of="2026-11-10T00:00:00Z") == 0
    assert status_of(warehouse) == night and query(warehouse, history) == by_night


def test_a_nights_status_addressed_by_bsuid_alone_reaches_the_marts_of_the_number_it_is_linked_to(tmp_path):
    """A night builds send_audit and opt_out_timeliness from the messages and history of
    the contacts in scope only. A status that names only the BSUID arrives a night after the STOP;
    the number it is linked to has no new event that night, yet its audit rows appear, as a full
    build gives them."""
    from consent import marts

    exports, warehouse = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    web_opt_in(exports, f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}",
               "+4915100000001,,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,")
    write(exports, "whatsapp/hooks_1.jsonl", [username_stop(3)])
    assert run_cli(exports, warehouse, as_of="2026-11-06T00:00:00Z") == 0
    write(exports, "whatsapp/hooks_2.jsonl", [delivered(6, with_phone=False)])
    assert run_cli(exports, warehouse, as_of="2026-11-07T00:00:00Z") == 0
    assert query(warehouse, "SELECT count(*) FROM staging.stg_touched WHERE contact_key LIKE ?", [f"%{PHONE}"]) == [(0,)]
    modes = dict(query(warehouse, "SELECT mart, mode FROM mart_builds"))
    assert modes["send_audit"] == modes["opt_out_timeliness"] == "incremental"
    hashed = query(warehouse, "SELECT DISTINCT contact_hash FROM opt_out_timeliness")
    assert query(warehouse, "SELECT message_id, category, status_at_send, finding FROM send_audit") == [
        ("wamid.sent1", "marketing", "opted_out", "sent_after_opt_out")]
    assert query(warehouse, "SELECT messages_after_opt_out, findings FROM opt_out_timeliness") == [
        (1, ["sent_after_opt_out", "backfilled"])] and len(hashed) == 1  # the channel's first run
    by_night = {m: query(warehouse, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS}
    assert run_cli(exports, warehouse, "--full", as_of="2026-11-07T00:00:00Z") == 0
    assert {m: query(warehouse, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS} == by_night
