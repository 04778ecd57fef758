"""Privacy and security: encryption at rest, erasure, access, retention, no numbers in logs."""

import json
import logging
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import AS_OF, query, run_cli

FIXTURE_NUMBERS = ["+4915112345678", "+447400123456", "+12015550123", "+33612345678", "+5511961234567",
                   "+918123456789", "+4915201234567"]
NATIONAL_DIGITS = ["15112345678", "7400123456", "2015550123", "612345678", "11961234567", "8123456789", "15201234567"]


def numbers_in(data: bytes) -> list[str]:
    digits = re.sub(rb"\D", b"", data)
    return [n for n in NATIONAL_DIGITS if n.encode() in digits or n.encode() in data]


def test_encrypted_warehouse_holds_no_number_and_needs_its_key(exports, warehouse_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "correct horse battery staple")
    assert run_cli(exports, warehouse_path) == 0
    assert "not encrypted" not in capsys.readouterr().err
    assert not list(warehouse_path.parent.glob("*.wal"))
    data = warehouse_path.read_bytes()
    assert b"4915112345678" not in data and numbers_in(data) == []
    assert b"consent_events" not in data  # even the schema is encrypted

    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY")
    assert main(["runs", "--warehouse", str(warehouse_path)]) == 2
    err = capsys.readouterr().err
    assert "is encrypted (set CONSENT_WAREHOUSE_KEY)" in err and "Traceback" not in err
    monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "wrong key")
    assert main(["sql", "SELECT 1", "--warehouse", str(warehouse_path)]) == 2
    assert "check CONSENT_WAREHOUSE_KEY" in capsys.readouterr().err


def test_without_a_key_the_cli_warns_once(exports, warehouse_path, capsys, monkeypatch):
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    assert run_cli(exports, warehouse_path) == 0
    assert capsys.readouterr().err.count("the warehouse is not encrypted") == 1


@pytest.mark.parametrize("encrypted", [False, True])
def test_erasure_removes_every_spelling_and_a_reimport_does_not_bring_it_back(exports, warehouse_path, monkeypatch, capsys, encrypted):
    from cli.main import main

    if encrypted:
        monkeypatch.setenv("CONSENT_WAREHOUSE_KEY", "k3y")
    assert run_cli(exports, warehouse_path) == 0
    assert main(["access", "0151 12345678", "--country", "DE", "--warehouse", str(warehouse_path)]) == 0
    capsys.readouterr()
    assert main(["erase", "0151 12345678", "--country", "DE", "--warehouse", str(warehouse_path), "--exports", str(exports)]) == 0
    out = capsys.readouterr().out
    assert "events tombstoned: 3" in out
    assert "web_form/signups_2026-11-01.csv" in out and "preference_center/optouts.csv" in out
    assert "15112345678" not in out
    # Nowhere in the warehouse folder's bytes, in any spelling.
    for path in warehouse_path.parent.rglob("*"):
        if path.is_file():
            assert b"15112345678" not in re.sub(rb"\D", b"", path.read_bytes()), path
    # Tombstones keep the hash, dates and reason.
    if not encrypted:
        tombstones = query(warehouse_path, "SELECT phone_hash, occurred_at, reason FROM erased_events")
        assert len(tombstones) == 3 and all(t[2].startswith("erasure request") for t in tombstones)

    if encrypted:
        return  # the rest does not depend on encryption

    # An old export re-imported under another name brings nothing back.
    reimport = exports / "web_form_reimport"
    reimport.mkdir()
    shutil.copy(exports / "web_form" / "signups_2026-11-01.csv", reimport / "old_signups.csv")
    assert run_cli(exports, warehouse_path) == 0
    assert ("+4915112345678", "marketing") not in statuses_with_key(warehouse_path, encrypted)
    skipped = query_maybe_encrypted(
        warehouse_path, encrypted,
        "SELECT count(*), any_value(raw_row) FROM skipped_items WHERE reason LIKE 'erased number%'",
    )
    assert skipped == [(1, None)]
    files = query_maybe_encrypted(warehouse_path, encrypted,
                                  "SELECT rows_read, events, quarantined, skipped FROM source_files WHERE source_file LIKE 'web_form_reimport/%'")
    rows_read, events, quarantined, skipped_count = files[0]
    assert rows_read == events + quarantined + skipped_count and skipped_count == 1

    # A new valid opt-in after the erasure makes the contact known again.
    (exports / "web_form" / "new_consent.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
        "+4915112345678,opt_in,marketing,2099-01-01T00:00:00Z,checkbox,web-v4\n"
    )
    assert run_cli(exports, warehouse_path, as_of="2099-01-02T00:00:00Z") == 0
    assert statuses_with_key(warehouse_path, encrypted)[("+4915112345678", "marketing")] == "opted_in"


def query_maybe_encrypted(path: Path, encrypted: bool, sql: str):
    if not encrypted:
        return query(path, sql)
    from resources.warehouse import WarehouseResource

    with WarehouseResource(path=str(path), encryption_key="k3y").connect(read_only=True) as con:
        return con.execute(sql).fetchall()


def statuses_with_key(path: Path, encrypted: bool) -> dict:
    rows = query_maybe_encrypted(path, encrypted, "SELECT phone_e164, purpose, status FROM consent_status")
    return {(p, purpose): s for p, purpose, s in rows}


def test_access_request_exports_every_event_status_and_evidence(exports, warehouse_path, after_first_run, tmp_path):
    from cli.main import main

    out = tmp_path / "access.json"
    assert main(["access", "+55 11 96123-4567", "--warehouse", str(warehouse_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["phone_e164"] == "+5511961234567"
    assert {e["event_type"] for e in report["consent_events"]} == {"opt_in_request", "opt_in_confirm", "opt_out"}
    assert {s["purpose"]: s["status"] for s in report["consent_status"]} == {"marketing": "opted_out", "utility": "no_consent"}
    web = [q for q in report["quarantine"] if q["source_file"] == "web_form/signups_2026-11-01.csv"]
    assert web and web[0]["reason"] == "unreadable date 'yesterday'"  # the quarantined row with this number
    assert all(e["source_file"] and e["source_line"] for e in report["consent_events"])


def test_invalid_number_for_erasure_is_a_usage_error(warehouse_path, capsys):
    from cli.main import main

    assert main(["erase", "12345", "--warehouse", str(warehouse_path)]) == 2
    assert "not a valid phone number" in capsys.readouterr().err


def test_retention_clears_raw_rows_and_purges_ended_consent(exports, warehouse_path):
    (exports / "policy.yaml").write_text("raw_retention_days: 30\nevidence_retention_years: 1\n")
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT count(*) FROM quarantine WHERE raw_row IS NULL") == [(0,)]
    # Two years later, with no new events: raw rows are cleared; ended consents lose their evidence.
    assert run_cli(exports, warehouse_path, as_of="2028-11-10T00:00:00Z") == 0
    assert query(warehouse_path, "SELECT count(*) FROM quarantine WHERE raw_row IS NOT NULL") == [(0,)]
    assert query(warehouse_path, "SELECT count(*) FROM consent_events WHERE phone_raw IS NOT NULL") == [(0,)]
    remaining = {p for (p,) in query(warehouse_path, "SELECT DISTINCT phone_e164 FROM consent_events")}
    assert remaining == {"+4915201234567"}  # the only contact still opted in keeps its evidence
    retention = json.loads(query(warehouse_path, "SELECT retention FROM runs ORDER BY published_at DESC LIMIT 1")[0][0])
    assert retention["contacts_purged"] == 6 and retention["raw_rows_cleared"] > 0
    first_night = json.loads(query(warehouse_path, "SELECT retention FROM runs ORDER BY published_at LIMIT 1")[0][0])
    assert first_night["contacts_purged"] == 0  # a contact without consent keeps its evidence for the retention period


def test_no_raw_number_in_logs_metadata_or_alerts(exports, warehouse_path, caplog):
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    (exports / "in_app").mkdir()
    (exports / "in_app" / "undated.csv").write_text(
        "phone,event_type,purposes,consent_method\n+4915201234568,opt_in,marketing,in_app_prompt\n"
    )
    resources = {
        "warehouse": WarehouseResource(path=str(warehouse_path)),
        "settings": ConsentSettings(exports_dir=str(exports), as_of=AS_OF),
    }
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(
            instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}
        )
        texts = [caplog.text]
        for entry in instance.all_logs(result.run_id):
            texts.append(entry.user_message or "")
            texts.append(repr(entry.dagster_event.event_specific_data) if entry.dagster_event else "")
    everything = "\n".join(texts)
    assert len(everything) > 10_000  # the scan saw real logs and metadata
    assert "failing_rows" in everything  # including the failed check's metadata
    for digits in NATIONAL_DIGITS + ["15201234568"]:
        assert digits not in re.sub(r"[\s\-()]", "", everything), digits
    assert not re.search(r"\+\d{8,15}\b", everything)


def test_erasure_after_a_night_leaves_no_trace_in_the_nights_copies(exports, warehouse_path, tmp_path):
    """A night keeps copies of the rows it replaced and wrote, the marts' differences and what the
    marts read of the contacts in scope (`stg_replaced_*`, `stg_decided_*`, `stg_mart_*`): an
    erasure clears them too."""
    from consent.privacy.erasure import NIGHT_COPIES
    from cli.main import main

    staged = tmp_path / "staged"
    shutil.copytree(exports / "email_link", staged / "email_link")
    assert run_cli(staged, warehouse_path) == 0
    for folder in ("web_form", "preference_center", "whatsapp"):  # the number's events arrive a night later
        shutil.copytree(exports / folder, staged / folder)
    sent = {"id": "wamid.TO-ERASED", "status": "delivered", "timestamp": "1793872800", "recipient_id": "4915112345678",
            "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing"}}
    (staged / "whatsapp" / "statuses.jsonl").write_text(json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881",
                                                          "phone_number_id": "106540352242922"},
            "statuses": [sent]}}]}]}) + "\n")
    assert run_cli(staged, warehouse_path) == 0
    copies = {f"staging.{t}": NIGHT_COPIES[f"staging.{t}"]
              for t in ("stg_decided_status", "stg_decided_history", "stg_mart_history_delta", "stg_mart_status_delta",
                        "stg_mart_contacts", "stg_mart_history", "stg_mart_sends")}
    held = {t: query(warehouse_path, f"SELECT count(*) FROM {t} WHERE {c} = '+4915112345678'")[0][0]
            for t, c in copies.items()}
    assert all(held.values()), held
    assert main(["erase", "0151 12345678", "--country", "DE", "--warehouse", str(warehouse_path),
                 "--exports", str(staged)]) == 0
    for path in warehouse_path.parent.rglob("*"):
        if path.is_file():
            assert b"15112345678" not in re.sub(rb"\D", b"", path.read_bytes()), path
