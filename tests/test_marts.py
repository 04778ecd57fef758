"""Marts, canned audits, exports and the dashboard on the fixture exports, with known answers."""

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, query, run_cli

D = dt.date


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("marts")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    path = root / "wh" / "consent.duckdb"
    assert run_cli(exports, path) == 0
    return path


def daily(path, day, channel, purpose):
    rows = query(path, "SELECT opt_ins, opt_outs, confirmations, net_change, sendable_audience FROM consent_daily "
                       "WHERE day = ? AND channel = ? AND purpose = ?", [day, channel, purpose])
    return rows[0] if rows else None


def test_consent_daily_counts_what_the_rules_decided(warehouse):
    assert daily(warehouse, D(2026, 11, 1), "web_form", "marketing") == (3, 0, 0, 3, 3)  # DE, GB, DE2; not the pre-ticked or bought
    assert daily(warehouse, D(2026, 11, 1), "web_form", "utility") == (1, 0, 0, 1, 1)
    assert daily(warehouse, D(2026, 11, 2), "email_link", "marketing") == (1, 0, 1, 1, 1)  # double opt-in confirmed
    assert daily(warehouse, D(2026, 11, 3), "whatsapp", "marketing")[:2] == (0, 3)  # STOP, 131050, user_preferences
    assert daily(warehouse, D(2026, 11, 3), "preference_center", "utility")[:2] == (0, 1)
    assert daily(warehouse, D(2026, 11, 10), "web_form", "marketing")[4] == 1  # only DE2 still sendable
    assert daily(warehouse, D(2026, 11, 10), "email_link", "marketing") is None  # BR opted out on 11-04


def test_consent_coverage(warehouse):
    rows = query(warehouse, "SELECT channel, purpose, opted_in_contacts, with_method, with_notice, complete, complete_share FROM consent_coverage")
    assert rows == [("web_form", "marketing", 1, 1, 0, 0, 0.0)]  # DE2's opt-in names no notice


def test_quarantine_and_violation_summaries(warehouse):
    reasons = dict(query(warehouse, "SELECT reason, sum(rows) FROM quarantine_summary GROUP BY ALL"))
    assert reasons["unknown event type '…'"] == 1 and reasons["unreadable date '…'"] == 1
    assert reasons["not a WhatsApp Business webhook payload"] == 1
    assert sum(reasons.values()) == query(warehouse, "SELECT count(*) FROM quarantine")[0][0]
    rules = {(r[0], r[1]): r[2] for r in query(warehouse, "SELECT channel, rule, sum(opt_ins) FROM violations_summary GROUP BY ALL")}
    assert rules == {("web_form", "pre_ticked_checkbox"): 1, ("web_form", "non_organic_source"): 1,
                     ("web_form", "missing_notice_version"): 1}


def test_send_audit_checks_each_message_against_consent_at_send_time(warehouse):
    rows = {r[0]: r[1:] for r in query(warehouse, "SELECT message_id, category, status_at_send, finding FROM send_audit")}
    assert rows["wamid.SEND-DE2"] == ("marketing", "opted_in", "ok")
    assert rows["wamid.SEND-GB"] == ("marketing", "opted_out", "sent_after_opt_out")
    delivered_to_fr = [k for k, v in rows.items() if v[0] == "utility"]
    assert [rows[k] for k in delivered_to_fr] == [("utility", "no_consent", "sent_without_consent")]
    assert [v[2] for v in rows.values()].count("not_checked") == 1  # the failed send has no pricing category
    hashes = [h for (h,) in query(warehouse, "SELECT recipient_hash FROM send_audit")]
    assert all(len(h) == 32 and not h.startswith("+") for h in hashes)


def _status_line(message_id: str, status: str, timestamp: int, recipient_id: str, category: str) -> str:
    """One status webhook as Meta sends it (one JSON object per line, as in tests/fixtures/sends)."""
    item = {"id": message_id, "status": status, "timestamp": str(timestamp), "recipient_id": recipient_id,
            "pricing": {"billable": True, "pricing_model": "PMP", "category": category}}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
             "statuses": [item]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]})


@pytest.mark.parametrize("order", ["as_sent", "reversed"])
def test_a_message_whose_statuses_name_two_numbers_is_the_earliest_statuses(tmp_path, order):
    """Status rows of one message id that disagree (two recipients, two categories): the earliest
    status decides, whatever order the rows arrive in, so every build of the send audit agrees."""
    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    lines = [_status_line("wamid.SEND-TWO", "delivered", 1793959305, "4915201234567", "utility"),
             _status_line("wamid.SEND-TWO", "sent", 1793959300, "447400123456", "marketing")]
    (exports / "whatsapp" / "statuses_2026-11-07.jsonl").write_text(
        "\n".join(lines if order == "as_sent" else lines[::-1]) + "\n")
    path = tmp_path / "wh" / "consent.duckdb"
    assert run_cli(exports, path) == 0
    rows = {r[0]: r[1:] for r in query(path, "SELECT message_id, recipient_hash, category, sent_at FROM send_audit")}
    assert rows["wamid.SEND-TWO"][0] == rows["wamid.SEND-GB"][0]  # 447400123456, named by the "sent" status
    assert rows["wamid.SEND-TWO"][1:] == ("marketing", dt.datetime(2026, 11, 6, 10, 1, 40))


def test_a_message_moving_to_another_recipient_on_a_later_night_rebuilds_the_one_it_left(tmp_path):
    """Night 1: a message's only status names the opted-out GB number (a send after its opt-out).
    Night 2: an earlier status of the same message id names the DE number, so the message is now
    DE's. The night's marts must drop it from GB's opt-out row too, as a `--full` build does."""
    from consent import marts

    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    shutil.copytree(FIXTURES / "exports", exports)
    (exports / "whatsapp" / "statuses_2026-11-07.jsonl").write_text(
        _status_line("wamid.SEND-MOVES", "delivered", 1793959260, "447400123456", "marketing") + "\n")
    assert run_cli(exports, path, as_of="2026-11-09T00:00:00Z") == 0
    gb_row = "SELECT messages_after_opt_out FROM opt_out_timeliness WHERE first_message_at = ?"
    assert query(path, gb_row, [dt.datetime(2026, 11, 6, 10, 1)]) == [(1,)]

    (exports / "whatsapp" / "statuses_2026-11-08.jsonl").write_text(
        _status_line("wamid.SEND-MOVES", "sent", 1793959230, "4915201234567", "marketing") + "\n")
    assert run_cli(exports, path, as_of="2026-11-10T00:00:00Z") == 0
    assert dict(query(path, "SELECT mart, mode FROM mart_builds"))["opt_out_timeliness"] == "incremental"
    by_night = {m: query(path, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS}
    assert query(path, gb_row, [dt.datetime(2026, 11, 6, 10, 1)]) == []

    assert run_cli(exports, path, "--full", as_of="2026-11-10T00:00:00Z") == 0
    assert {m: query(path, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS} == by_night


def test_a_changed_send_macro_changes_every_marts_fingerprint(warehouse, monkeypatch):
    """The marts read sends through `send_macros.sql`: a warehouse upgraded to a version whose macros
    differ builds every mart whole once, not its old rows beside new ones."""
    import duckdb

    from consent import marts
    from consent.storage import sql
    from consent.domain.policy import Policy

    policy = Policy()
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        sql.use_salt(con, "salt")
        before = {name: marts._fingerprint(con, name, policy) for name in marts.MARTS}
        original = sql.statements
        monkeypatch.setattr(sql, "statements", lambda name: original(name) + (("SELECT 1",) if name == "send_macros" else ()))
        after = {name: marts._fingerprint(con, name, policy) for name in marts.MARTS}
    finally:
        con.close()
    assert all(before[name] != after[name] for name in marts.MARTS)


def test_marts_hold_no_raw_numbers(warehouse):
    from consent import marts

    numbers = [p[1:] for (p,) in query(warehouse, "SELECT DISTINCT phone_e164 FROM consent_events WHERE phone_e164 IS NOT NULL")]
    assert len(numbers) >= 5
    for mart in marts.MARTS:
        rows = query(warehouse, f"SELECT * FROM {mart}")
        assert rows or mart == "consent_renewals", mart  # (no consent lapses within the fixture's horizon)
        text = json.dumps(rows, default=str)
        assert not [n for n in numbers if n in text or n[-9:] in text], mart


def audit(warehouse, *args, fmt="json"):
    from cli.main import main
    import io
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["audit", *args, "--warehouse", str(warehouse), "--format", fmt])
    return code, out.getvalue()


def test_audit_evidence_of_one_number_in_any_spelling(warehouse):
    code, out = audit(warehouse, "evidence", "07400 123456", "--country", "GB")
    rows = json.loads(out)
    assert code == 0
    assert {r["what"] for r in rows if r["kind"] == "event"} == {"opt_in", "opt_out"}
    assert {(r["purposes"], r["what"]) for r in rows if r["kind"] == "status"} == {("marketing", "opted_out"), ("utility", "opted_out")}
    assert all(r["source_file"] and r["source_line"] for r in rows if r["kind"] == "event")


def test_audit_opted_in_without_evidence_is_empty(warehouse, tmp_path):
    code, out = audit(warehouse, "opted-in-without-evidence")
    assert code == 0 and json.loads(out) == []
    # An opted_in row that lost its method (as a faulty writer would leave it) is what the audit lists.
    import duckdb

    shutil.copytree(warehouse.parent, tmp_path / "wh")
    broken = tmp_path / "wh" / warehouse.name
    con = duckdb.connect(str(broken))
    con.execute("UPDATE consent_status SET consent_method = NULL WHERE status = 'opted_in'")
    lost = con.execute("SELECT purpose FROM consent_status WHERE status = 'opted_in' ORDER BY ALL").fetchall()
    con.close()
    assert lost
    code, out = audit(broken, "opted-in-without-evidence")
    rows = json.loads(out)
    assert code == 0 and sorted((r["purpose"],) for r in rows) == lost and all(r["consent_method"] is None for r in rows)


def test_audit_violations_and_sends_without_consent(warehouse):
    code, out = audit(warehouse, "violations")
    assert code == 0
    violations = json.loads(out)
    assert {v["rule"] for v in violations} == {"pre_ticked_checkbox", "non_organic_source", "missing_notice_version"}
    assert all("phone" not in key for v in violations for key in v)
    code, out = audit(warehouse, "sends-without-consent")
    assert code == 0
    sends = json.loads(out)
    assert sorted(s["finding"] for s in sends) == ["sent_after_opt_out", "sent_without_consent"]


def test_audit_opt_outs_honoured_shows_the_first_message_after_each_opt_out(warehouse):
    code, out = audit(warehouse, "opt-outs-honoured")
    assert code == 0
    rows = json.loads(out)
    broken = [r for r in rows if not r["honoured"]]
    assert [(r["purpose"], r["first_message_id"]) for r in broken] == [("marketing", "wamid.SEND-GB")]
    assert len(rows) == 6 and sum(r["honoured"] for r in rows) == 5


def test_audit_list_and_unknown_audit(warehouse, capsys):
    code, out = audit(warehouse, fmt="table")
    assert code == 0 and "evidence NUMBER" in out and "opt-outs-honoured" in out
    from cli.main import main

    assert main(["audit", "nope", "--warehouse", str(warehouse)]) == 2
    assert "unknown audit 'nope'" in capsys.readouterr().err


def test_sql_is_read_only(warehouse, capsys):
    from cli.main import main

    for statement in ("DELETE FROM consent_status", "DROP TABLE consent_events", "UPDATE consent_status SET status = 'opted_in'",
                      "COPY consent_status TO 'leak.csv'", "ATTACH 'other.duckdb' AS other"):
        assert main(["sql", statement, "--warehouse", str(warehouse)]) == 2, statement
        assert "refused" in capsys.readouterr().err
    assert query(warehouse, "SELECT count(*) FROM consent_status")[0][0] == 14
    assert main(["sql", "SELECT count(*) AS n FROM consent_events", "--warehouse", str(warehouse), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "15"]  # message statuses are not consent events


def test_export_sendable_list_and_suppression_list(warehouse, tmp_path, capsys):
    from cli.main import main

    assert main(["export", "--purpose", "marketing", "--warehouse", str(warehouse)]) == 0
    assert capsys.readouterr().out.split() == ["+4915201234567"]
    out = tmp_path / "suppression.csv"
    assert main(["export", "--suppression", "--warehouse", str(warehouse), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "phone_e164,whatsapp_user_id,business,purpose,opted_out_at,opt_out_channel" and len(lines) == 7
    assert main(["export", "--warehouse", str(warehouse)]) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_renders_offline_without_errors_or_numbers(warehouse, tmp_path):
    dashboard = warehouse.parent / "dashboard.html"
    text = dashboard.read_text()
    assert "<script src=" not in text and '<link href="http' not in text  # plotly.js is inlined: opens offline
    assert "15112345678" not in text and "+44" not in text
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where apt-get is available)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400", "--virtual-time-budget=8000",
             "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([browser, *flags, "--dump-dom", dashboard.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="main-svg"') >= 5  # every Plotly chart drew its SVG
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert console_errors == []
    screenshot = tmp_path / "dashboard.png"
    shot = subprocess.run([browser, *flags, f"--screenshot={screenshot}", dashboard.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and screenshot.stat().st_size > 50_000


def test_dashboard_headline_figures_count_what_the_status_table_holds(warehouse):
    """The tiles come from one scan of consent_status per purpose and the business_contacts mart;
    each figure is what its own query over the table says (a contact is one business and contact_id)."""
    import re

    text = (warehouse.parent / "dashboard.html").read_text()
    text = text.split('<div class="view" data-business=""', 1)[1].split('<div class="view"', 1)[0]  # all businesses
    tiles = dict((k, int(v.replace(",", ""))) for v, k in re.findall(
        r'<div class="v">([0-9,]+)</div><div class="k">([^<]+)</div>', text))
    one = lambda sql, *params: query(warehouse, sql, list(params))[0][0]  # noqa: E731
    assert tiles["contacts"] == one("SELECT count(*) FROM (SELECT DISTINCT business, contact_id FROM consent_status)") > 0
    assert tiles["opted out (any purpose)"] == one(
        "SELECT count(*) FROM (SELECT DISTINCT business, contact_id FROM consent_status WHERE status = 'opted_out')") > 0
    purposes = [p for (p,) in query(warehouse, "SELECT DISTINCT purpose FROM consent_status ORDER BY 1")]
    assert [k for k in tiles if k.startswith("sendable: ")] == [f"sendable: {p}" for p in purposes]
    for purpose in purposes:
        assert tiles[f"sendable: {purpose}"] == one(
            "SELECT count(*) FROM consent_status WHERE purpose = ? AND sendable", purpose)
    assert tiles["sendable: marketing"] > 0


def test_a_dashboard_over_marts_older_than_business_contacts_builds_that_mart(warehouse, tmp_path):
    """A warehouse whose marts were built before business_contacts existed (or with it dropped):
    the dashboard builds it whole and shows the same figures."""
    copy = tmp_path / "consent.duckdb"
    shutil.copy(warehouse, copy)
    expected = query(copy, "SELECT * FROM business_contacts ORDER BY business")
    _render_after(copy, warehouse, tmp_path, "DROP TABLE business_contacts")
    assert query(copy, "SELECT * FROM business_contacts ORDER BY business") == expected
    assert expected and f"<td>{expected[0][1]}</td>" in (tmp_path / "dashboard.html").read_text()


def test_a_dashboard_over_a_notice_usage_without_business_builds_that_mart_again(warehouse, tmp_path):
    """notice_usage built before it had a business column: the dashboard builds it whole, per business."""
    copy = tmp_path / "consent.duckdb"
    shutil.copy(warehouse, copy)
    expected = query(copy, "SELECT * FROM notice_usage ORDER BY ALL")
    _render_after(copy, warehouse, tmp_path, "CREATE OR REPLACE TABLE notice_usage AS SELECT * EXCLUDE (business) FROM notice_usage")
    assert expected and query(copy, "SELECT * FROM notice_usage ORDER BY ALL") == expected
    assert "Opt-ins per notice version" in (tmp_path / "dashboard.html").read_text()


def _render_after(copy, warehouse, tmp_path, damage: str) -> None:
    """Render the dashboard of the warehouse copy `copy` after `damage` (SQL) was done to its marts."""
    import duckdb

    from consent.reports.dashboard import render_dashboard
    from consent.storage.sql import use_salt

    con = duckdb.connect(str(copy))
    con.execute(damage)
    use_salt(con, (warehouse.parent / ".hash_salt").read_text().strip())
    render_dashboard(con, tmp_path / "dashboard.html")
    con.close()


def test_the_run_writes_data_docs_for_every_suite_it_validated(warehouse):
    """One self-contained page per run listing every suite it validated, linked from the index of runs
    (tests/test_data_docs.py holds the pages to the checks' outcomes and to reading offline)."""
    ((run_id,),) = query(warehouse, "SELECT run_id FROM runs")
    docs = warehouse.parent / "data_docs" / run_id
    page = (docs / "index.html").read_text()
    assert all(f'<a href="#{suite}">' in page for suite in ("staged_opt_ins", "consent_events", "consent_status"))
    assert f'href="{run_id}/index.html"' in (docs.parent / "index.html").read_text()
    assert "15112345678" not in page  # GX never saw a number


def test_the_runs_end_refreshes_only_the_last_run_parts_of_the_dashboard(warehouse, tmp_path):
    """The dashboard asset renders every chart; the run's finalisation rewrites only the last run's
    tile and panel (a page of an older version, without their marks, is rendered whole)."""
    import duckdb

    from consent.reports.dashboard import refresh_last_run, render_dashboard

    copy = tmp_path / "consent.duckdb"
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    page = tmp_path / "dashboard.html"
    con.execute("UPDATE runs SET status = 'succeeded', check_outcomes = '{}'")
    render_dashboard(con, page)
    before = page.read_text()
    assert "Every check passed." in before and ">succeeded<" in before
    con.execute("""UPDATE runs SET status = 'failed',
                   check_outcomes = '{"consent_status.opted_in_rows_have_evidence": {"passed": false, "severity": "ERROR"}}'""")
    refresh_last_run(con, page)
    after = page.read_text()
    assert ">failed<" in after and "opted_in_rows_have_evidence" in after and "Every check passed." not in after
    charts = lambda text: text.split('<div class="grid">', 1)[1].split("<!--last-run:checks-->", 1)[0]  # noqa: E731
    assert charts(after) == charts(before)  # the charts were not rendered again
    page.write_text(before.replace("<!--last-run:tile-->", ""))  # an older page
    refresh_last_run(con, page)
    assert "<!--last-run:tile-->" in page.read_text() and ">failed<" in page.read_text()
    con.close()


def test_a_dashboard_over_the_same_marts_keeps_its_charts_and_one_over_changed_marts_draws_them_again(
        warehouse, tmp_path, monkeypatch):
    """A night with nothing new renders the dashboard over the rows it drew before: the charts stay,
    the last run and the time it was generated are written again. Any changed row of a mart the page
    reads draws the page again, with the new figure (a stale chart would show a number no longer true)."""
    import duckdb

    from consent.reports import dashboard

    copy = tmp_path / "consent.duckdb"
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    page = tmp_path / "dashboard.html"
    con.execute("UPDATE runs SET status = 'succeeded', check_outcomes = '{}'")
    dashboard.render_dashboard(con, page)
    first = page.read_text()
    drawn = []
    real_view = dashboard._view
    monkeypatch.setattr(dashboard, "_view", lambda *a: drawn.append(a) or real_view(*a))
    con.execute("UPDATE runs SET status = 'failed'")
    dashboard.render_dashboard(con, page)
    again = page.read_text()
    assert drawn == [] and ">failed<" in again and ">succeeded<" not in again  # last run written, nothing drawn
    assert again.count("<!--content:") == 1 and again.split("<!--content:")[1][:64] == first.split("<!--content:")[1][:64]
    contacts = con.execute("SELECT contacts FROM business_contacts ORDER BY contacts DESC LIMIT 1").fetchone()[0]
    con.execute("UPDATE business_contacts SET contacts = contacts + 1000 WHERE contacts = ?", [contacts])
    dashboard.render_dashboard(con, page)
    changed = page.read_text()
    assert drawn and f"{contacts + 1000:,}" in changed and f"{contacts + 1000:,}" not in first
    con.close()


def test_nights_rebuild_only_what_they_touched_and_equal_a_full_rebuild(tmp_path):
    """Each night deletes and rebuilds only the days, messages and contacts it changed;
    the marts after three such nights equal those a `--full` run builds from the same exports."""
    from consent import marts

    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    shutil.copytree(FIXTURES / "exports", exports, ignore=shutil.ignore_patterns("whatsapp"))
    assert run_cli(exports, path, as_of="2026-11-08T00:00:00Z") == 0
    # A first run decides every contact and keeps no copy of what it wrote (the marts are built whole).
    kept = ("SELECT count(*) FROM duckdb_tables() "
            "WHERE table_name IN ('stg_decided_status', 'stg_decided_history', 'stg_decided_violations')")
    assert query(path, kept) == [(0,)]
    shutil.copytree(FIXTURES / "exports" / "whatsapp", exports / "whatsapp")  # the STOPs arrive a night later
    assert run_cli(exports, path, as_of="2026-11-09T00:00:00Z") == 0
    # A night keeps the touched contacts' rows as it wrote them: the tables' rows for those contacts.
    touched = "business || chr(31) || contact_id IN (SELECT contact_key FROM staging.stg_touched)"
    for table, copy in (("consent_status", "staging.stg_decided_status"),
                        ("consent_status_history", "staging.stg_decided_history"),
                        ("consent_violations", "staging.stg_decided_violations")):
        rows = query(path, f"SELECT * FROM {table} WHERE {touched} ORDER BY ALL")
        assert rows and query(path, f"SELECT * FROM {copy} ORDER BY ALL") == rows, table
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    assert run_cli(exports, path, as_of="2026-11-10T00:00:00Z") == 0

    modes = dict(query(path, "SELECT mart, mode FROM mart_builds"))
    assert {modes[m] for m in marts.INCREMENTAL} == {"incremental"}
    assert {modes[m] for m in set(marts.MARTS) - set(marts.INCREMENTAL)} == {"full"}
    by_night = {m: query(path, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS}
    assert by_night["send_audit"] and by_night["opt_out_timeliness"] and by_night["consent_daily"]

    assert run_cli(exports, path, "--full", as_of="2026-11-10T00:00:00Z") == 0
    assert set(dict(query(path, "SELECT mart, mode FROM mart_builds")).values()) == {"full"}
    assert {m: query(path, f"SELECT * FROM {m} ORDER BY ALL") for m in marts.MARTS} == by_night


def test_a_mart_materialised_alone_in_the_ui_builds_only_itself(warehouse, tmp_path):
    """The marts are one multi-asset step in the job; selecting one mart builds that mart only."""
    import dagster as dg

    from assets.marts import compliance_marts
    from resources.warehouse import ConsentSettings, WarehouseResource
    from tests.conftest import AS_OF, FIXTURES

    copy = tmp_path / "wh" / "consent.duckdb"
    copy.parent.mkdir()
    shutil.copy(warehouse, copy)
    shutil.copy(warehouse.parent / ".hash_salt", copy.parent / ".hash_salt")
    before = {name: query(copy, f"SELECT count(*) FROM {name}")[0][0] for name in ("consent_coverage", "consent_daily")}
    import duckdb

    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM consent_coverage")
    con.execute("DELETE FROM consent_daily")
    con.close()
    resources = {"warehouse": WarehouseResource(path=str(copy)),
                 "settings": ConsentSettings(exports_dir=str(FIXTURES / "exports"), as_of=AS_OF)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([compliance_marts], selection=["consent_coverage"], resources=resources,
                                instance=instance)
    assert result.success
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == ["consent_coverage"]
    assert query(copy, "SELECT count(*) FROM consent_coverage")[0][0] == before["consent_coverage"] > 0
    assert query(copy, "SELECT count(*) FROM consent_daily")[0][0] == 0  # not selected: not built


def test_a_mart_built_in_several_statements_gives_the_runs_rows_and_leaves_no_temporary_table(warehouse, tmp_path):
    """opt_out_timeliness writes its requests and their messages as temporary tables before its rows
    (consent/marts/opt_out_timeliness.sql says why): built again on a copy, it equals what the run
    built, and the connection holds none of those tables afterwards, nor after a build that fails."""
    import duckdb

    from consent import marts
    from consent.storage.sql import use_salt

    copy = tmp_path / "consent.duckdb"
    shutil.copy(warehouse, copy)
    rows = query(copy, "SELECT * FROM opt_out_timeliness ORDER BY ALL")
    assert any(r[-1] != ["honoured"] for r in rows)  # the fixture has messages sent after an opt-out
    before, _ = marts.statements("opt_out_timeliness")
    assert len(before) == 2
    temporary = "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE 'opt_out_%' ORDER BY 1"
    with duckdb.connect(str(copy)) as con:
        use_salt(con, (warehouse.parent / ".hash_salt").read_text().strip())
        assert marts.build(con, "opt_out_timeliness") == len(rows)
        assert con.execute(temporary).fetchall() == []
        assert con.execute("SELECT * FROM opt_out_timeliness ORDER BY ALL").fetchall() == rows
        con.execute("ALTER TABLE runs RENAME TO runs_gone")  # the last statement reads `runs`
        with pytest.raises(duckdb.CatalogException):
            marts.build(con, "opt_out_timeliness")
        assert con.execute(temporary).fetchall() == []


def test_a_mart_whose_temporary_tables_outgrow_a_small_memory_limit_is_still_built(tmp_path):
    """A mart's temporary tables are made outside the transaction that writes it: made inside, they
    stay in memory until it commits, and opt_out_timeliness at 10M events ran out of the 1GB default.
    The same shape, scaled down: 400,000 opt-outs (800,000 history rows) under a 250MB limit, where
    the tables made inside the transaction ran out of memory (from 200 to 300MB) and made before it
    fit (from 200 to 350MB), on one thread."""
    import duckdb

    from consent import marts
    from consent.storage.migrations import ensure_schema
    from consent.storage.sql import use_salt

    requests = 400_000
    con = duckdb.connect(str(tmp_path / "consent.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    ensure_schema(con)
    use_salt(con, "salt")
    con.execute("INSERT INTO runs (run_id, mode, as_of, started_at, published_at, status) "
                "VALUES ('r1', 'full', '2026-11-01', '2026-11-01', '2026-11-01', 'succeeded')")
    con.execute("INSERT INTO source_files (channel, source_file, file_hash, size_bytes, first_seen_run, last_seen_run) "
                "VALUES ('web_form', 'web_form/export.csv', 'h', 1, 'r1', 'r1')")
    number = "'+4477009' || lpad(i::VARCHAR, 7, '0')"
    event = "'wamid.' || i || '-' || repeat('x', 40)"
    asked = "TIMESTAMP '2025-01-01' + i * INTERVAL 1 MINUTE"
    con.execute(f"""INSERT INTO consent_events (event_id, channel, event_type, occurred_at, ingested_at, run_id, business,
                        phone_e164, source_file, source_line, file_hash)
                    SELECT {event}, 'web_form', 'opt_out', {asked}, TIMESTAMP '2026-11-01', 'r1', 'default', {number},
                           'web_form/export.csv', i, 'h'
                    FROM range({requests}) AS t(i)""")
    con.execute(f"""INSERT INTO consent_status_history (phone_e164, purpose, status, valid_from, decided_by_event_id,
                        business, contact_id, decided_by_channel)
                    SELECT {number}, purpose, 'opted_out', {asked}, {event}, 'default', {number}, 'web_form'
                    FROM range({requests}) AS t(i), (VALUES ('marketing'), ('utility')) AS p(purpose)""")
    con.execute("CHECKPOINT")
    con.execute("SET memory_limit = '250MB'")
    con.execute("SET threads = 1")
    con.execute(f"SET temp_directory = '{tmp_path / 'spill'}'")
    assert marts.build(con, "opt_out_timeliness") == requests
    assert con.execute("SELECT count(*) FROM opt_out_timeliness WHERE list_contains(findings, 'honoured')").fetchone() == (requests,)
    con.close()


def test_a_mart_statement_before_the_last_must_create_a_temporary_table(monkeypatch):
    from consent import marts

    monkeypatch.setitem(marts.MARTS, "broken", "-- broken: one row\nDELETE FROM consent_status;\nSELECT 1 AS x\n")
    marts.statements.cache_clear()
    try:
        with pytest.raises(ValueError, match="broken.sql: a statement before the last must create a temporary table"):
            marts.statements("broken")
    finally:
        marts.statements.cache_clear()
