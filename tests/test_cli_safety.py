"""What the CLI hands an operator is safe to use: a typo fails loudly, an empty list says so, and no
CSV cell it writes runs as a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from consent.domain.csv_safe import is_formula, safe_csv_text, write_csv
from cli.main import main
from tests.conftest import FIXTURES, query, run_cli

FORMULA = '=HYPERLINK("http://x","y")'
FORMULA_PHONE = "+4915199990001"
BUSINESSES = """businesses:
  acme_shoes:
    channels: [web_form, email_link, preference_center, whatsapp]
  acme_bank:
    channels: [bank_form]
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path]:
    """Two businesses, one with no contact yet; a web form signup whose evidence_ref is a formula."""
    root = tmp_path_factory.mktemp("safety")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    (exports / "bank_form").mkdir()
    (exports / "businesses.yaml").write_text(BUSINESSES)
    signups = exports / "web_form" / "signups_2026-11-01.csv"
    row = f'{FORMULA_PHONE},,opt_in,marketing,2026-11-02T09:00:00Z,checkbox,web-v3,false,false,organic,"{FORMULA.replace(chr(34), 2 * chr(34))}"\n'
    signups.write_text(signups.read_text() + row)
    warehouse = root / "wh" / "consent.duckdb"
    assert run_cli(exports, warehouse) == 0
    assert query(warehouse, "SELECT evidence_ref FROM consent_events WHERE phone_e164 = ?", [FORMULA_PHONE]) == [(FORMULA,)]
    return exports, warehouse


def cli(shop, *args: str) -> int:
    exports, warehouse = shop
    configured = ["--exports", str(exports)] if args[0] in ("export", "check") else []
    return main([*args, "--warehouse", str(warehouse), *configured])


def lines_of(stderr: str) -> list[str]:
    """Standard error's lines, without the warning every command gives on an unencrypted warehouse."""
    return [line for line in stderr.splitlines() if "CONSENT_WAREHOUSE_KEY is not set" not in line]


# Typos fail loudly -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, wrong, meant", [
    (["export", "--suppression", "--business", "acme_shoez"], "--business 'acme_shoez'", "acme_shoes"),
    (["export", "--suppression", "--business", "acme_shoes", "--purpose", "marketting"], "--purpose 'marketting'", "marketing"),
    (["export", "--purpose", "Marketing", "--business", "acme_shoes"], "--purpose 'Marketing'", "marketing"),
    (["export", "--purpose", "marketing", "--business", "acme_shose"], "--business 'acme_shose'", "acme_shoes"),
    (["export", "--renewal-due", "--purpose", "utilty", "--business", "acme_shoes"], "--purpose 'utilty'", "utility"),
])
def test_an_unknown_business_or_purpose_in_export_exits_2_with_one_line_naming_the_known_ones(shop, tmp_path, capsys, args, wrong, meant):
    out = tmp_path / "list.csv"
    assert cli(shop, *args, "--out", str(out)) == 2
    captured = capsys.readouterr()
    lines = lines_of(captured.err)
    assert len(lines) == 1 and captured.out == ""
    assert f"unknown {wrong}" in lines[0] and f"did you mean {meant!r}?" in lines[0]
    known = "acme_bank, acme_shoes" if "business" in wrong else "marketing"
    assert known in lines[0]
    assert not out.exists()  # no header-only list to upload


@pytest.mark.parametrize("args, wrong", [
    (["--purpose", "markting", "--business", "acme_shoes"], "--purpose 'markting'"),
    (["--purpose", "marketing", "--business", "acme-shoes"], "--business 'acme-shoes'"),
])
def test_an_unknown_business_or_purpose_in_check_exits_2_and_logs_no_check(shop, tmp_path, capsys, args, wrong):
    audience = tmp_path / "audience.csv"
    audience.write_text("phone\n+4915112345678\n")
    checks_before = query(shop[1], "SELECT count(*) FROM send_checks")
    assert cli(shop, "check", str(audience), *args) == 2
    err = lines_of(capsys.readouterr().err)
    assert len(err) == 1 and f"unknown {wrong}" in err[0] and "did you mean" in err[0]
    assert query(shop[1], "SELECT count(*) FROM send_checks") == checks_before


def test_a_name_far_from_any_known_one_is_refused_without_a_guess(shop, capsys):
    assert cli(shop, "export", "--suppression", "--business", "zzz") == 2
    err = capsys.readouterr().err
    assert "unknown --business 'zzz'" in err and "did you mean" not in err and "acme_bank, acme_shoes" in err


def test_an_empty_sendable_or_suppression_list_of_a_known_business_says_so_and_exits_0(shop, tmp_path, capsys):
    # acme_bank is in businesses.yaml but has no contact yet: known, and its lists are empty.
    out = tmp_path / "bank.csv"
    assert cli(shop, "export", "--suppression", "--business", "acme_bank", "--out", str(out)) == 0
    err = lines_of(capsys.readouterr().err)
    assert out.read_text().splitlines() == ["phone_e164,whatsapp_user_id,business,purpose,opted_out_at,opt_out_channel"]
    assert [line for line in err if "warning" in line] == [
        "consent export: warning: the suppression list of acme_bank is empty (0 contacts)"]
    assert cli(shop, "export", "--purpose", "marketing", "--business", "acme_bank") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and lines_of(captured.err) == [
        "consent export: warning: the sendable list of acme_bank, purpose marketing is empty (0 contacts)"]


def test_a_purpose_added_to_the_policy_since_the_last_run_is_known_and_its_list_empty(shop, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text("purposes: [marketing, utility, service]\n")
    assert cli(shop, "export", "--purpose", "service", "--business", "acme_shoes", "--policy", str(policy)) == 0
    assert lines_of(capsys.readouterr().err) == [
        "consent export: warning: the sendable list of acme_shoes, purpose service is empty (0 contacts)"]
    assert cli(shop, "export", "--purpose", "servce", "--business", "acme_shoes", "--policy", str(policy)) == 2
    assert "did you mean 'service'?" in capsys.readouterr().err


def test_a_list_with_contacts_prints_no_warning(shop, capsys):
    assert cli(shop, "export", "--purpose", "marketing", "--business", "acme_shoes") == 0
    captured = capsys.readouterr()
    assert FORMULA_PHONE in captured.out.split() and "empty" not in captured.err


# CSV cells never run as formulas -----------------------------------------------------------------

@pytest.mark.parametrize("cell", [FORMULA, "=1+1", "+cmd|' /C calc'!A0", "+ 1", "-2+3", "-", "@SUM(A1)", "\tx", "\r=1"])
def test_a_cell_that_would_start_a_formula_is_escaped(cell):
    assert is_formula(cell)
    out = io.StringIO()
    write_csv(out, ["a"], [[cell]])
    assert out.getvalue().splitlines()[1].startswith("\"'")  # prefixed with a quote, and quoted
    assert next(csv.reader(io.StringIO(out.getvalue(), newline="")), None) == ["a"]
    assert list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1] == ["'" + cell]


@pytest.mark.parametrize("cell", ["+4915112345678", "-3.5", "-12", "+1", "1e5", "", "web-v3", "a=b", "form-1001"])
def test_numbers_and_plain_text_stay_as_they_are(cell):
    assert not is_formula(cell)
    out = io.StringIO()
    write_csv(out, ["a", "b"], [[cell, None]])
    assert out.getvalue() == f"a,b\r\n{cell},\r\n"


def test_polars_csv_text_is_escaped_and_left_byte_for_byte_when_clean():
    clean = "phone,n\n+4915112345678,-3\n"
    assert safe_csv_text(clean) == clean
    assert safe_csv_text(f'phone,note\n+4915112345678,"{FORMULA.replace(chr(34), 2 * chr(34))}"\n') == \
        f'phone,note\n+4915112345678,"\'{FORMULA.replace(chr(34), 2 * chr(34))}"\n'


def test_audit_evidence_csv_shows_a_forms_formula_escaped(shop, capsys):
    assert cli(shop, "audit", "evidence", FORMULA_PHONE, "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out, newline="")))
    evidence = [r["evidence_ref"] for r in rows if r.get("evidence_ref")]
    assert evidence and set(evidence) == {"'" + FORMULA}
    assert {r["kind"] for r in rows} == {"event", "status"}


def test_sql_csv_escapes_formulas_and_keeps_numbers(shop, capsys):
    assert cli(shop, "sql", "SELECT evidence_ref, phone_e164, -3 AS delta FROM consent_events "
                            f"WHERE phone_e164 = '{FORMULA_PHONE}'", "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["evidence_ref,phone_e164,delta", f'"\'{FORMULA.replace(chr(34), 2 * chr(34))}",{FORMULA_PHONE},-3']


def test_suppression_csv_keeps_e164_numbers_as_they_are(shop, tmp_path, capsys):
    out = tmp_path / "suppression.csv"
    assert cli(shop, "export", "--suppression", "--business", "acme_shoes", "--out", str(out)) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    assert rows and all(r["phone_e164"].startswith("+") and r["phone_e164"][1:].isdigit() for r in rows if r["phone_e164"])


def test_check_decisions_csv_escapes_the_audiences_own_formula_cells(shop, tmp_path, capsys):
    audience = tmp_path / "audience.csv"
    audience.write_text(f'phone,note\n{FORMULA_PHONE},"{FORMULA.replace(chr(34), 2 * chr(34))}"\n+4915112345678,@cmd\n')
    out = tmp_path / "decided.csv"
    assert cli(shop, "check", str(audience), "--purpose", "marketing", "--business", "acme_shoes", "--out", str(out)) in (0, 3)
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["note"] for r in rows] == ["'" + FORMULA, "'@cmd"]
    assert [r["phone"] for r in rows] == [FORMULA_PHONE, "+4915112345678"]
    assert rows[0]["decision"] == "send"
