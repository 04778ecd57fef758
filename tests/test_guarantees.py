"""Guarantees a small code change could break without another test noticing: conservation of webhook
items, erasure against re-imports, number changes, the gate on a row naming a number and a BSUID.
Each test here fails on a change listed in bench/mutations.py."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

from tests.conftest import query, run_cli
from tests.test_gate import check, warehouse  # noqa: F401  (the gate's fixture warehouse)
from tests.test_identities import CSV_HEADER, PHONE, USER, payload, stamp, write
from tests.test_reconcile import T0, decide, ev

OTHER = "+4915100000001"


def every_kind_of_item() -> list[dict]:
    """One payload per kind of item: a message, statuses of every state, a preference, a BSUID update."""
    status = {"recipient_id": OTHER[1:], "pricing": {"category": "marketing"}}
    return [
        payload({"contacts": [{"wa_id": OTHER[1:]}],
                 "messages": [{"from": OTHER[1:], "id": "wamid.in", "timestamp": stamp(2), "type": "text", "text": {"body": "hi"}}]}),
        payload({"statuses": [{**status, "id": f"wamid.{state}", "status": state, "timestamp": stamp(3)}
                              for state in ("sent", "delivered", "read")]}),
        payload({"statuses": [{**status, "id": "wamid.f", "status": "failed", "timestamp": stamp(4), "errors": [{"code": 131050}]},
                              {**status, "id": "wamid.g", "status": "failed", "timestamp": stamp(4), "errors": [{"code": 131026}]}]}),
        payload({"user_preferences": [{"wa_id": OTHER[1:], "category": "marketing_messages", "value": "stop",
                                       "timestamp": stamp(5)}]}),
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "user_id_update", "value": {
            "user_id_update": [{"wa_id": OTHER[1:], "previous": {"user_id": USER}, "current": {"user_id": "DE.77"},
                                "timestamp": stamp(5)}, "not an item"]}}]}]},
        payload({"contacts": []}),  # no item at all: one skipped row
    ]


def items_in(payloads: list[dict]) -> int:
    """What the file holds, counted here from the JSON (not by the reader under test)."""
    counted = 0
    for p in payloads:
        value = p["entry"][0]["changes"][0]["value"]
        n = sum(len(value.get(k, [])) for k in ("messages", "statuses", "user_preferences", "user_id_update"))
        counted += max(n, 1)
    return counted


def test_rows_read_of_a_webhook_file_is_the_number_of_items_in_its_payloads(tmp_path):
    exports, wh = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    hooks = every_kind_of_item()
    write(exports, "whatsapp/hooks.jsonl", hooks)
    assert run_cli(exports, wh) == 0
    assert items_in(hooks) == 10
    (row,) = query(wh, "SELECT rows_read, events, quarantined, skipped FROM source_files")
    assert row[0] == 10 and row[0] == row[1] + row[2] + row[3], row
    assert query(wh, "SELECT checks_failed FROM runs") == [([],)]


def test_a_reader_that_drops_an_item_fails_the_conservation_check(tmp_path, monkeypatch):
    """The reader silently loses `read` statuses: rows read (the payload's items) no longer equal
    events + quarantined + skipped, and the rows_conserved check fails the run, naming the file."""
    from consent.reading.channels import whatsapp_webhook

    original = whatsapp_webhook._read_payload

    def dropping(reader, rows, line, payload_, error, table=None):
        if isinstance(payload_, dict):
            payload_ = copy.deepcopy(payload_)
            for entry in payload_.get("entry", []):
                for change in entry.get("changes", []):
                    value = change.get("value", {})
                    if "statuses" in value:
                        value["statuses"] = [s for s in value["statuses"] if s.get("status") != "read"]
        original(reader, rows, line, payload_, error, table)

    monkeypatch.setattr(whatsapp_webhook, "_read_payload", dropping)
    exports, wh = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    write(exports, "whatsapp/hooks.jsonl", every_kind_of_item())
    assert run_cli(exports, wh) == 1
    (row,) = query(wh, "SELECT rows_read, events + quarantined + skipped FROM source_files")
    assert row == (10, 9)
    (outcomes,) = query(wh, "SELECT check_outcomes FROM runs")[0]
    failed = {name: o for name, o in json.loads(outcomes).items() if not o["passed"]}
    assert list(failed) == ["source_files.rows_conserved"], failed
    assert "whatsapp/hooks.jsonl" in json.dumps(failed)


def test_a_start_from_the_old_number_after_a_change_restores_nothing():
    """The old number may be reassigned: a STOP before the change and a START after it must not bring
    the consent given before the change back to the old number."""
    common = {"business": "default", "whatsapp_user_id": None, "changed_to": None}
    change = ev(2, "number_change", channel="whatsapp", purposes=(), **{**common, "changed_to": "+4915199887766"})
    rows, _ = decide([ev(0, "opt_in", **common), ev(1, "opt_out", purposes=(), **common), change,
                      ev(3, "resume", channel="whatsapp", purposes=(), **common)])
    assert rows["marketing"]["status"] == "opted_out"
    assert rows["marketing"]["status_since"] == T0 + timedelta(hours=1)
    rows, _ = decide([ev(0, "opt_in", **common), change, ev(3, "resume", channel="whatsapp", purposes=(), **common)])
    assert rows["marketing"]["status"] == "no_consent"


def test_a_row_with_an_opted_in_number_and_an_unlinked_bsuid_that_sent_stop_is_blocked(warehouse, tmp_path):  # noqa: F811
    from tests.test_gate import IN

    code, rows = check(warehouse, f"phone,whatsapp_user_id\n{IN},{USER}\n{IN},\n", tmp_path, "--at", "2026-11-10T00:00:00Z")
    assert code == 3
    assert [(r["decision"], r["reason"]) for r in rows] == [("block", "opted_out"), ("send", "opted_in")]


def test_events_from_before_an_erasure_stay_out_when_the_person_consents_again(tmp_path):
    from cli.main import main

    exports, wh = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    old = (f"{PHONE},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,\n"
           f"{PHONE},,opt_out,,2026-11-03T10:00:00Z,,,\n")
    write(exports, "web_form/signups.csv", CSV_HEADER + old)
    assert run_cli(exports, wh) == 0
    assert main(["erase", PHONE, "--warehouse", str(wh), "--exports", str(exports)]) == 0
    # The person consents again (after the erasure) and an old export comes back in the same night.
    write(exports, "web_form/new_consent.csv", CSV_HEADER + f"{PHONE},,opt_in,marketing,2099-01-01T00:00:00Z,checkbox,v1,\n")
    write(exports, "web_form_reexport/signups.csv", CSV_HEADER + old + f"{OTHER},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,\n")
    assert run_cli(exports, wh, as_of="2099-01-02T00:00:00Z") == 0
    assert query(wh, "SELECT event_type, occurred_at::VARCHAR FROM consent_events WHERE phone_e164 = ?", [PHONE]) == [
        ("opt_in", "2099-01-01 00:00:00")]
    assert query(wh, "SELECT count(*) FROM skipped_items WHERE reason LIKE 'erased%'") == [(2,)]
    assert query(wh, "SELECT status FROM consent_status WHERE phone_e164 = ? AND purpose = 'marketing'", [PHONE]) == [
        ("opted_in",)]
