"""The notices registry: what people were told, checked against every opt-in."""

import json
import shutil
from pathlib import Path

import pytest

from consent.reading.notices import read_notices
from tests.conftest import FIXTURES, query, run_cli, statuses


@pytest.fixture
def with_notices(exports: Path) -> Path:
    shutil.copytree(FIXTURES / "notices", exports / "notices")
    return exports


def violations(warehouse: Path) -> set[tuple[str, str]]:
    return set(query(warehouse, "SELECT rule, source_file || ':' || source_line FROM consent_violations"))


def test_notices_are_read_from_yaml_and_markdown_front_matter(with_notices):
    folder = read_notices(with_notices)
    assert folder.refused == []
    notices = {n.notice_version: n for n in folder.notices}
    assert set(notices) == {"web-v3", "email-v1"}
    web = notices["web-v3"]
    assert web.notice_text.startswith("Yes, I want Acme Shoes to send me offers")
    assert (web.business_name, web.purposes, web.names_business, web.mentions_whatsapp, web.says_how_to_opt_out) == (
        "Acme Shoes", ["marketing"], True, True, True)
    assert notices["email-v1"].deficiencies == ("does not say how to opt out",)


def test_bad_notice_files_are_refused_with_the_reason(tmp_path):
    (tmp_path / "notices").mkdir()
    (tmp_path / "notices" / "no_version.yaml").write_text("text: hello\n")
    (tmp_path / "notices" / "typo.yaml").write_text("version: x\ntext: hi\nbuisness_name: Acme\n")
    (tmp_path / "notices" / "plain.md").write_text("no front matter here\n")
    (tmp_path / "notices" / "scan.pdf").write_bytes(b"%PDF")
    refused = dict(read_notices(tmp_path).refused)
    assert refused["notices/no_version.yaml"] == "unreadable notice: missing 'version'"
    assert refused["notices/typo.yaml"] == "unreadable notice: unknown fields: buisness_name"
    assert "front matter" in refused["notices/plain.md"]
    assert refused["notices/scan.pdf"] == "unsupported notice file type .pdf"


def _optins(exports: Path, rows: list[str]) -> None:
    (exports / "web_form" / "notice_cases.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n" + "\n".join(rows) + "\n"
    )


def test_notices_load_into_the_registry_and_opt_ins_are_checked(with_notices, warehouse_path):
    _optins(with_notices, [
        "+4915201234570,opt_in,marketing,2026-11-02T10:00:00Z,checkbox,web-v3",          # line 2: ok
        "+4915201234571,opt_in,marketing,2026-11-02T10:00:00Z,checkbox,web-v9",          # line 3: unknown notice
        "+4915201234572,opt_in,marketing,2026-09-02T10:00:00Z,checkbox,web-v3",          # line 4: before valid_from
        "+4915201234573,opt_in,marketing;utility,2026-11-02T10:00:00Z,checkbox,web-v3",  # line 5: utility not covered
    ])
    assert run_cli(with_notices, warehouse_path) == 0  # notice rules warn by default
    assert query(warehouse_path, "SELECT notice_version, business_name FROM consent_notices ORDER BY 1") == [
        ("email-v1", "Acme Shoes"), ("web-v3", "Acme Shoes")]
    found = violations(warehouse_path)
    assert ("notice_unknown", "web_form/notice_cases.csv:3") in found
    assert ("notice_not_valid_at_opt_in", "web_form/notice_cases.csv:4") in found
    assert ("notice_does_not_cover_purpose", "web_form/notice_cases.csv:5") in found
    assert not any(where == "web_form/notice_cases.csv:2" for _, where in found)
    got = statuses(warehouse_path)
    assert got[("+4915201234570", "marketing")] == "opted_in"
    assert got[("+4915201234571", "marketing")] == "opted_in"  # a warning, not a refusal
    # consent only for the purposes the notice covers
    assert (got[("+4915201234573", "marketing")], got[("+4915201234573", "utility")]) == ("opted_in", "no_consent")


def test_notice_rules_can_be_made_errors(with_notices, warehouse_path, capsys):
    (with_notices / "policy.yaml").write_text("rule_severity:\n  notice_deficient: error\n")
    _optins(with_notices, [])
    (with_notices / "email_link" / "more.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
        "+4915201234580,opt_in_request,marketing,2026-11-02T08:00:00Z,confirmation_link,email-v1\n"
    )
    assert run_cli(with_notices, warehouse_path) == 1
    out = capsys.readouterr().out
    assert "The notice says how to opt out." in out and "email_link/more.csv" in out


def test_changed_text_under_an_existing_version_is_refused(with_notices, warehouse_path, capsys):
    assert run_cli(with_notices, warehouse_path) == 0
    original = query(warehouse_path, "SELECT notice_text FROM consent_notices WHERE notice_version = 'web-v3'")
    path = with_notices / "notices" / "web-v3.yaml"
    path.write_text(path.read_text().replace("up to 4 messages a month.", "as often as we like."))
    capsys.readouterr()
    assert run_cli(with_notices, warehouse_path) == 1
    out = capsys.readouterr().out
    assert "notices_unchanged" in out and "version web-v3 is already registered with other content" in out
    assert query(warehouse_path, "SELECT notice_text FROM consent_notices WHERE notice_version = 'web-v3'") == original


def test_evidence_audit_shows_the_notice_text_the_person_saw(with_notices, warehouse_path, capsys):
    from cli.main import main

    _optins(with_notices, ["+4915201234570,opt_in,marketing,2026-11-02T10:00:00Z,checkbox,web-v3"])
    assert run_cli(with_notices, warehouse_path) == 0
    capsys.readouterr()
    assert main(["audit", "evidence", "+4915201234570", "--warehouse", str(warehouse_path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["notice_text"].startswith("Yes, I want Acme Shoes to send me offers and announcements on WhatsApp")


def test_notice_usage_mart_and_dashboard(with_notices, warehouse_path):
    _optins(with_notices, [
        "+4915201234570,opt_in,marketing,2026-11-02T10:00:00Z,checkbox,web-v3",
        "+4915201234571,opt_in,marketing,2026-11-02T10:00:00Z,checkbox,web-v9",
    ])
    assert run_cli(with_notices, warehouse_path) == 0
    usage = {(v, s): n for v, s, n in query(warehouse_path, "SELECT notice_version, notice_state, sum(opt_ins) FROM notice_usage GROUP BY ALL")}
    assert usage[("web-v3", "ok")] == 5  # DE, GB, US, FR (refused for other rules: still counted) and the new row
    assert usage[("web-v9", "not in registry")] == 1
    assert usage[("email-v1", "deficient")] == 1  # the confirmation
    assert usage[(None, "missing")] == 1  # DE2's opt-in names no notice
    html = (warehouse_path.parent / "dashboard.html").read_text()
    assert "Opt-ins per notice version" in html
