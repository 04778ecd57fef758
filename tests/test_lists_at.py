"""The sendable and suppression lists as they stood at a moment (`consent export --at`), on a file and on
DuckLake, agreeing with the pre-send gate at the same moment."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import run_cli

HEADER = "phone,country,event_type,purposes,occurred_at,consent_method,notice_version,whatsapp_user_id\n"
STAYS, LEAVES, LAPSES, LATE = "+4915111111111", "+4915122222222", "+4915155555555", "+4915177777777"
DAY = {day: f"2026-11-{day:02d}T00:00:00Z" for day in range(1, 11)}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build(tmp_path: Path, warehouse: str) -> str:
    """One business: a contact opted in on day 1 who stays, one opted in on day 1 who opts out on
    day 5, one whose consent of 2025 lapses after a year, one opted in on day 8."""
    exports = tmp_path / "exports"
    write(exports / "web_form" / "signups.csv", HEADER + "\n".join([
        f"{STAYS},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{LEAVES},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{LEAVES},,opt_out,,2026-11-05T10:00:00Z,,,",
        f"{LAPSES},,opt_in,marketing,2025-01-02T10:00:00Z,checkbox,v1,",  # lapses 2026-01-02
        f"{LATE},,opt_in,marketing,2026-11-08T10:00:00Z,checkbox,v1,",
    ]) + "\n")
    write(exports / "policy.yaml", "consent_validity_days:\n  marketing: 365\nrenewal_notice_days: 30\n")
    assert main(["run", "--exports", str(exports), "--warehouse", warehouse, "--as-of", DAY[10]]) == 0
    return str(exports)


@pytest.fixture
def file_warehouse(tmp_path: Path, monkeypatch) -> tuple[str, str]:
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    warehouse = str(tmp_path / "wh" / "consent.duckdb")
    return warehouse, build(tmp_path, warehouse)


def export(warehouse: str, exports: str, tmp_path: Path, *extra: str) -> tuple[int, list[dict], str]:
    out = tmp_path / "list.csv"
    out.unlink(missing_ok=True)
    code = main(["export", "--warehouse", warehouse, "--exports", exports, "--format", "csv", "--out", str(out), *extra])
    text = out.read_text() if out.exists() else ""
    return code, list(csv.DictReader(io.StringIO(text))), text


def sendable(warehouse: str, exports: str, tmp_path: Path, at: str) -> list[str]:
    code, rows, _ = export(warehouse, exports, tmp_path, "--purpose", "marketing", "--at", at)
    assert code == 0
    return [r["phone_e164"] for r in rows]


def suppressed(warehouse: str, exports: str, tmp_path: Path, at: str) -> list[tuple[str, str]]:
    code, rows, _ = export(warehouse, exports, tmp_path, "--suppression", "--at", at)
    assert code == 0
    return [(r["phone_e164"], r["purpose"], r["opted_out_at"]) for r in rows]


def test_a_contact_opted_in_on_day_1_and_out_on_day_5_is_sendable_on_day_3_and_suppressed_on_day_6(
        file_warehouse, tmp_path):
    warehouse, exports = file_warehouse
    assert sendable(warehouse, exports, tmp_path, DAY[3]) == [STAYS, LEAVES]
    assert suppressed(warehouse, exports, tmp_path, DAY[3]) == []
    assert sendable(warehouse, exports, tmp_path, DAY[6]) == [STAYS]
    # an opt-out naming no purpose leaves every purpose of the policy
    assert suppressed(warehouse, exports, tmp_path, DAY[6]) == [
        (LEAVES, "marketing", "2026-11-05 10:00:00"), (LEAVES, "utility", "2026-11-05 10:00:00")]
    # today's list is the list as of the last run's clock
    assert sendable(warehouse, exports, tmp_path, DAY[10]) == [STAYS, LATE]


def test_before_any_event_both_lists_are_empty(file_warehouse, tmp_path, capsys):
    warehouse, exports = file_warehouse
    assert sendable(warehouse, exports, tmp_path, "2024-06-01T00:00:00Z") == []
    assert suppressed(warehouse, exports, tmp_path, "2024-06-01T00:00:00Z") == []
    err = capsys.readouterr().err
    assert "the sendable list of default, purpose marketing, as of 2024-06-01 00:00:00 UTC is empty" in err


def test_a_consent_lapses_at_the_moment_its_validity_ends(file_warehouse, tmp_path):
    warehouse, exports = file_warehouse
    assert sendable(warehouse, exports, tmp_path, "2025-12-01T00:00:00Z") == [LAPSES]  # due for renewal: still sends
    assert sendable(warehouse, exports, tmp_path, "2026-01-02T09:59:59Z") == [LAPSES]
    assert sendable(warehouse, exports, tmp_path, "2026-01-02T10:00:00Z") == []
    # after the last run's clock the history still says opted in: the validity is applied at the moment asked
    assert sendable(warehouse, exports, tmp_path, "2027-10-15T00:00:00Z") == [STAYS, LATE]
    assert sendable(warehouse, exports, tmp_path, "2027-12-01T00:00:00Z") == []


def test_the_list_at_a_moment_is_what_the_gate_lets_through_then(file_warehouse, tmp_path):
    warehouse, exports = file_warehouse
    audience = tmp_path / "audience.csv"
    audience.write_text("phone\n" + "\n".join([STAYS, LEAVES, LAPSES, LATE]) + "\n")
    for at in ("2025-06-01T00:00:00Z", "2026-01-03T00:00:00Z", DAY[3], DAY[6], DAY[9]):
        out = tmp_path / "decided.csv"
        main(["check", str(audience), "--purpose", "marketing", "--warehouse", warehouse, "--exports", exports,
              "--at", at, "--out", str(out)])
        let_through = {r["phone"] for r in csv.DictReader(io.StringIO(out.read_text())) if r["decision"] == "send"}
        assert set(sendable(warehouse, exports, tmp_path, at)) == let_through, at


def test_without_at_the_lists_are_todays(file_warehouse, tmp_path, capsys):
    warehouse, exports = file_warehouse
    assert main(["export", "--warehouse", warehouse, "--purpose", "marketing"]) == 0
    assert capsys.readouterr().out == f"{STAYS}\n{LATE}\n"
    assert main(["export", "--warehouse", warehouse, "--suppression"]) == 0
    assert capsys.readouterr().out == (
        "phone_e164,whatsapp_user_id,business,purpose,opted_out_at,opt_out_channel\r\n"
        f"{LEAVES},,default,marketing,2026-11-05 10:00:00,web_form\r\n"
        f"{LEAVES},,default,utility,2026-11-05 10:00:00,web_form\r\n")
    # the text format: one contact a line, as today's
    assert main(["export", "--warehouse", warehouse, "--purpose", "marketing", "--at", DAY[3]]) == 0
    assert capsys.readouterr().out == f"{STAYS}\n{LEAVES}\n"


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "11/05/2026"])
def test_a_bad_at_is_one_line_and_exit_2(file_warehouse, tmp_path, capsys, bad):
    warehouse, exports = file_warehouse
    for extra in (["--purpose", "marketing"], ["--suppression"]):
        code, rows, _ = export(warehouse, exports, tmp_path, *extra, "--at", bad)
        err = capsys.readouterr().err
        assert code == 2 and rows == []
        assert err.strip().count("\n") == 0 and f"--at: not an ISO 8601 timestamp: {bad!r}" in err


def test_on_ducklake_the_lists_at_a_moment_are_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    monkeypatch.setenv("CONSENT_HASH_SALT", "one salt for both")
    lake = f"ducklake:sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}"
    exports = build(tmp_path / "l", lake)
    file = str(tmp_path / "f" / "consent.duckdb")
    build(tmp_path / "f", file)
    for at in (DAY[3], DAY[6]):
        for extra in (["--purpose", "marketing"], ["--suppression"]):
            assert export(lake, exports, tmp_path, *extra, "--at", at)[2] == export(file, exports, tmp_path, *extra, "--at", at)[2]
    assert sendable(lake, exports, tmp_path, DAY[6]) == [STAYS]


def test_an_opt_in_without_its_evidence_is_never_sendable():
    from datetime import datetime

    from consent.domain.policy import Policy
    from consent.sending.lists import sendable_at

    columns = ["phone_e164", "whatsapp_user_id", "contact_id", "status", "status_since", "consent_event_id",
               "consent_at", "phone_region"]
    at, since = datetime(2026, 11, 3), datetime(2026, 11, 1, 10)
    proven = (STAYS, None, STAYS, "opted_in", since, "e1", since, "DE")
    unproven = (LEAVES, None, LEAVES, "opted_in", since, None, since, "DE")
    assert sendable_at(columns, [proven, unproven], Policy(), "marketing", at) == [(STAYS, None)]
