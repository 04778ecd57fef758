"""Before every campaign: the pre-send gate, opt-out timeliness and consent renewals."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import query, run_cli

HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version,whatsapp_user_id\n"
IN, OUT, NONE, PENDING, OLD, ERASED, RENEW = (
    "+4915111111111", "+4915122222222", "+4915133333333", "+4915144444444", "+4915155555555", "+4915166666666",
    "+4915177777777",
)
USER = "DE.13491208655302741918"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def stamp(day: int, hour: int = 12, minute: int = 0) -> str:
    return str(int(datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc).timestamp()))


def hook(value: dict) -> str:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1065"},
        **value}}]}]})


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """Contacts in every state (as of 2026-11-10), one of them erased."""
    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    write(exports / "web_form" / "signups.csv", HEADER + "\n".join([
        f"{IN},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{OUT},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{OUT},,opt_out,,2026-11-05T10:00:00Z,,,",
        f"{NONE},,inbound_message,,2026-11-02T10:00:00Z,,,",
        f"{OLD},,opt_in,marketing,2025-01-02T10:00:00Z,checkbox,v1,",
        f"{ERASED},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{RENEW},,opt_in,marketing,2025-10-20T10:00:00Z,checkbox,v1,",  # lapses 2026-11-24
    ]) + "\n")
    write(exports / "email_link" / "doi.csv", HEADER + f"{PENDING},,opt_in_request,marketing,2026-11-09T10:00:00Z,confirmation_link,v1,\n")
    # A username user's STOP, known only by BSUID.
    write(exports / "whatsapp" / "hooks.jsonl", hook({
        "contacts": [{"profile": {"name": "Kim", "username": "@kim"}, "user_id": USER}],
        "messages": [{"from_user_id": USER, "id": "wamid.s", "timestamp": stamp(6), "type": "text", "text": {"body": "STOP"}}],
    }) + "\n")
    # Marketing consent lasts a year (German numbers: 400 days); renewal is asked 30 days ahead.
    write(exports / "policy.yaml", "consent_validity_days:\n  marketing: {DE: 400, default: 365}\nrenewal_notice_days: 30\n")
    assert run_cli(exports, path) == 0
    from cli.main import main

    assert main(["erase", ERASED, "--warehouse", str(path), "--exports", str(exports)]) == 0
    return path


def check(warehouse: Path, audience: str, tmp_path: Path, *extra: str) -> tuple[int, list[dict]]:
    from cli.main import main

    source, out = tmp_path / "audience.csv", tmp_path / "decisions.csv"
    source.write_text(audience)
    code = main(["check", str(source), "--purpose", "marketing", "--warehouse", str(warehouse), "--out", str(out),
                 "--policy", str(warehouse.parent.parent / "exports" / "policy.yaml"), *extra])
    return code, list(csv.DictReader(io.StringIO(out.read_text()))) if out.exists() else []


AUDIENCE = "\n".join([
    "name,phone,country,whatsapp_user_id,segment",
    f"in,{IN},,,vip",
    "in spelled,0151 11111111,DE,,vip",
    f"out,{OUT},,,",
    f"none,{NONE},,,",
    f"pending,{PENDING},,,",
    f"old,{OLD},,,",
    f"erased,{ERASED},,,",
    "unknown,+4915188888888,,,",
    "invalid,12345,DE,,",
    f"bsuid only,,,{USER},",
]) + "\n"


def test_every_row_gets_a_decision_and_its_reason_and_the_check_is_logged(warehouse, tmp_path, capsys):
    code, rows = check(warehouse, AUDIENCE, tmp_path, "--at", "2026-11-10T00:00:00Z")
    assert code == 3  # some rows are blocked
    got = {r["name"]: (r["decision"], r["reason"]) for r in rows}
    assert got == {
        "in": ("send", "opted_in"), "in spelled": ("send", "opted_in"), "out": ("block", "opted_out"),
        "none": ("block", "no_consent"), "pending": ("block", "pending"), "old": ("block", "expired"),
        "erased": ("block", "erased"), "unknown": ("block", "unknown_contact"), "invalid": ("block", "invalid_number"),
        "bsuid only": ("block", "opted_out"),
    }
    assert [r["segment"] for r in rows[:2]] == ["vip", "vip"]  # extra columns kept as they are
    from consent.sending.gate import REASONS

    assert {r["reason"] for r in rows} <= set(REASONS)
    ok = next(r for r in rows if r["name"] == "in")
    assert ok["evidence_event_id"] and ok["status_since"].startswith("2026-11-01")
    err = capsys.readouterr().err
    assert "2 of 10 rows may be sent to" in err and "opted_out" in err
    logged = query(warehouse, "SELECT purpose, business, status_at, rows_checked, sendable, blocked, reasons FROM send_checks")
    assert logged[0][:6] == ("marketing", "default", datetime(2026, 11, 10), 10, 2, 8)
    assert json.loads(logged[0][6])["opted_out"] == 2
    log_rows = query(warehouse, "SELECT row_number, recipient_hash, decision, reason FROM send_check_rows ORDER BY row_number")
    assert [r[3] for r in log_rows][:3] == ["opted_in", "opted_in", "opted_out"]
    assert log_rows[0][1] == log_rows[1][1]  # the same number, however it was spelled
    text = json.dumps(query(warehouse, "SELECT * FROM send_check_rows"), default=str)
    for number in (IN, OUT, IN[1:], "11111111", USER):
        assert number not in text


def test_a_past_send_is_rechecked_as_of_its_time_and_renewal_due_still_sends(warehouse, tmp_path):
    audience = f"phone\n{OUT}\n{IN}\n"
    code, rows = check(warehouse, audience, tmp_path, "--at", "2026-11-03T00:00:00Z")  # before the STOP
    assert code == 0 and [r["reason"] for r in rows] == ["opted_in", "opted_in"]
    code, rows = check(warehouse, audience, tmp_path, "--at", "2026-10-01T00:00:00Z")  # before anything
    assert code == 3 and [r["reason"] for r in rows] == ["unknown_contact", "unknown_contact"]
    code, rows = check(warehouse, f"phone\n{RENEW}\n", tmp_path, "--at", "2026-11-10T00:00:00Z")
    assert code == 0 and rows[0]["reason"] == "consent_renewal_due"  # 14 days left, notice 30 days
    code, rows = check(warehouse, f"phone\n{RENEW}\n", tmp_path, "--at", "2026-11-25T00:00:00Z")
    assert code == 3 and rows[0]["reason"] == "expired"


def test_a_bad_audience_is_a_usage_error(warehouse, tmp_path, capsys):
    code, _ = check(warehouse, "name,email\nx,x@example.com\n", tmp_path)
    assert code == 2 and "needs a `phone` or a `whatsapp_user_id` column" in capsys.readouterr().err
    code, _ = check(warehouse, f"phone\n{IN}\n", tmp_path, "--at", "yesterday")
    assert code == 2


def test_the_audiences_sensor_checks_new_files_in_dagster_and_alerts_on_an_opted_out_contact(warehouse, tmp_path, monkeypatch):
    import dagster as dg

    from pipelines.definitions import build_definitions
    from resources.warehouse import resources_from_env

    audiences = tmp_path / "audiences"
    write(audiences / "marketing" / "november.csv", f"name,phone\na,{IN}\nb,{OUT}\n")
    monkeypatch.setenv("CONSENT_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("CONSENT_EXPORTS", str(warehouse.parent.parent / "exports"))
    defs = build_definitions(resources_from_env())
    sensor = defs.resolve_sensor_def("new_audiences_sensor")
    import os
    old = datetime(2026, 11, 1).timestamp()
    os.utime(audiences / "marketing" / "november.csv", (old, old))  # settled
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, resources={"settings": defs.resources["settings"]}))
        assert isinstance(result, dg.RunRequest)
        run = defs.resolve_job_def("audience_check_job").execute_in_process(instance=instance, raise_on_error=False)
        evaluations = [e.asset_check_evaluation_data for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert [(e.check_name, e.passed) for e in evaluations] == [("audiences_hold_no_opted_out", False)]
    checked = warehouse.parent / "checked"
    assert (checked / "november.csv").read_text().splitlines() == ["name,phone", f"a,{IN}"]
    decisions = (checked / "november.decisions.csv").read_text()
    assert "opted_out" in decisions
    assert query(warehouse, "SELECT mode, status FROM runs WHERE mode = 'audience_check'") == [("audience_check", "failed")]
    assert list((warehouse.parent / "alerts").glob("*.json"))  # the failed ERROR check alerted
    assert query(warehouse, "SELECT count(*) FROM send_checks WHERE run_id IS NOT NULL") == [(1,)]


TIMELINESS_HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version\n"


def test_opt_out_timeliness_counts_business_days_without_weekends_and_us_federal_holidays(tmp_path):
    """2026-11-11 (Veterans Day) and 2026-11-26 (Thanksgiving) are US federal holidays."""
    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    a, b = "+12015550101", "+12015550102"
    # the channel's first run (its history: backfilled, never late), so that the opt-outs below are judged on time
    write(exports / "preference_center" / "history.csv", TIMELINESS_HEADER + "+12015550100,,opt_out,,2026-10-01T10:00:00Z,,\n")
    assert run_cli(exports, path, as_of="2026-11-02T00:00:00Z") == 0
    write(exports / "preference_center" / "optouts.csv", TIMELINESS_HEADER + "\n".join([
        f"{a},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1",
        f"{a},,opt_out,,2026-11-10T15:00:00Z,,",  # Tuesday
    ]) + "\n")
    sends = [
        # a utility confirmation two minutes later (allowed), then marketing the next day (not allowed)
        {"id": "wamid.c", "status": "sent", "timestamp": stamp(10, 15, 2), "recipient_id": a[1:],
         "pricing": {"category": "utility"}},
        {"id": "wamid.m", "status": "sent", "timestamp": stamp(11, 9), "recipient_id": a[1:],
         "pricing": {"category": "marketing"}},
    ]
    write(exports / "whatsapp" / "statuses.jsonl", hook({"statuses": sends}) + "\n")
    # Published 2026-11-25 (Wednesday): 10 business days after Tuesday the 10th with the holiday on the 11th.
    assert run_cli(exports, path, as_of="2026-11-25T08:00:00Z") == 0
    row = query(path, "SELECT business_days_to_publish, findings, first_message_category, messages_after_opt_out "
                      "FROM opt_out_timeliness WHERE asked_at > '2026-11-02'")
    assert row == [(10, ["confirmation_message", "sent_after_opt_out"], "utility", 1)]
    # A second opt-out, asked on Friday the 13th, published after Thanksgiving: 9 business days, not late.
    write(exports / "preference_center" / "late.csv", TIMELINESS_HEADER + f"{b},,opt_out,,2026-11-13T12:00:00Z,,\n")
    assert run_cli(exports, path, as_of="2026-11-27T08:00:00Z") == 0
    assert query(path, "SELECT business_days_to_publish, findings FROM opt_out_timeliness WHERE asked_at = '2026-11-13 12:00'") == [
        (9, ["honoured"])]
    # Without the holiday calendar the same opt-outs count 11 and 10 business days: the first is late.
    write(exports / "policy.yaml", "holiday_calendar: null\n")
    assert run_cli(exports, path, as_of="2026-11-27T08:00:00Z") == 0
    days = query(path, "SELECT asked_at::DATE::TEXT, business_days_to_publish, list_contains(findings, 'late') "
                       "FROM opt_out_timeliness WHERE asked_at > '2026-11-02' ORDER BY 1")
    assert days == [("2026-11-10", 11, True), ("2026-11-13", 10, False)]
    from cli.main import main

    assert main(["audit", "opt-out-timeliness", "--warehouse", str(path)]) == 0


def test_renewals_with_validity_per_country(tmp_path, capsys):
    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    de_due, us_fine, de_expired = "+4915111110001", "+12015550103", "+4915111110002"
    write(exports / "web_form" / "signups.csv", TIMELINESS_HEADER + "\n".join([
        f"{de_due},,opt_in,marketing,2026-10-15T10:00:00Z,checkbox,v1",  # DE: 30 days -> lapses 11-14
        f"{us_fine},,opt_in,marketing,2026-10-15T10:00:00Z,checkbox,v1",  # default: 365 days
        f"{de_expired},,opt_in,marketing,2026-09-01T10:00:00Z,checkbox,v1",  # DE: lapsed 10-01
    ]) + "\n")
    write(exports / "policy.yaml", "consent_validity_days:\n  marketing: {DE: 30, default: 365}\nrenewal_notice_days: 10\n")
    assert run_cli(exports, path, as_of="2026-11-06T00:00:00Z") == 0
    statuses = dict(query(path, "SELECT contact_id, status FROM consent_status WHERE purpose = 'marketing'"))
    assert statuses == {de_due: "opted_in", us_fine: "opted_in", de_expired: "expired"}
    renewals = query(path, "SELECT purpose, channel, expires_at, days_left FROM consent_renewals")
    assert renewals == [("marketing", "web_form", datetime(2026, 11, 14, 10), 8)]
    from cli.main import main

    out = tmp_path / "renew.csv"
    assert main(["export", "--renewal-due", "--purpose", "marketing", "--warehouse", str(path),
                 "--exports", str(exports), "--out", str(out), "--at", "2026-11-06T00:00:00Z"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "phone_e164,whatsapp_user_id,consent_at,channel,consent_method,expires_at"
    assert len(lines) == 2 and lines[1].startswith(de_due)
