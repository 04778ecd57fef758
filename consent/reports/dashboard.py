"""The compliance dashboard: one self-contained HTML file, built from the marts.

Charts are Plotly figures; plotly.js is inlined once, so the file opens
offline (no CDN). Only counts, shares, channel names, rules, reasons and
salted hashes appear: never a phone number.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from consent.storage.db import table_exists
from consent.domain.redact import redact

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
header { background: #123c35; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 0; opacity: .8; font-size: 13px; }
main { max-width: 1360px; margin: 0 auto; padding: 20px 32px 40px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin-bottom: 20px; }
.tile { background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.tile .v { font-size: 26px; font-weight: 650; } .tile .k { font-size: 12px; color: #5b6475; text-transform: uppercase; letter-spacing: .04em; }
.tile.bad .v { color: #b42318; } .tile.good .v { color: #067647; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); margin-bottom: 16px; }
section h2 { font-size: 15px; margin: 4px 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eceef2; } th { color: #5b6475; font-weight: 600; }
.empty { color: #5b6475; font-size: 13px; padding: 8px 0; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr; } }
"""


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """A query's columns and rows, every text value redacted: labels come from free-text fields
    (a notice version, a reason) where someone may have typed a number."""
    cursor = con.execute(sql)
    seen: dict[str, str] = {}

    def label(value):
        if isinstance(value, str):
            if value not in seen:
                seen[value] = redact(value)
            return seen[value]
        return value

    return [d[0] for d in cursor.description], [tuple(label(v) for v in row) for row in cursor.fetchall()]


def _figure(fig: go.Figure, height: int = 320) -> str:
    fig.update_layout(height=height, margin=dict(l=40, r=10, t=10, b=40), template="plotly_white",
                      legend=dict(orientation="h", y=-0.2), font=dict(size=12))
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def _table(columns: list[str], rows: list[tuple], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, content: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{content}</section>"


def _tile(key: str, value: str, cls: str) -> str:
    return f'<div class="tile {cls}"><div class="v">{html.escape(value)}</div><div class="k">{html.escape(key)}</div></div>'


# The parts that show the last run are marked, so the run's finalisation can refresh them alone
# (`refresh_last_run`) instead of rendering every chart a second time.
def _marked(name: str, content: str) -> str:
    return f"<!--last-run:{name}-->{content}<!--/last-run:{name}-->"


def _last_run(con: duckdb.DuckDBPyConnection) -> tuple | None:
    return con.execute(
        "SELECT run_id, status, as_of, checks_failed, check_outcomes FROM runs ORDER BY started_at DESC LIMIT 1"
    ).fetchone()


def _last_run_tile(last_run: tuple | None) -> str:
    return _tile("last run", last_run[1], "bad" if last_run[1] == "failed" else "good") if last_run else ""


def _last_run_checks(last_run: tuple | None) -> str:
    checks_html = '<p class="empty">No run recorded yet.</p>'
    if last_run:
        outcomes = json.loads(last_run[4] or "{}")
        failed = [(name, o.get("severity"), "failed") for name, o in sorted(outcomes.items()) if not o.get("passed")]
        checks_html = (
            f"<p class='empty'>Run {html.escape(last_run[0][:8])} as of {html.escape(str(last_run[2]))}: "
            f"{len(outcomes)} checks recorded.</p>"
            + _table(["check", "severity", "outcome"], failed, "Every check passed.")
        )
    return _section("Failed checks of the last run", checks_html)


def refresh_last_run(con: duckdb.DuckDBPyConnection, out: Path) -> int:
    """Show the last run's outcome on a dashboard rendered earlier in the run; its size in bytes.
    A page without the marks (written by an older version) is rendered whole."""
    document = out.read_text(encoding="utf-8")
    last_run = _last_run(con)
    for name, content in (("tile", _last_run_tile(last_run)), ("checks", _last_run_checks(last_run))):
        start, end = f"<!--last-run:{name}-->", f"<!--/last-run:{name}-->"
        before, found, rest = document.partition(start)
        _, closed, after = rest.partition(end)
        if not (found and closed):
            return render_dashboard(con, out)
        document = before + _marked(name, content) + after
    out.write_text(document, encoding="utf-8")
    return len(document.encode("utf-8"))


def render_dashboard(con: duckdb.DuckDBPyConnection, out: Path) -> int:
    """Write the dashboard; returns its size in bytes."""
    parts: list[str] = []
    # consent_status is read once, per purpose (the purposes and their sendable rows); the per-business
    # figures are the business_contacts mart's (built by difference on a night: counting distinct
    # contacts again costs ~0.3 s at 5M events). A contact is one (business, contact_id), so the
    # headline counts are the per-business counts summed.
    per_purpose = con.execute(
        "SELECT purpose, count(*) FILTER (WHERE sendable) FROM consent_status GROUP BY purpose ORDER BY purpose"
    ).fetchall()
    purposes = [p for p, _ in per_purpose]
    if not table_exists(con, "business_contacts"):  # marts built before this mart existed: build it now
        from consent import marts

        marts.build(con, "business_contacts")
    columns, per_business = _rows(con, "SELECT * FROM business_contacts ORDER BY business")

    # -- headline figures ---------------------------------------------------------------
    # A contact is one person as known to one business (by number, or by BSUID alone).
    contacts = sum(row[1] for row in per_business)
    tiles = [("contacts", f"{contacts:,}", "")]
    for purpose, n in per_purpose:
        tiles.append((f"sendable: {purpose}", f"{n:,}", "good"))
    opted_out = sum(row[4] for row in per_business)
    quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    refused = con.execute("SELECT count(DISTINCT event_id) FROM consent_violations WHERE refused").fetchone()[0]
    findings = (
        con.execute("SELECT count(*) FROM send_audit WHERE finding IN ('sent_without_consent', 'sent_after_opt_out')").fetchone()[0]
        if table_exists(con, "send_audit") else 0
    )
    last_run = _last_run(con)
    tiles += [
        ("opted out (any purpose)", f"{opted_out:,}", ""),
        ("opt-ins refused", f"{refused:,}", "bad" if refused else ""),
        ("rows quarantined", f"{quarantined:,}", "bad" if quarantined else ""),
        ("sends without consent", f"{findings:,}", "bad" if findings else "good"),
    ]
    parts.append('<div class="tiles">' + "".join(_tile(*t) for t in tiles) + _marked("tile", _last_run_tile(last_run))
                 + "</div>")

    # -- per business: consent is given to a named business (rules, section 10) ---------------
    parts.append(_section("Businesses", _table(columns, per_business, "No contacts yet.")))

    charts: list[str] = []
    # -- opt-ins and opt-outs over time per channel ------------------------------------------
    _, daily = _rows(con, "SELECT day, channel, sum(opt_ins), sum(opt_outs) FROM consent_daily GROUP BY ALL ORDER BY day")
    fig = go.Figure()
    for channel in sorted({r[1] for r in daily}):
        series = [r for r in daily if r[1] == channel]
        if any(r[2] for r in series):
            fig.add_trace(go.Bar(x=[r[0] for r in series], y=[r[2] for r in series], name=f"{channel} opt-ins"))
        if any(r[3] for r in series):
            fig.add_trace(go.Bar(x=[r[0] for r in series], y=[-r[3] for r in series], name=f"{channel} opt-outs"))
    fig.update_layout(barmode="relative", yaxis_title="contacts (opt-outs below zero)")
    charts.append(_section("Opt-ins and opt-outs per day and channel", _figure(fig)))

    # -- sendable audience per purpose ---------------------------------------------------------
    _, audience = _rows(con, "SELECT day, purpose, sum(sendable_audience) FROM consent_daily GROUP BY ALL ORDER BY day")
    fig = go.Figure()
    for purpose in purposes:
        series = [r for r in audience if r[1] == purpose]
        fig.add_trace(go.Scatter(x=[r[0] for r in series], y=[r[2] for r in series], name=purpose, mode="lines"))
    fig.update_layout(yaxis_title="sendable contacts at end of day")
    charts.append(_section("Sendable audience per purpose", _figure(fig)))

    # -- evidence coverage -----------------------------------------------------------------------
    _, coverage = _rows(con, "SELECT channel || ' / ' || purpose, complete_share, opted_in_contacts FROM consent_coverage ORDER BY 1")
    fig = go.Figure(go.Bar(x=[r[1] for r in coverage], y=[r[0] for r in coverage], orientation="h",
                           text=[f"{r[1]:.0%} of {r[2]}" for r in coverage], textposition="auto"))
    fig.update_layout(xaxis=dict(range=[0, 1], tickformat=".0%", title="opted_in rows with method, date, notice and lineage"))
    charts.append(_section("Evidence coverage per channel and purpose", _figure(fig, 60 + 28 * max(3, len(coverage)))))

    # -- quarantine and violations ------------------------------------------------------------------
    _, reasons = _rows(con, "SELECT reason, sum(rows) FROM quarantine_summary GROUP BY ALL ORDER BY 2 DESC LIMIT 15")
    fig = go.Figure(go.Bar(x=[r[1] for r in reasons], y=[r[0] for r in reasons], orientation="h", marker_color="#b54708"))
    fig.update_layout(yaxis=dict(autorange="reversed"), xaxis_title="rows")
    charts.append(_section("Quarantine reasons", _figure(fig, 60 + 28 * max(3, len(reasons)))))
    _, rules = _rows(con, "SELECT rule || ' (' || severity || ')', sum(opt_ins) FROM violations_summary GROUP BY ALL ORDER BY 2 DESC")
    fig = go.Figure(go.Bar(x=[r[1] for r in rules], y=[r[0] for r in rules], orientation="h", marker_color="#b42318"))
    fig.update_layout(yaxis=dict(autorange="reversed"), xaxis_title="opt-ins")
    charts.append(_section("Consent rule violations", _figure(fig, 60 + 28 * max(3, len(rules)))))

    # -- notices (when the registry is loaded) ------------------------------------------------------
    if table_exists(con, "notice_usage"):
        _, notices = _rows(con, "SELECT coalesce(notice_version, '(none)'), notice_state, sum(opt_ins) FROM notice_usage GROUP BY ALL ORDER BY 1")
        fig = go.Figure()
        for state in sorted({r[1] for r in notices}):
            series = [r for r in notices if r[1] == state]
            fig.add_trace(go.Bar(x=[r[0] for r in series], y=[r[2] for r in series], name=state))
        fig.update_layout(barmode="stack", yaxis_title="opt-ins")
        charts.append(_section("Opt-ins per notice version (and notices missing or deficient)", _figure(fig)))
    parts.append('<div class="grid">' + "".join(charts) + "</div>")

    # -- failed checks of the last run -------------------------------------------------------------
    parts.append(_marked("checks", _last_run_checks(last_run)))

    # -- send audit -----------------------------------------------------------------------------------
    if table_exists(con, "send_audit"):
        summary = _rows(con, "SELECT category, finding, count(*) AS messages FROM send_audit GROUP BY ALL ORDER BY ALL")
        details = _rows(
            con,
            """SELECT sent_at, category, recipient_hash, status_at_send, finding, array_to_string(statuses, ', ') AS statuses
               FROM send_audit WHERE finding IN ('sent_without_consent', 'sent_after_opt_out') ORDER BY sent_at DESC LIMIT 25""",
        )
        parts.append(_section(
            "Send audit: business-sent messages checked against consent at send time",
            _table(*summary, "No message statuses ingested yet.")
            + "<h2 style='margin-top:14px'>Latest findings</h2>"
            + _table(*details, "No message went to anyone without consent or after an opt-out."),
        ))

    # -- opt-out timeliness and renewals ------------------------------------------------------------
    if table_exists(con, "opt_out_timeliness"):
        summary = _rows(con, """
            SELECT business, count(*) AS opt_outs,
                   count(*) FILTER (WHERE list_contains(findings, 'honoured')) AS honoured,
                   count(*) FILTER (WHERE list_contains(findings, 'confirmation_message')) AS with_confirmation,
                   count(*) FILTER (WHERE list_contains(findings, 'sent_after_opt_out')) AS sent_after_opt_out,
                   count(*) FILTER (WHERE list_contains(findings, 'late')) AS published_late,
                   count(*) FILTER (WHERE list_contains(findings, 'backfilled')) AS backfilled,
                   max(business_days_to_publish) FILTER (WHERE NOT list_contains(findings, 'backfilled'))
                       AS slowest_business_days
            FROM opt_out_timeliness GROUP BY ALL ORDER BY ALL""")
        late = _rows(con, """
            SELECT asked_at, published_at, business_days_to_publish, channel, contact_hash,
                   array_to_string(findings, ', ') AS findings
            FROM opt_out_timeliness
            WHERE list_contains(findings, 'late') OR list_contains(findings, 'sent_after_opt_out')
            ORDER BY asked_at DESC LIMIT 25""")
        parts.append(_section(
            "Opt-out timeliness: honoured in time, whatever the channel",
            _table(*summary, "No opt-outs yet.")
            + "<h2 style='margin-top:14px'>Latest late or breached opt-outs</h2>"
            + _table(*late, "Every opt-out was published within the deadline and honoured."),
        ))
    if table_exists(con, "consent_renewals"):
        renewals = _rows(con, """
            SELECT business, purpose, count(*) AS due, min(expires_at) AS first_lapse
            FROM consent_renewals GROUP BY ALL ORDER BY ALL""")
        parts.append(_section("Consents due for renewal", _table(*renewals, "No consent lapses within the notice period.")))

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>WhatsApp consent: compliance dashboard</title><style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><header><h1>WhatsApp consent: compliance dashboard</h1>
<p>Generated {generated}. Counts and salted hashes only; no phone numbers.</p></header>
<main>{''.join(parts)}</main></body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return len(document.encode("utf-8"))
