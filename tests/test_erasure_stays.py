"""An erasure erases, and stays erased; no number in free text.

After `consent erase`, an auditor scanning every column of every table and every file under the
warehouse folder finds the number in no spelling, nor its linked BSUID; a later import of any
spelling adds no raw copy and counts the rows as erased. Notes, alerts, logs, Dagster metadata
and dashboard labels mask numbers whichever field they came from.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb

from tests.conftest import AS_OF, query, run_cli

PHONE = "+4915112345678"
NATIONAL = "15112345678"
USER = "DE.13491208655302741918"
ERASED = "erased number (GDPR Art. 17): event not re-imported"
CSV_HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version\n"


def payload(value: dict) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, **value}}]}]}


def jsonl(path: Path, payloads: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(p) for p in payloads) + "\n")


def holds_person(data: str | bytes) -> bool:
    """Any spelling of the number (its national digits among the text's digits) or its BSUID."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return NATIONAL.encode() in re.sub(rb"\D", b"", data) or USER.encode() in data


def tables_holding_person(warehouse: Path) -> list[str]:
    """Every column of every table, read as text, the way an auditor would."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' ORDER BY ALL"
        ).fetchall()
        found = []
        for table, column in columns:
            n = con.execute(
                f'SELECT count(*) FROM "{table}" WHERE strpos(regexp_replace("{column}"::VARCHAR, \'[^0-9]\', \'\', \'g\'), ?) > 0 '
                f'OR contains("{column}"::VARCHAR, ?)', [NATIONAL, USER]
            ).fetchone()[0]
            if n:
                found.append(f"{table}.{column}")
        return found
    finally:
        con.close()


def files_holding_person(folder: Path, database: Path) -> list[str]:
    """Every file under the warehouse folder but the database (read through its tables above)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(database.name) and holds_person(p.read_bytes()))


def first_night(exports: Path) -> None:
    """The fixture exports, plus a webhook that links the number to its BSUID."""
    jsonl(exports / "whatsapp" / "linked.jsonl", [payload({
        "contacts": [{"profile": {"name": "Kim"}, "wa_id": PHONE[1:], "user_id": USER}],
        "messages": [{"from": PHONE[1:], "from_user_id": USER, "id": "wamid.link1", "timestamp": "1793700000",
                      "type": "text", "text": {"body": "Hello"}}],
    })])


def leave_old_traces(warehouse: Path) -> None:
    """What a warehouse written before notes and alerts were redacted may hold."""
    con = duckdb.connect(str(warehouse))
    con.execute("UPDATE source_files SET notes = list_append(notes, 'unknown columns: +49 151 1234 5678') "
                "WHERE source_file = 'preference_center/optouts.csv'")
    con.execute(f"UPDATE runs SET failure_reason = 'row of {USER} refused'")
    con.close()
    folder = warehouse.parent
    (folder / "alerts").mkdir(exist_ok=True)
    (folder / "alerts" / "20261101T000000Z-old.json").write_text(json.dumps({"reason": "row 0151 12345678 refused"}))
    (folder / "alerts" / "20261102T000000Z-other.json").write_text(json.dumps({"reason": "2 rows refused"}))
    (folder / "data_docs" / "old-run").mkdir(parents=True)
    (folder / "data_docs" / "old-run" / "index.html").write_text(f"<td>{PHONE}</td><td>{USER}</td>")
    with (folder / "dashboard.html").open("a") as page:
        page.write(f"<!-- {PHONE} -->")


def leave_a_stopped_fan_outs_staging(warehouse: Path) -> None:
    """What a night that fanned its buckets out staged for them (consent.run.buckets.stage_bucket_scope:
    each touched contact's bucket, its part of the ledger) and, stopped before its last transaction,
    left until the next run: an erasure in between must clear the number from them too."""
    from consent.run.buckets import STAGED_BUCKETS, STAGED_SCOPE

    (_, staged_events, _), (_, staged_links, _) = STAGED_SCOPE
    con = duckdb.connect(str(warehouse))
    con.execute(f"CREATE TABLE {STAGED_BUCKETS} AS SELECT DISTINCT business || chr(31) || contact_id AS contact_key, "
                "0 AS bucket FROM consent_status")
    con.execute(f"CREATE TABLE {staged_events} AS FROM consent_events")
    con.execute(f"CREATE TABLE {staged_links} AS FROM identifier_links")
    con.close()


def staged_holding_person(warehouse: Path) -> dict[str, int]:
    """The rows of those staged tables holding the number or its BSUID."""
    from consent.run.buckets import STAGED_BUCKETS, STAGED_SCOPE

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {table: con.execute(f"SELECT count(*) FROM {table} AS t WHERE contains(t::VARCHAR, ?) "
                                   "OR contains(t::VARCHAR, ?)", [PHONE, USER]).fetchone()[0]
                for table in (STAGED_BUCKETS, *(staged for _, staged, _ in STAGED_SCOPE))}
    finally:
        con.close()


def reimport(exports: Path) -> None:
    """The erased number again, in every spelling, as events, a quarantined row and skipped items."""
    folder = exports / "reimport"
    folder.mkdir()
    (folder / "spellings.csv").write_text(CSV_HEADER + "\n".join([
        "0151 12345678,DE,opt_in,marketing,2026-11-05T09:00:00Z,checkbox,web-v3",
        "0049 151 12345678,,opt_out,marketing,2026-11-05T10:00:00Z,,",
        "+49 151 1234 5678,,opt_in,utility,2026-11-05T11:00:00Z,checkbox,web-v3",
        "+49 (0)151 1234 5678,,opt_in,marketing,2026-11-05T12:00:00Z,checkbox,web-v3",
        "0151/1234 5678,DE,opt_in,marketing,yesterday,checkbox,web-v3",  # quarantined for its date
        "+447400123456,,opt_out,marketing,2026-11-05T13:00:00Z,,",  # someone else: published
    ]) + "\n")
    jsonl(exports / "whatsapp" / "again.jsonl", [
        payload({"contacts": [{"profile": {"name": "Kim"}, "wa_id": PHONE[1:]}],
                 "messages": [{"from": PHONE[1:], "id": "wamid.again1", "timestamp": "1793800000", "type": "text",
                               "text": {"body": "STOP"}}]}),
        payload({"contacts": [{"profile": {"name": "Kim"}, "user_id": USER}],
                 "messages": [{"from_user_id": USER, "id": "wamid.again2", "timestamp": "1793800100", "type": "text",
                               "text": {"body": "STOP"}}]}),
        payload({"statuses": [{"id": "wamid.again3", "status": "read", "timestamp": "1793800200",
                               "recipient_id": PHONE[1:]}]}),  # a skipped item
        payload({"contacts": [{"wa_id": PHONE[1:]}]}),  # a payload without items: skipped whole
    ])


def test_erased_number_is_gone_and_a_reimport_in_every_spelling_brings_back_no_copy(
        exports, warehouse_path, tmp_path, capsys):
    from cli.main import main

    first_night(exports)
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT count(*) FROM identifier_links WHERE whatsapp_user_id = ?", [USER]) == [(1,)]
    leave_old_traces(warehouse_path)
    leave_a_stopped_fan_outs_staging(warehouse_path)
    assert tables_holding_person(warehouse_path) and files_holding_person(warehouse_path.parent, warehouse_path)
    assert all(staged_holding_person(warehouse_path).values())

    assert main(["erase", PHONE, "--warehouse", str(warehouse_path), "--exports", str(exports)]) == 0
    out = capsys.readouterr().out
    assert not holds_person(out)
    assert tables_holding_person(warehouse_path) == []
    assert not any(staged_holding_person(warehouse_path).values())
    assert files_holding_person(warehouse_path.parent, warehouse_path) == []
    assert (warehouse_path.parent / "alerts" / "20261102T000000Z-other.json").exists()  # other files stay
    assert "warehouse file rewritten (it held the number): alerts/20261101T000000Z-old.json" in out

    reimport(exports)
    assert run_cli(exports, warehouse_path) == 0
    # That run rewrote the file in its publish step (rows of the erased number were staged): what its
    # later steps wrote (marts, its record) is in the new file and in the read copy readers open.
    ((run_id, status, finished),) = query(
        warehouse_path, "SELECT run_id, status, finished_at IS NOT NULL FROM runs ORDER BY started_at DESC LIMIT 1")
    assert (status, finished) == ("succeeded", True)
    read_copy = warehouse_path.with_name(f"{warehouse_path.stem}.read.duckdb")
    for path in (warehouse_path, read_copy):
        assert query(path, "SELECT DISTINCT run_id FROM mart_builds") == [(run_id,)], path
        assert query(path, "SELECT status FROM runs WHERE run_id = ?", [run_id]) == [("succeeded",)], path
    assert tables_holding_person(warehouse_path) == []
    assert files_holding_person(warehouse_path.parent, warehouse_path) == []
    # Nor the database file's bytes: the staged rows dropped at publish left nothing in freed blocks.
    assert not holds_person(warehouse_path.read_bytes())
    erased = dict(query(warehouse_path, "SELECT source_file, count(*) FROM skipped_items WHERE reason = ? "
                                        "AND raw_row IS NULL GROUP BY ALL", [ERASED]))
    assert erased == {"reimport/spellings.csv": 5, "whatsapp/again.jsonl": 4}
    for name, rows_read, events, quarantined, skipped in query(
            warehouse_path, "SELECT source_file, rows_read, events, quarantined, skipped FROM source_files "
                            "WHERE source_file IN ('reimport/spellings.csv', 'whatsapp/again.jsonl')"):
        assert rows_read == events + quarantined + skipped, name
    assert query(warehouse_path, "SELECT events, quarantined, skipped FROM source_files "
                                 "WHERE source_file = 'reimport/spellings.csv'") == [(1, 0, 5)]

    report_path = tmp_path / "access.json"
    for identifier in (PHONE, USER):
        assert main(["access", identifier, "--warehouse", str(warehouse_path), "--out", str(report_path)]) == 0
        report = json.loads(report_path.read_text())
        assert report["identifiers"] == [identifier]
        for section in ("consent_events", "consent_status", "quarantine", "identifier_links", "consent_status_history"):
            assert report[section] == [], section


def test_a_number_typed_into_a_free_text_field_is_not_on_the_dashboard(exports, warehouse_path):
    (exports / "web_form" / "typed.csv").write_text(
        CSV_HEADER + "+33612345679,,opt_in,marketing,2026-11-01T09:00:00Z,checkbox,call +49 170 1234567\n")
    assert run_cli(exports, warehouse_path) == 0
    page = (warehouse_path.parent / "dashboard.html").read_text(encoding="utf-8")
    page = re.sub(r"<script type=\"text/javascript\">.*?</script>", "", page, count=1, flags=re.S)  # plotly.js
    assert "1701234567" not in re.sub(r"\D", "", page)
    assert "call [number]" in page  # the label is there, masked


def test_alert_file_and_hook_hold_no_number(tmp_path):
    from consent.run.alerts import raise_alert

    hook_out = tmp_path / "hook.json"
    summary = {"run_id": "3f2b1c9e-1234-4a5b-8c9d-0123456789ab", "status": "failed", "rows_read": 1_234_567,
               "reason": "step failed: could not parse row '0151 12345678,DE,opt_in'",
               "failed_checks": [{"check": "x.y", "metadata": {"notes": [f"{USER} twice"], "day": "2026-11-01"}}]}
    path = raise_alert(summary, str(tmp_path / "wh" / "consent.duckdb"), f"sh -c 'cat > {hook_out}'")
    for text in (path.read_text(), hook_out.read_text()):
        assert not holds_person(text)
        body = json.loads(text)
        assert body["rows_read"] == 1_234_567 and body["failed_checks"][0]["metadata"]["day"] == "2026-11-01"
        assert body["run_id"] == summary["run_id"]


def test_notes_logs_and_metadata_hold_no_number(exports, warehouse_path, caplog, capsys):
    """A header-less CSV (its first row taken for a header) and a file named after a number: the
    notes, the run's record, the logs and the Dagster metadata mask the number."""
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    (exports / "in_app").mkdir()
    (exports / "in_app" / "no_header.csv").write_text(
        "+4915112345678,opt_in,marketing,2026-11-01T09:00:00Z,in_app_prompt\n")
    (exports / "in_app" / f"contact_{PHONE}.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method\n+4915201234567,opt_in,marketing,2026-11-01T09:00:00Z,in_app_prompt\n")
    resources = {"warehouse": WarehouseResource(path=str(warehouse_path)),
                 "settings": ConsentSettings(exports_dir=str(exports), as_of=AS_OF)}
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(
            instance=instance, raise_on_error=False)
        texts = [caplog.text]
        for entry in instance.all_logs(result.run_id):
            texts.append(entry.user_message or "")
            texts.append(repr(entry.dagster_event.event_specific_data) if entry.dagster_event else "")
    logged = "\n".join(texts)
    assert "no_header.csv" in logged and "[number]" in logged  # the note and the file were there, masked
    assert not holds_person(logged)
    notes = query(warehouse_path, "SELECT source_file, notes FROM source_files WHERE channel = 'in_app'")
    assert any(n for _, n in notes)
    assert not any(holds_person(" ".join(n)) for _, n in notes)


def test_a_new_opt_in_after_the_erasure_lets_the_number_back_in(exports, warehouse_path, after_first_run):
    """Rules, section 8: a new valid opt-in dated after the erasure makes the number known again,
    its other rows (a quarantined one too) with it."""
    from cli.main import main

    assert main(["erase", PHONE, "--warehouse", str(warehouse_path), "--exports", str(exports)]) == 0
    (exports / "web_form" / "came_back.csv").write_text(CSV_HEADER + "\n".join([
        "0151 12345678,DE,opt_in,marketing,2099-01-01T00:00:00Z,checkbox,web-v4",
        "0151 12345678,DE,opt_in,utility,someday,checkbox,web-v4",  # quarantined for its date
    ]) + "\n")
    assert run_cli(exports, warehouse_path, as_of="2099-01-02T00:00:00Z") == 0
    assert query(warehouse_path, "SELECT status FROM consent_status WHERE phone_e164 = ? AND purpose = 'marketing'",
                 [PHONE]) == [("opted_in",)]
    kept = query(warehouse_path, "SELECT raw_row FROM quarantine WHERE source_file = 'web_form/came_back.csv'")
    assert len(kept) == 1 and '"0151 12345678"' in kept[0][0] and '"someday"' in kept[0][0]
    assert query(warehouse_path, "SELECT count(*) FROM skipped_items WHERE reason = ?", [ERASED]) == [(0,)]


def test_redaction_masks_every_spelling_and_keeps_dates_hashes_and_counts():
    from consent.domain.redact import redact

    for spelled in ("+49 151 1234 5678", "0151 12345678", "0049 151 12345678", "+49 (0)151 1234 5678",
                    "4915112345678", "(201) 555-0123", "06.12.34.56.78", "0151/1234-5678"):
        assert redact(f"note: {spelled}, again") == "note: [number], again", spelled
    assert redact(f"user {USER} and DE.ENT.11815799212886844830") == "user [bsuid] and [bsuid]"
    kept = ("line 12 2026-11-01T09:00:00Z", "run 3f2b1c9e-1234-4a5b-8c9d-0123456789ab",
            "hash 0a1b2c3d4e5f60718293a4b5c6d7e8f9", "123456 of 1,000,000 rows at 12:30:00", "whatsapp/US.json")
    for text in kept:
        assert redact(text) == text

