"""The dashboard per business, checked in headless Chromium (Debian's package, `make browser`):
a selector filters every panel, tiles included; opt-ins and opt-outs of a channel have their own
colours; coverage counts what is missing; backfilled opt-outs are not late; each hash shows the
command that prints its evidence, and that command works."""

from __future__ import annotations

import ast
import hashlib
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, query, run_cli

BUSINESSES = """\
businesses:
  acme_shoes:
    channels: [web_form, whatsapp]
    whatsapp_phone_number_ids: ["106540352242922"]
  acme_bank:
    channels: [email_link, preference_center]
"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2400", "--virtual-time-budget=8000"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    (exports / "businesses.yaml").write_text(BUSINESSES)
    # DE opts out of marketing where it opted in: the web form has both series in the chart
    # (the agent typed the number into the evidence reference: the evidence command must mask it)
    (exports / "web_form" / "optouts_2026-11-05.csv").write_text(
        "phone,country,event_type,purposes,occurred_at,evidence_ref\n"
        "+49 151 1234 5678,,opt_out,marketing,2026-11-05T08:00:00Z,call from +49 151 1234 5678\n")
    path = root / "wh" / "consent.duckdb"
    assert run_cli(exports, path) == 0  # a first load: every channel is read for the first time
    return path


@pytest.fixture(scope="module")
def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where apt-get is available)")
    return found


def dom(browser: str, page: Path, profile: Path, fragment: str = "") -> str:
    """The page as Chromium leaves it after its scripts ran (`fragment`: e.g. `#business=acme_bank`)."""
    run = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def views(document: str) -> dict[str, tuple[bool, str]]:
    """Each view of the page: its business ('' for all) -> (shown, its HTML)."""
    parts = re.split(r'(<div class="view" data-business="[^"]*"[^>]*>)', document)
    found = {}
    for opening, body in zip(parts[1::2], parts[2::2]):
        key = re.search(r'data-business="([^"]*)"', opening).group(1)
        found[html.unescape(key)] = ("hidden" not in opening, body)
    return found


def shown(document: str) -> tuple[str, str]:
    visible = [(key, body) for key, (on, body) in views(document).items() if on]
    assert len(visible) == 1, [k for k, _ in visible]
    return visible[0]


def tiles(fragment: str) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for v, k in re.findall(r'<div class="v">([0-9,]+)</div><div class="k">([^<]+)</div>', fragment)}


def expected_tiles(path: Path, business: str | None) -> dict[str, int]:
    """The tiles as SQL on the marts (and the status table) give them, for one business or all."""
    where, params = ("WHERE business = ?", [business]) if business else ("", [])
    also = "AND business = ?" if business else ""
    one = lambda sql: query(path, sql, params)[0][0] or 0  # noqa: E731
    figures = {
        "contacts": one(f"SELECT sum(contacts) FROM business_contacts {where}"),
        "opted out (any purpose)": one(f"SELECT sum(opted_out) FROM business_contacts {where}"),
        "opt-ins refused": one(f"SELECT count(DISTINCT event_id) FROM consent_violations WHERE refused {also}"),
        "sends without consent": one(
            f"SELECT count(*) FROM send_audit WHERE finding IN ('sent_without_consent', 'sent_after_opt_out') {also}"),
        "rows quarantined": one(f"SELECT count(*) FROM quarantine {where}"),
    }
    for (purpose,) in query(path, "SELECT DISTINCT purpose FROM consent_status ORDER BY 1"):
        figures[f"sendable: {purpose}"] = query(
            path, f"SELECT count(*) FROM consent_status WHERE purpose = ? AND sendable {also}", [purpose, *params])[0][0]
    return figures


def test_the_selector_lists_both_businesses_and_each_view_shows_its_own_tiles(warehouse, browser, tmp_path):
    page = warehouse.parent / "dashboard.html"
    text = page.read_text()
    assert re.findall(r'<option value="([^"]*)">', text) == ["", "acme_bank", "acme_shoes"]
    per_business = {b: expected_tiles(warehouse, b) for b in ("acme_bank", "acme_shoes")}
    assert per_business["acme_bank"] != per_business["acme_shoes"]  # the fixture tells them apart
    assert all(per_business[b]["contacts"] > 0 for b in per_business)
    # a first load shows every business; the tiles add both up
    key, body = shown(dom(browser, page, tmp_path / "p0"))
    assert key == "" and tiles(body) == expected_tiles(warehouse, None)
    for business, figures in per_business.items():
        document = dom(browser, page, tmp_path / business, f"#business={business}")
        key, body = shown(document)
        assert key == business and tiles(body) == figures, business
        assert re.search(rf'<option value="{business}" selected', document) or f'value="{business}"' in document
        # the businesses table of the view holds that business alone
        table = body.split("<h2>Businesses</h2>", 1)[1].split("</table>", 1)[0]
        assert re.findall(r"<tr><td>([a-z_]+)</td>", table) == [business]


def test_every_chart_is_filtered_by_the_business(warehouse):
    """The opt-in/opt-out chart of a business holds its own channels only (the data behind the SVG)."""
    text = (warehouse.parent / "dashboard.html").read_text()
    found = views(text)
    for business in ("acme_bank", "acme_shoes"):
        channels = {c for (c,) in query(warehouse, "SELECT DISTINCT channel FROM consent_daily WHERE business = ? "
                                                   "AND (opt_ins > 0 OR opt_outs > 0)", [business])}
        names = set(re.findall(r'"name":"([a-z_]+) opt-(?:ins|outs)"', found[business][1]))
        assert names == channels, business
    all_names = set(re.findall(r'"name":"([a-z_]+) opt-(?:ins|outs)"', found[""][1]))
    assert all_names == {c for (c,) in query(warehouse, "SELECT DISTINCT channel FROM consent_daily "
                                                        "WHERE opt_ins > 0 OR opt_outs > 0")}


def legend_colours(fragment: str) -> dict[str, str]:
    """Each legend entry of the drawn charts -> the colour Chromium painted its swatch with (a hatched
    swatch is painted with a pattern: its background colour)."""
    colours = {}
    for entry in fragment.split('<g class="traces"')[1:]:
        entry = html.unescape(entry)
        name = re.search(r'data-unformatted="([^"]+)"', entry)
        fill = re.search(r'<g class="legendpoints"><path [^>]*style="[^"]*fill: ([^;]+);', entry)
        if not (name and fill):
            continue
        colour = fill.group(1)
        pattern = re.fullmatch(r'url\("#([^"]+)"\)', colour)
        if pattern:
            colour = re.search(rf'<pattern id="{pattern.group(1)}"[^>]*><rect [^>]*fill="([^"]+)"', fragment).group(1)
        colours.setdefault(name.group(1), colour)
    return colours


def test_opt_ins_and_opt_outs_of_a_channel_are_drawn_in_different_colours(warehouse, browser, tmp_path):
    _, body = shown(dom(browser, warehouse.parent / "dashboard.html", tmp_path / "p"))
    chart = body.split("Opt-ins and opt-outs per day and channel", 1)[1].split("</section>", 1)[0]
    colours = legend_colours(chart)
    pairs = {c: (colours.get(f"{c} opt-ins"), colours.get(f"{c} opt-outs"))
             for c in {n.rsplit(" ", 1)[0] for n in colours}}
    both = {c: p for c, p in pairs.items() if None not in p}
    assert set(both) == {"web_form"}, colours
    for channel, (opt_in, opt_out) in both.items():
        assert opt_in != opt_out, channel
    assert len(set(colours.values())) == len(colours)  # no two series share a colour


def test_twelve_series_of_six_channels_and_more_never_share_a_colour():
    from consent.reports.dashboard import channel_colours

    for n in (6, 9, 14):
        colours = channel_colours([f"channel_{i}" for i in range(n)])
        flat = [c for pair in colours.values() for c in pair]
        assert len(flat) == 2 * n and len(set(flat)) == 2 * n, n


def test_a_backfilled_opt_out_shows_as_backfilled_on_a_first_load(warehouse, browser, tmp_path):
    findings = query(warehouse, "SELECT business, list_contains(findings, 'backfilled'), list_contains(findings, 'late') "
                                "FROM opt_out_timeliness")
    assert findings and all(backfilled and not late for _, backfilled, late in findings)  # the mart's verdict
    expected = query(warehouse, "SELECT count(*) FROM opt_out_timeliness WHERE business = 'acme_bank'")[0][0]
    _, body = shown(dom(browser, warehouse.parent / "dashboard.html", tmp_path / "p", "#business=acme_bank"))
    panel = body.split("Opt-out timeliness", 1)[1].split("</section>", 1)[0]
    head = re.findall(r"<th>([^<]+)</th>", panel.split("</table>", 1)[0])
    row = re.findall(r"<td>([^<]*)</td>", panel.split("<tbody>", 1)[1].split("</tr>", 1)[0])
    summary = dict(zip(head, row))
    assert summary["backfilled"] == str(expected) and expected > 0
    assert summary["published_late"] == "0" and summary["published_in_time"] == "0"
    latest = panel.split("Latest late, breached or backfilled opt-outs", 1)[1]
    assert latest.count("<td>backfilled</td>") == expected and "<td>late</td>" not in latest
    chart = body.split("published in time, late, or backfilled", 1)[1].split("</section>", 1)[0]
    assert "backfilled" in legend_colours(chart)


def test_coverage_counts_the_opted_in_contacts_lacking_each_part_of_the_evidence(warehouse):
    """DE2's web-form opt-in names no notice: the shoes view counts it under "no notice"."""
    rows = query(warehouse, "SELECT channel || ' / ' || purpose, opted_in_contacts, complete, opted_in_contacts - with_method, "
                            "opted_in_contacts - with_date, opted_in_contacts - with_notice, opted_in_contacts - with_lineage "
                            "FROM consent_coverage WHERE business = 'acme_shoes' AND complete < opted_in_contacts")
    assert rows and any(r[5] > 0 for r in rows)
    body = views((warehouse.parent / "dashboard.html").read_text())["acme_shoes"][1]
    panel = body.split("Evidence coverage: what is missing", 1)[1].split("</section>", 1)[0]
    shown_rows = [tuple(re.findall(r"<td>([^<]*)</td>", tr)) for tr in panel.split("<tbody>", 1)[1].split("</tr>")[:-1]]
    assert shown_rows == [tuple(str(v) for v in r) for r in rows]
    assert "<th>no notice</th>" in panel
    bank = views((warehouse.parent / "dashboard.html").read_text())["acme_bank"][1]
    bank_panel = bank.split("Evidence coverage: what is missing", 1)[1].split("</section>", 1)[0]
    complete = query(warehouse, "SELECT sum(opted_in_contacts) FROM consent_coverage WHERE business = 'acme_bank'")[0][0]
    assert f"Every opted-in contact ({complete:,}) has method, date, notice and lineage." in bank_panel


def salted(path: Path, value: str) -> str:
    salt = (path.parent / ".hash_salt").read_text().strip()
    return hashlib.sha256((salt + value).encode()).hexdigest()[:32]


def evidence_of(output: str, number: str, events: list[tuple]) -> None:
    """The output holds each event of the contact (its id, channel and type) and never its number, in
    digits or inside a WhatsApp message id (which encodes it)."""
    for event_id, channel, event_type, _ in events:
        line = next(line for line in output.splitlines() if event_id in line)
        assert channel in line and event_type in line
    assert re.sub(r"\D", "", number) not in re.sub(r"\D", "", output)
    assert not [ref for *_, ref in events if ref and ref.startswith("wamid.") and ref in output]


def test_the_evidence_command_shown_for_a_hash_prints_that_contacts_evidence(warehouse, capsys):
    from cli.main import main

    text = (warehouse.parent / "dashboard.html").read_text()
    commands = sorted(set(re.findall(r"consent audit evidence --hash ([0-9a-f]{32})", text)))
    hashes = {h for (h,) in query(warehouse, "SELECT contact_hash FROM opt_out_timeliness UNION "
                                             "SELECT recipient_hash FROM send_audit WHERE finding <> 'ok'")}
    assert commands and set(commands) == hashes
    contacts = {salted(warehouse, c): c for (c,) in query(warehouse, "SELECT DISTINCT contact_id FROM consent_status")}
    of = lambda h: query(warehouse, "SELECT event_id, channel, event_type, evidence_ref FROM consent_events "  # noqa: E731
                                    "WHERE phone_e164 = ?", [contacts[h]])
    # the command as a user runs it: the installed script, its exit code, its output (DE typed its number)
    de = salted(warehouse, "+4915112345678")
    assert de in commands and any("+49 151" in (e[3] or "") for e in of(de))
    run = subprocess.run([str(Path(sys.executable).with_name("consent")), "audit", "evidence", "--hash", de,
                          "--warehouse", str(warehouse)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"# evidence of contact {de}") and "[number]" in run.stdout
    evidence_of(run.stdout.replace(de, ""), contacts[de], of(de))
    # every other hash the page shows, in process
    for shown_hash in commands:
        assert main(["audit", "evidence", "--hash", shown_hash, "--warehouse", str(warehouse)]) == 0
        output = capsys.readouterr().out.replace(shown_hash, "")
        if shown_hash in contacts:
            evidence_of(output, contacts[shown_hash], of(shown_hash))


def test_the_evidence_command_refuses_an_unknown_hash_and_other_audits(warehouse, capsys):
    from cli.main import main

    assert main(["audit", "evidence", "--hash", "0" * 32, "--warehouse", str(warehouse)]) == 2
    assert "no contact in the warehouse has the hash" in capsys.readouterr().err
    (hash_,) = query(warehouse, "SELECT contact_hash FROM opt_out_timeliness LIMIT 1")[0]
    assert main(["audit", "violations", "--hash", hash_, "--warehouse", str(warehouse)]) == 2
    assert "--hash goes with the evidence audit alone" in capsys.readouterr().err


def test_the_page_holds_no_number_and_opens_offline(warehouse):
    text = (warehouse.parent / "dashboard.html").read_text()
    assert "<script src=" not in text and '<link href="http' not in text
    numbers = [n for (n,) in query(warehouse, "SELECT DISTINCT phone_e164 FROM consent_events WHERE phone_e164 IS NOT NULL")]
    scripts = re.sub(r'<script type="text/javascript">.*?</script>', "", text, count=1, flags=re.S)  # plotly.js
    assert numbers and not [n for n in numbers if n in text or n.lstrip("+") in re.sub(r"\D", "", scripts)]


def test_templates_escape_what_they_show():
    from consent.reports.dashboard import ENVIRONMENT, Table

    macros = ENVIRONMENT.get_template("macros.html.j2").module
    out = str(macros.table(Table(["reason", "contact_hash"], [("<script>alert(1)</script>", "<b>")]), "none"))
    assert "<script>" not in out and "&lt;script&gt;" in out and "<b>" not in out


def test_no_dashboard_function_is_longer_than_sixty_lines():
    source = Path(__file__).parents[1] / "consent" / "reports" / "dashboard.py"
    tree = ast.parse(source.read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert long == []
    assert "<html" not in source.read_text()  # the page's HTML lives in the templates


def notice_bars(chart: str) -> set[str]:
    """The notice versions a drawn notices chart shows (its x-axis labels, as Chromium laid them out)."""
    return set(re.findall(r'<g class="xtick"><text [^>]*data-unformatted="([^"]+)"', html.unescape(chart)))


def test_each_business_sees_only_the_notices_its_opt_ins_named(warehouse, browser, tmp_path):
    named = lambda b: {v or "(none)" for (v,) in query(  # noqa: E731
        warehouse, "SELECT DISTINCT notice_version FROM notice_usage WHERE business = ?", [b])}
    per_business = {b: named(b) for b in ("acme_bank", "acme_shoes")}
    # the mart splits the opt-ins by business: each business's notices, none shared in the fixture
    assert all(per_business.values()) and not per_business["acme_bank"] & per_business["acme_shoes"], per_business
    assert query(warehouse, "SELECT sum(opt_ins) FROM notice_usage")[0][0] == query(
        warehouse, "SELECT count(*) FROM consent_events WHERE event_type IN ('opt_in', 'opt_in_confirm')")[0][0]
    page = warehouse.parent / "dashboard.html"
    for business, notices in [*per_business.items(), ("", per_business["acme_bank"] | per_business["acme_shoes"])]:
        key, body = shown(dom(browser, page, tmp_path / (business or "all"), f"#business={business}" if business else ""))
        assert key == business
        chart = body.split("Opt-ins per notice version", 1)[1].split("</section>", 1)[0]
        assert notice_bars(chart) == notices, business
    # drawn once in each view, nowhere else
    text = page.read_text()
    assert text.count("Opt-ins per notice version") == len(views(text)) == 3
