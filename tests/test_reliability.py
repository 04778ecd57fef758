"""Nothing lost under bad input, crashes and concurrent runs."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, query, run_cli, statuses

REPO = Path(__file__).resolve().parent.parent

# file -> (rows read, events, quarantined, skipped), and a reason or note it must show
BAD_INPUT = {
    "web_form/unbalanced_quotes.csv": ((2, 1, 1, 0), "malformed CSV"),
    "web_form/ragged.csv": ((3, 1, 2, 0), "ragged row: 2 fields, header has 6"),
    "web_form/semicolon.csv": ((1, 0, 1, 0), "missing required column 'phone' (the header looks ';'-delimited)"),
    "web_form/latin1.csv": ((1, 1, 0, 0), "not UTF-8: decoded as Latin-1"),
    "web_form/utf16.csv": ((1, 1, 0, 0), "decoded as UTF-16"),
    "web_form/crlf.csv": ((2, 2, 0, 0), None),
    "web_form/empty.csv": ((0, 0, 0, 0), "empty file"),
    "web_form/header_only.csv": ((0, 0, 0, 0), "header only"),
    "web_form/missing_phone_column.csv": ((2, 0, 2, 0), "file refused: missing required column 'phone'"),
    "web_form/unknown_columns.csv": ((1, 1, 0, 0), "unknown columns ignored: favourite_colour, utm_campaign"),
    "web_form/huge_field.csv": ((2, 1, 1, 0), "field longer than 4096 characters"),
    "web_form/spreadsheet_numbers.csv": ((3, 0, 3, 0), "phone number mangled by a spreadsheet"),
    # Opt-outs with unreadable dates still apply (at ingestion time), with a warning.
    "web_form/other_date_formats.csv": ((4, 4, 0, 0), None),
    "whatsapp/truncated.jsonl": ((3, 1, 2, 0), "malformed JSON line"),
    "whatsapp/not_whatsapp.json": ((1, 0, 1, 0), "not a WhatsApp Business webhook payload"),
    # Two messages of unknown types: inbound messages; the template status change: skipped.
    "whatsapp/unknown_types.json": ((2, 2, 0, 0), None),
    "whatsapp/duplicate_delivery.jsonl": ((2, 2, 0, 0), None),
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "bad_exports", exports)
    warehouse = root / "consent.duckdb"
    code = run_cli(exports, warehouse)
    return code, warehouse


def test_bad_input_never_fails_the_run(bad_run):
    code, _ = bad_run
    assert code == 0


@pytest.mark.parametrize("source_file", sorted(BAD_INPUT))
def test_bad_input_outcome_and_conservation(bad_run, source_file):
    _, warehouse = bad_run
    (counts, reason) = BAD_INPUT[source_file]
    row = query(
        warehouse,
        "SELECT rows_read, events, quarantined, skipped, notes FROM source_files WHERE source_file = ?",
        [source_file],
    )
    assert row, f"{source_file} not registered"
    rows_read, events, quarantined, skipped, notes = row[0]
    assert (rows_read, events, quarantined, skipped) == counts
    assert rows_read == events + quarantined + skipped
    if reason:
        reasons = [r for (r,) in query(warehouse, "SELECT reason FROM quarantine WHERE source_file = ?", [source_file])]
        assert any(reason in text for text in reasons + list(notes or [])), (reasons, notes)


def test_unknown_webhook_fields_are_counted_as_skipped(bad_run, tmp_path):
    _, warehouse = bad_run
    # The template status change is in the same payload as two messages, so the payload is not empty:
    # unknown change fields carry no items and are not rows.
    assert query(warehouse, "SELECT count(*) FROM skipped_items WHERE source_file = 'whatsapp/unknown_types.json'") == [(0,)]
    # Alone in its payload, the same change is one row, counted as skipped with its reason.
    exports, alone = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    (exports / "whatsapp").mkdir(parents=True)
    (exports / "whatsapp" / "template.json").write_text(
        '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":'
        '[{"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}')
    assert run_cli(exports, alone) == 0
    assert query(alone, "SELECT rows_read, events, quarantined, skipped FROM source_files") == [(1, 0, 0, 1)]
    assert query(alone, "SELECT source_line, reason FROM skipped_items") == [
        (1, "webhook payload without messages, statuses or user preferences")]


def test_opt_out_with_unreadable_date_applies_at_ingestion_time_with_a_warning(bad_run):
    _, warehouse = bad_run
    rows = query(
        warehouse,
        "SELECT occurred_at, warnings FROM consent_events WHERE source_file = 'web_form/other_date_formats.csv' ORDER BY source_line",
    )
    assert rows[0][0] is None and "unreadable date '01/11/2026 10:00': ignored" in rows[0][1]
    assert rows[2][0] is not None and rows[2][1] == []
    assert statuses(warehouse)[("+4915112345678", "marketing")] == "opted_out"


def test_duplicated_webhook_delivery_is_one_event(bad_run):
    _, warehouse = bad_run
    assert query(warehouse, "SELECT count(*) FROM consent_events WHERE evidence_ref = 'wamid.D1'") == [(1,)]


def test_huge_field_is_not_stored_whole(bad_run):
    _, warehouse = bad_run
    (length,) = query(warehouse, "SELECT max(length(raw_row)) FROM quarantine WHERE source_file = 'web_form/huge_field.csv'")[0]
    assert length <= 4096


# --- crash safety ----------------------------------------------------------------

PUBLISHED = {
    "consent_events": "SELECT * EXCLUDE (run_id, ingested_at) FROM consent_events ORDER BY event_id",
    "quarantine": "SELECT * EXCLUDE (run_id, ingested_at) FROM quarantine ORDER BY quarantine_id",
    "consent_status": "SELECT * FROM consent_status ORDER BY ALL",
    "consent_violations": "SELECT * FROM consent_violations ORDER BY ALL",
    "consent_status_history": "SELECT * FROM consent_status_history ORDER BY ALL",
    "source_files": "SELECT channel, source_file, file_hash, rows_read, events, quarantined, skipped FROM source_files ORDER BY ALL",
}


def snapshot(warehouse: Path) -> dict:
    return {name: query(warehouse, sql) for name, sql in PUBLISHED.items()}


def _split_exports(exports: Path, root: Path) -> tuple[Path, Path]:
    """A first night without the whatsapp folder, a second night with it."""
    night1 = root / "night1"
    shutil.copytree(exports, night1, ignore=shutil.ignore_patterns("whatsapp"))
    night2 = root / "night2"
    shutil.copytree(exports, night2)
    return night1, night2


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory):
    """The warehouse after night 1 (copied into each crash test), and the tables before and after night 2."""
    root = tmp_path_factory.mktemp("reference")
    night1, night2 = _split_exports(FIXTURES / "exports", root)
    warehouse = root / "reference.duckdb"
    assert run_cli(night1, warehouse) == 0
    after_night1 = root / "after_night1.duckdb"
    shutil.copy(warehouse, after_night1)
    before = snapshot(warehouse)
    assert run_cli(night2, warehouse) == 0
    return after_night1, before, snapshot(warehouse)


@pytest.mark.parametrize(
    "point",
    # Reading and normalising are the same state (nothing written but staging): one of them is enough.
    ["after_normalising", "after_staging", "publish_after_ledger", "publish_after_status", "after_publish"],
)
def test_run_killed_at_any_point_leaves_before_or_after_and_the_next_run_completes(point, tmp_path, crash_reference):
    after_night1, before, after = crash_reference
    _, night2 = _split_exports(FIXTURES / "exports", tmp_path)
    warehouse = tmp_path / "consent.duckdb"
    shutil.copy(after_night1, warehouse)
    killed = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "--exports", str(night2), "--warehouse", str(warehouse),
         "--as-of", "2026-11-10T00:00:00Z"],
        env={**os.environ, "CONSENT_CRASH_AT": point}, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = snapshot(warehouse)
    assert state == (after if point == "after_publish" else before)
    assert run_cli(night2, warehouse) == 0
    assert snapshot(warehouse) == after


# --- concurrency ---------------------------------------------------------------------


def test_second_run_waits_for_the_lock_then_exits_with_a_clear_message(exports, warehouse_path, after_first_run, capsys):
    from consent.storage.access import RunLock

    lock = RunLock(warehouse_path, timeout_seconds=1)
    lock.acquire()  # another run is writing
    try:
        started = time.monotonic()
        code = run_cli(exports, warehouse_path, "--lock-timeout", "1.5")
        waited = time.monotonic() - started
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 1
    assert "another run is writing the warehouse" in err and "waited 1.5 s" in err
    assert waited >= 1.5
    assert run_cli(exports, warehouse_path) == 0  # once the lock is free, runs go on


def test_read_only_audit_during_a_run_works(tmp_path):
    exports = tmp_path / "exports"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(exports), "--events", "400"], check=True,
                   capture_output=True)
    warehouse = tmp_path / "consent.duckdb"
    assert run_cli(exports, warehouse) == 0
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(tmp_path / "more"), "--events", "8000",
                    "--seed", "9"], check=True, capture_output=True)
    shutil.copytree(tmp_path / "more" / "web_form", exports / "web_form_batch2")
    sendable = "SELECT count(*) FROM consent_status WHERE sendable"
    (before,) = query(warehouse, sendable)[0]
    run = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", "--exports", str(exports), "--warehouse", str(warehouse),
         "--as-of", "2026-11-26T00:00:00Z"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    from cli.main import read_only_query
    from resources.warehouse import WarehouseResource

    seen = []
    try:
        while run.poll() is None:
            columns, rows = read_only_query(WarehouseResource(path=str(warehouse), lock_timeout_seconds=60), sendable)
            assert len(columns) == 1
            seen.append(rows[0][0])
            time.sleep(0.1)
    finally:
        run.wait(timeout=300)
    assert run.returncode == 0
    (after,) = query(warehouse, sendable)[0]
    # Each audit saw the warehouse before the run or after it, never a half-written state.
    assert seen and set(seen) <= {before, after} and after != before
