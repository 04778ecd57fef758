"""Edge cases of consent-rules.md section 11, one test (or two) per item, in the real input formats:
canonical CSV rows and WhatsApp Cloud API webhooks through `consent run`, the gate through
`consent check`, and the state machine directly where that is the real path (validity maps)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from tests.conftest import query, run_cli

HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version,whatsapp_user_id\n"
PHONE, PHONE_B, NEW_PHONE, OTHER = "+4915112345678", "+4915122223333", "+4915199887766", "+4915144445555"
USER, USER_2 = "DE.13491208655302741918", "DE.24680135791357924680"
NUMBER_ID = "106540352242922"


def stamp(day: int, hour: int = 12, minute: int = 0) -> str:
    return str(int(datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc).timestamp()))


def hook(value: dict) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER_ID},
        **value}}]}]}


def username_stop(day: int, user: str = USER, mid: str = "wamid.stop1") -> dict:
    """A STOP from a user who adopted a username: a BSUID, no number."""
    return hook({"contacts": [{"profile": {"name": "Kim", "username": "@kim.b"}, "user_id": user}],
                 "messages": [{"from_user_id": user, "id": mid, "timestamp": stamp(day), "type": "text", "text": {"body": "STOP"}}]})


def text_from(phone: str, day: int, body: str, mid: str) -> dict:
    return hook({"contacts": [{"profile": {"name": "Kim"}, "wa_id": phone[1:]}],
                 "messages": [{"from": phone[1:], "id": mid, "timestamp": stamp(day), "type": "text", "text": {"body": body}}]})


def sent(phone: str | None, day: int, mid: str, category: str = "marketing", user: str | None = None,
         hour: int = 12, minute: int = 0) -> dict:
    """A status webhook of a message the business sent; with both identifiers it links them."""
    status = {"id": mid, "status": "delivered", "timestamp": stamp(day, hour, minute),
              "pricing": {"billable": True, "pricing_model": "PMP", "category": category}}
    if phone:
        status["recipient_id"] = phone[1:]
    if user:
        status["recipient_user_id"] = user
    return hook({"statuses": [status]})


def number_change(old: str, new: str, day: int) -> dict:
    return hook({"messages": [{"from": old[1:], "id": f"wamid.change{day}", "timestamp": stamp(day), "type": "system",
                               "system": {"body": f"User Kim changed from {old[1:]} to {new[1:]}", "wa_id": new[1:],
                                          "type": "user_changed_number"}}]})


def write(path: Path, content: str | list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else "\n".join(json.dumps(p) for p in content) + "\n")


def rows(*lines: str) -> str:
    return HEADER + "\n".join(lines) + "\n"


def status_of(warehouse: Path) -> dict[tuple[str, str], str]:
    return {(c, p): s for c, p, s in query(warehouse, "SELECT contact_id, purpose, status FROM consent_status")}


def history_of(warehouse: Path) -> list[tuple]:
    return query(warehouse, "SELECT contact_id, purpose, status, valid_from, valid_to, decided_by_event_id "
                            "FROM consent_status_history ORDER BY ALL")


def cli(*args: str) -> int:
    from cli.main import main

    return main(list(args))


def check(warehouse: Path, tmp_path: Path, audience: str, at: str, *extra: str, purpose: str = "marketing") -> tuple[int, list[dict]]:
    source, out = tmp_path / "audience.csv", tmp_path / "decisions.csv"
    source.write_text(audience)
    out.unlink(missing_ok=True)
    exports = warehouse.parent.parent / "exports"
    code = cli("check", str(source), "--purpose", purpose, "--warehouse", str(warehouse), "--out", str(out),
               "--at", at, "--policy", str(exports / "policy.yaml"), *extra)
    return code, list(csv.DictReader(io.StringIO(out.read_text()))) if out.exists() else []


def paths(tmp_path: Path, name: str) -> tuple[Path, Path]:
    return tmp_path / name / "exports", tmp_path / name / "wh" / "consent.duckdb"


# --- 1. A link learnt late applies from the event -------------------------------------------------

def test_1_a_link_learnt_late_applies_from_the_stop_whichever_arrives_first(tmp_path):
    """STOP by BSUID at t1 (11-05), the link first seen at t2 (11-08): the number reads opted_out from
    t1, also at an `--at` between t1 and t2, whether the STOP or the link reached the warehouse first."""
    signup = rows(f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,")
    link = [sent(PHONE, 8, "wamid.sent1", user=USER)]
    # Order A: the STOP first (night of the 6th), the link a night later.
    exports_a, wh_a = paths(tmp_path, "a")
    write(exports_a / "web_form/signups.csv", signup)
    write(exports_a / "whatsapp/stop.jsonl", [username_stop(5)])
    assert run_cli(exports_a, wh_a, as_of="2026-11-06T00:00:00Z") == 0
    write(exports_a / "whatsapp/link.jsonl", link)
    assert run_cli(exports_a, wh_a, as_of="2026-11-10T00:00:00Z") == 0
    # Order B: the link first, the STOP's export arrives late.
    exports_b, wh_b = paths(tmp_path, "b")
    write(exports_b / "web_form/signups.csv", signup)
    write(exports_b / "whatsapp/link.jsonl", link)
    assert run_cli(exports_b, wh_b, as_of="2026-11-09T00:00:00Z") == 0
    write(exports_b / "whatsapp/stop.jsonl", [username_stop(5)])
    assert run_cli(exports_b, wh_b, as_of="2026-11-10T00:00:00Z") == 0

    for wh in (wh_a, wh_b):
        assert status_of(wh) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_out"}
        since = query(wh, "SELECT DISTINCT status_since FROM consent_status")
        assert since == [(datetime(2026, 11, 5, 12),)]  # from the STOP, not from the link
        for at, reason in (("2026-11-04T00:00:00Z", "opted_in"), ("2026-11-06T00:00:00Z", "opted_out"),
                           ("2026-11-07T23:00:00Z", "opted_out")):
            code, decided = check(wh, tmp_path, f"phone\n{PHONE}\n", at)
            assert code in (0, 3) and [r["reason"] for r in decided] == [reason], (wh, at)
    assert history_of(wh_a) == history_of(wh_b)
    # and a single run over everything gives the same history
    exports_c, wh_c = paths(tmp_path, "c")
    write(exports_c / "web_form/signups.csv", signup)
    write(exports_c / "whatsapp/all.jsonl", [username_stop(5), *link])
    assert run_cli(exports_c, wh_c, as_of="2026-11-10T00:00:00Z") == 0
    assert history_of(wh_c) == history_of(wh_a)


# --- 2. A BSUID linked to two numbers --------------------------------------------------------------

def _two_numbers(exports: Path, second_link_later: bool, wh: Path) -> None:
    """USER linked to PHONE (11-01) and to PHONE_B (11-03), both opted in; then a BSUID-only STOP
    (11-05) and a BSUID-only opt-in from the app (11-06)."""
    write(exports / "web_form/signups.csv", rows(
        f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}",
        f"{PHONE_B},,opt_in,marketing;utility,2026-11-02T10:00:00Z,checkbox,v1,"))
    write(exports / "whatsapp/stop.jsonl", [username_stop(5)])
    write(exports / "in_app/consents.csv", rows(",,opt_in,marketing,2026-11-06T10:00:00Z,in_app_prompt,v1," + USER))
    second = [sent(PHONE_B, 3, "wamid.b1", category="utility", user=USER)]
    if second_link_later:
        assert run_cli(exports, wh, as_of="2026-11-07T00:00:00Z") == 0
        assert status_of(wh)[(PHONE, "marketing")] == "opted_in"  # the app opt-in reached the only link
        assert status_of(wh)[(PHONE_B, "marketing")] == "opted_in"
    write(exports / "whatsapp/link_b.jsonl", second)
    assert run_cli(exports, wh, as_of="2026-11-10T00:00:00Z") == 0


def test_2_a_bsuid_only_stop_reaches_every_linked_number_and_its_opt_in_only_the_latest(tmp_path):
    results = []
    for later in (False, True):
        exports, wh = paths(tmp_path, f"later_{later}")
        _two_numbers(exports, later, wh)
        assert status_of(wh) == {
            (PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_out",  # when in doubt, suppress
            (PHONE_B, "marketing"): "opted_in", (PHONE_B, "utility"): "opted_out",  # the app opt-in: latest link only
        }, later
        results.append(history_of(wh))
        out = tmp_path / f"suppression_{later}.csv"
        assert cli("export", "--suppression", "--purpose", "utility", "--warehouse", str(wh), "--out", str(out)) == 0
        listed = {line.split(",")[0] for line in out.read_text().splitlines()[1:]}
        assert listed == {PHONE, PHONE_B}
    assert results[0] == results[1]  # the second link's arrival order does not matter
    # a --full run over the same warehouse decides the same
    exports, wh = paths(tmp_path, "later_True")
    assert run_cli(exports, wh, "--full", as_of="2026-11-10T00:00:00Z") == 0
    assert history_of(wh) == results[0]


def test_2_a_newer_link_learnt_on_a_later_night_takes_the_bsuid_only_opt_in_from_the_earlier_number(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "web_form/signups.csv", rows(f"{PHONE},,inbound_message,,2026-11-01T10:00:00Z,,,{USER}"))
    write(exports / "in_app/consents.csv", rows(",,opt_in,marketing,2026-11-06T10:00:00Z,in_app_prompt,v1," + USER))
    assert run_cli(exports, wh, as_of="2026-11-07T00:00:00Z") == 0
    assert status_of(wh)[(PHONE, "marketing")] == "opted_in"
    # the next night learns that the BSUID was linked to PHONE_B on the 3rd: the opt-in is PHONE_B's
    write(exports / "whatsapp/link_b.jsonl", [sent(PHONE_B, 3, "wamid.b1", category="utility", user=USER)])
    assert run_cli(exports, wh, as_of="2026-11-08T00:00:00Z") == 0
    assert status_of(wh) == {(PHONE, "marketing"): "no_consent", (PHONE, "utility"): "no_consent",
                             (PHONE_B, "marketing"): "opted_in", (PHONE_B, "utility"): "no_consent"}
    night = history_of(wh)
    assert run_cli(exports, wh, "--full", as_of="2026-11-08T00:00:00Z") == 0
    assert history_of(wh) == night


# --- 3. The old number's own opt-out survives a number change --------------------------------------

def test_3_a_number_change_ends_consents_never_the_old_numbers_own_opt_out(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "web_form/signups.csv", rows(
        f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{PHONE},,opt_out,marketing,2026-11-02T10:00:00Z,,,"))
    write(exports / "whatsapp/change.jsonl", [number_change(PHONE, NEW_PHONE, 5)])
    assert run_cli(exports, wh) == 0
    assert status_of(wh) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "no_consent",
                             (NEW_PHONE, "marketing"): "opted_out", (NEW_PHONE, "utility"): "no_consent"}
    # the old number's opt-out is still decided by the opt-out itself, from its own date
    row = query(wh, "SELECT s.status_since, e.event_type FROM consent_status AS s JOIN consent_events AS e "
                    "ON e.event_id = s.decided_by_event_id WHERE s.contact_id = ? AND s.purpose = 'marketing'", [PHONE])
    assert row == [(datetime(2026, 11, 2, 10), "opt_out")]
    code, decided = check(wh, tmp_path, f"phone\n{PHONE}\n{NEW_PHONE}\n", "2026-11-09T00:00:00Z")
    assert code == 3 and [r["reason"] for r in decided] == ["opted_out", "opted_out"]


# --- 4. Events from the old number after a change stay with the old number -------------------------

def test_4_the_old_numbers_events_after_a_change_never_carry_to_the_new_number(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "web_form/signups.csv", rows(
        f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{NEW_PHONE},,opt_in,marketing,2026-11-07T10:00:00Z,checkbox,v1,",  # the person, on the new number
        f"{PHONE},,opt_in,utility,2026-11-08T10:00:00Z,checkbox,v1,"))  # whoever holds the old number now
    write(exports / "whatsapp/hooks.jsonl", [number_change(PHONE, NEW_PHONE, 5), text_from(PHONE, 6, "STOP", "wamid.old")])
    assert run_cli(exports, wh) == 0
    assert status_of(wh) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_in",
                             (NEW_PHONE, "marketing"): "opted_in", (NEW_PHONE, "utility"): "no_consent"}
    # With `number_change: carry` the consent given before the change moves; the old number's STOP
    # and opt-in after it still do not.
    write(exports / "policy.yaml", "number_change: carry\n")
    assert run_cli(exports, wh, "--full") == 0
    assert status_of(wh) == {(PHONE, "marketing"): "opted_out", (PHONE, "utility"): "opted_in",
                             (NEW_PHONE, "marketing"): "opted_in", (NEW_PHONE, "utility"): "opted_in"}
    evidence = query(wh, "SELECT consent_at FROM consent_status WHERE contact_id = ? AND purpose = 'utility'", [NEW_PHONE])
    assert evidence == [(datetime(2026, 11, 1, 10),)]  # the original consent, not the new holder's


# --- 5. A BSUID-only opt-in is consent ---------------------------------------------------------------

def test_5_a_bsuid_only_opt_in_is_consent_for_the_bsuid_and_then_for_its_number(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "in_app/consents.csv", rows(",,opt_in,marketing,2026-11-02T10:00:00Z,in_app_prompt,app-v2," + USER))
    assert run_cli(exports, wh, as_of="2026-11-04T00:00:00Z") == 0
    assert status_of(wh) == {(USER, "marketing"): "opted_in", (USER, "utility"): "no_consent"}
    assert query(wh, "SELECT count(*) FROM quarantine") == [(0,)]
    code, decided = check(wh, tmp_path, f"whatsapp_user_id\n{USER}\n", "2026-11-03T00:00:00Z")
    assert code == 0 and [r["reason"] for r in decided] == ["opted_in"]
    assert cli("export", "--purpose", "marketing", "--warehouse", str(wh), "--out", str(tmp_path / "send.txt")) == 0
    assert (tmp_path / "send.txt").read_text().split() == [USER]
    # a link learnt later carries the consent, with its evidence, to the number
    write(exports / "whatsapp/link.jsonl", [sent(PHONE, 5, "wamid.l1", category="utility", user=USER)])
    assert run_cli(exports, wh, as_of="2026-11-06T00:00:00Z") == 0
    assert status_of(wh) == {(PHONE, "marketing"): "opted_in", (PHONE, "utility"): "no_consent"}
    evidence = query(wh, "SELECT channel, consent_method, consent_at, whatsapp_user_id FROM consent_status "
                         "WHERE purpose = 'marketing'")
    assert evidence == [("in_app", "in_app_prompt", datetime(2026, 11, 2, 10), USER)]


# --- 6. An audience row naming several identifiers -------------------------------------------------

def test_6_an_audience_row_with_a_number_and_an_unlinked_bsuid_is_blocked_by_either(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "web_form/signups.csv", rows(
        f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{OTHER},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{OTHER},,opt_out,,2026-11-03T10:00:00Z,,,",
        f"{PHONE_B},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,{USER_2}"))  # USER_2 is PHONE_B's
    write(exports / "in_app/consents.csv", rows(",,opt_in,marketing,2026-11-02T10:00:00Z,in_app_prompt,v1,DE.1111"))
    write(exports / "email_link/doi.csv", rows(",,opt_in_request,marketing,2026-11-08T10:00:00Z,confirmation_link,v1,DE.2222"))
    write(exports / "whatsapp/stop.jsonl", [username_stop(5)])  # USER, linked to no number
    write(exports / "web_form/late.csv", rows(f"{PHONE_B},,opt_out,,2026-11-04T10:00:00Z,,,"))
    assert run_cli(exports, wh) == 0
    audience = "\n".join([
        "name,phone,whatsapp_user_id",
        f"number in bsuid out,{PHONE},{USER}",
        f"number out bsuid in,{OTHER},DE.1111",
        f"both in,{PHONE},DE.1111",
        f"bsuid pending,{PHONE},DE.2222",
        f"bsuid never seen,{PHONE},DE.9999",
        f"bsuid of another number that opted out,{PHONE},{USER_2}",
        f"bsuid malformed,{PHONE},13491208655302741918",
        f"number only,{PHONE},",
    ]) + "\n"
    code, decided = check(wh, tmp_path, audience, "2026-11-10T00:00:00Z")
    assert code == 3
    assert {r["name"]: (r["decision"], r["reason"]) for r in decided} == {
        "number in bsuid out": ("block", "opted_out"),
        "number out bsuid in": ("block", "opted_out"),
        "both in": ("send", "opted_in"),
        "bsuid pending": ("block", "pending"),
        "bsuid never seen": ("block", "unknown_contact"),
        "bsuid of another number that opted out": ("block", "opted_out"),
        "bsuid malformed": ("block", "invalid_user_id"),
        "number only": ("send", "opted_in"),
    }


# --- 7. Time in checks ------------------------------------------------------------------------------

def test_7_a_double_opt_in_window_that_closed_since_the_last_run_reads_expired_in_check(tmp_path):
    exports, wh = paths(tmp_path, "x")
    write(exports / "email_link/doi.csv", rows(f"{PHONE},,opt_in_request,marketing,2026-11-05T10:00:00Z,confirmation_link,v1,"))
    assert run_cli(exports, wh, as_of="2026-11-06T00:00:00Z") == 0
    assert status_of(wh)[(PHONE, "marketing")] == "pending"
    code, decided = check(wh, tmp_path, f"phone\n{PHONE}\n", "2026-11-12T09:00:00Z")  # window open until 11-12 10:00
    assert code == 3 and decided[0]["reason"] == "pending"
    code, decided = check(wh, tmp_path, f"phone\n{PHONE}\n", "2026-11-13T00:00:00Z")
    assert code == 3 and decided[0]["reason"] == "expired"
    assert decided[0]["status_since"].startswith("2026-11-12T10:00")
    # the next run, at the same instant, says the same
    assert run_cli(exports, wh, as_of="2026-11-13T00:00:00Z") == 0
    assert status_of(wh)[(PHONE, "marketing")] == "expired"


def test_7_renewal_due_is_decided_as_of_its_at(tmp_path):
    exports, wh = paths(tmp_path, "x")
    due_later, lapses_later = "+4915111110001", "+4915111110002"
    write(exports / "web_form/signups.csv", rows(
        f"{due_later},,opt_in,marketing,2026-10-25T10:00:00Z,checkbox,v1,",  # lapses 11-24, due from 11-14
        f"{lapses_later},,opt_in,marketing,2026-10-10T10:00:00Z,checkbox,v1,"))  # lapses 11-09, due from 10-30
    write(exports / "policy.yaml", "consent_validity_days: {marketing: 30}\nrenewal_notice_days: 10\n")
    assert run_cli(exports, wh, as_of="2026-11-06T00:00:00Z") == 0

    def due(at: str) -> list[str]:
        out = tmp_path / "renew.csv"
        assert cli("export", "--renewal-due", "--purpose", "marketing", "--warehouse", str(wh), "--exports", str(exports),
                   "--out", str(out), "--at", at) == 0
        return [line.split(",")[0] for line in out.read_text().splitlines()[1:]]

    assert due("2026-11-06T00:00:00Z") == [lapses_later]
    # on the 15th the first is due, the second has lapsed (expired: no longer renewable, not sendable)
    assert due("2026-11-15T00:00:00Z") == [due_later]
    code, decided = check(wh, tmp_path, f"phone\n{due_later}\n{lapses_later}\n", "2026-11-15T00:00:00Z")
    assert [r["reason"] for r in decided] == ["consent_renewal_due", "expired"]
    assert cli("export", "--renewal-due", "--purpose", "marketing", "--warehouse", str(wh), "--exports", str(exports),
               "--at", "not a time") == 2


# --- 8. Business days -------------------------------------------------------------------------------

TIMELINESS = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version\n"


def test_8_business_days_start_the_day_after_the_request_and_the_tenth_ends_at_its_end(tmp_path):
    """US calendar: 2026-11-11 (Veterans Day) and 2026-11-26 (Thanksgiving) are holidays."""
    exports, wh = paths(tmp_path, "x")
    sat_a, sat_b, holiday, tue = "+12015550101", "+12015550102", "+12015550103", "+12015550104"
    # the channel's first run (a backfill), so that the opt-outs below are judged on time
    write(exports / "preference_center/2026-11-01.csv", TIMELINESS + "+12015550199,,opt_out,,2026-11-01T10:00:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-11-02T00:00:00Z") == 0
    # a holiday request counts from the 12th: the tenth business day is the 25th
    write(exports / "preference_center/a.csv", TIMELINESS + f"{holiday},,opt_out,,2026-11-11T09:00:00Z,,\n"
                                                            f"{tue},,opt_out,,2026-11-10T23:30:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-11-25T23:59:00Z") == 0
    # a Saturday request counts from Monday the 16th: the tenth business day is Monday the 30th
    write(exports / "preference_center/b.csv", TIMELINESS + f"{sat_a},,opt_out,,2026-11-14T10:00:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-11-30T23:00:00Z") == 0
    write(exports / "preference_center/c.csv", TIMELINESS + f"{sat_b},,opt_out,,2026-11-14T11:00:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-12-01T00:30:00Z") == 0
    got = query(wh, "SELECT asked_at, business_days_to_publish, findings FROM opt_out_timeliness "
                    "WHERE asked_at > '2026-11-05' ORDER BY asked_at")
    assert got == [
        (datetime(2026, 11, 10, 23, 30), 10, ["honoured"]),  # the request day (Tuesday) does not count
        (datetime(2026, 11, 11, 9), 10, ["honoured"]),
        (datetime(2026, 11, 14, 10), 10, ["honoured"]),  # the end of the tenth is still in time
        (datetime(2026, 11, 14, 11), 11, ["honoured", "late"]),
    ]


# --- 9. Findings are a list ------------------------------------------------------------------------

def test_9_an_opt_out_carries_every_finding_that_holds(tmp_path):
    exports, wh = paths(tmp_path, "x")
    quiet, noisy = "+12015550111", "+12015550112"
    write(exports / "preference_center/2026-11-01.csv", TIMELINESS + "+12015550199,,opt_out,,2026-11-01T10:00:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-11-02T00:00:00Z") == 0
    write(exports / "preference_center/late.csv", TIMELINESS + "\n".join([
        f"{quiet},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1",
        f"{quiet},,opt_out,,2026-11-03T15:00:00Z,,",
        f"{noisy},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1",
        f"{noisy},,opt_out,,2026-11-03T15:00:00Z,,",
    ]) + "\n")
    write(exports / "whatsapp/sends.jsonl", [
        sent(quiet, 3, "wamid.q1", "utility", hour=15, minute=2),  # the confirmation, two minutes later
        sent(noisy, 3, "wamid.n1", "utility", hour=15, minute=3),
        sent(noisy, 4, "wamid.n2", "marketing", hour=9),
    ])
    assert run_cli(exports, wh, as_of="2026-11-25T00:00:00Z") == 0  # 15 business days after the request
    got = query(wh, "SELECT messages_after_opt_out, findings FROM opt_out_timeliness "
                    "WHERE asked_at = '2026-11-03 15:00:00' ORDER BY 1")
    assert [findings for _, findings in got] == [["honoured", "confirmation_message", "late"],
                                                 ["confirmation_message", "sent_after_opt_out", "late"]]


# --- 10. Validity maps ------------------------------------------------------------------------------

def test_10_a_purpose_absent_from_the_validity_map_uses_its_default_or_never_expires():
    from consent.domain.policy import Policy
    from consent.domain.reconcile import LEDGER_COLUMNS, reconcile

    given = datetime(2026, 1, 5, 10)
    base = {"event_type": "opt_in", "channel": "web_form", "occurred_at": given, "ingested_at": given,
            "consent_method": "checkbox", "notice_version": "v1", "checkbox_pre_ticked": False,
            "bundled_with_terms": False, "acquisition_source": "organic", "source_file": "web_form/a.csv"}
    events = pl.DataFrame(
        [{**base, "phone_e164": phone, "event_id": f"e{n}", "purposes": ["marketing", "utility", "reminders"], "source_line": n + 2}
         for n, phone in enumerate((PHONE, "+12015550123"))],
        schema_overrides={"purposes": pl.List(pl.Utf8)},
    ).select(LEDGER_COLUMNS)
    as_of = given + timedelta(days=100)

    def decided(validity) -> dict[tuple[str, str], str]:
        policy = Policy(purposes=["marketing", "utility", "reminders"], consent_validity_days=validity)
        status, _, _ = reconcile(events, policy, as_of)
        return {(r["contact_id"], r["purpose"]): r["status"] for r in status.iter_rows(named=True)}

    with_default = decided({"marketing": 30, "default": 60, "utility": 365})
    assert with_default[(PHONE, "marketing")] == "expired" and with_default[(PHONE, "utility")] == "opted_in"
    assert with_default[(PHONE, "reminders")] == "expired"  # absent: the map's default (60 days)
    without_default = decided({"marketing": 30, "utility": 365})
    assert without_default[(PHONE, "reminders")] == "opted_in"  # absent, no default: never expires
    per_country = decided({"marketing": {"DE": 30}, "default": 60})
    assert per_country[(PHONE, "marketing")] == "expired"
    assert per_country[("+12015550123", "marketing")] == "opted_in"  # no US entry, no default in that map
    assert per_country[("+12015550123", "reminders")] == "expired"


# --- 11. Timeliness of a backfill -------------------------------------------------------------------

def test_11_opt_outs_loaded_by_their_channels_first_run_are_backfilled_not_late(tmp_path):
    exports, wh = paths(tmp_path, "x")
    history_a, history_b, fresh, support = "+12015550121", "+12015550122", "+12015550123", "+12015550124"
    write(exports / "preference_center/history.csv", TIMELINESS + "\n".join([
        f"{history_a},,opt_out,,2026-03-02T10:00:00Z,,",
        f"{history_b},,opt_out,,2026-06-01T10:00:00Z,,",
    ]) + "\n")
    write(exports / "whatsapp/sends.jsonl", [sent(history_b, 2, "wamid.h1", "marketing")])
    assert run_cli(exports, wh, as_of="2026-11-05T00:00:00Z") == 0
    # later runs: an old opt-out in a channel already read is late; a new channel's history is backfilled
    write(exports / "preference_center/next.csv", TIMELINESS + f"{fresh},,opt_out,,2026-10-01T10:00:00Z,,\n")
    write(exports / "support/history.csv", TIMELINESS + f"{support},,opt_out,,2026-04-01T10:00:00Z,,\n")
    assert run_cli(exports, wh, as_of="2026-11-06T00:00:00Z") == 0
    got = query(wh, "SELECT asked_at::DATE::TEXT, channel, findings FROM opt_out_timeliness ORDER BY asked_at")
    assert got == [
        ("2026-03-02", "preference_center", ["honoured", "backfilled"]),
        ("2026-04-01", "support", ["honoured", "backfilled"]),
        ("2026-06-01", "preference_center", ["sent_after_opt_out", "backfilled"]),  # judged by its sends
        ("2026-10-01", "preference_center", ["honoured", "late"]),
    ]
    incremental = query(wh, "SELECT * FROM opt_out_timeliness ORDER BY ALL")
    assert run_cli(exports, wh, "--full", as_of="2026-11-06T00:00:00Z") == 0
    assert query(wh, "SELECT * FROM opt_out_timeliness ORDER BY ALL") == incremental
