"""The compliance dashboard: one self-contained HTML file, built from the marts.

The page comes from Jinja2 templates (consent/reports/templates/, autoescaped); charts are Plotly
figures, and plotly.js is inlined once, so the file opens offline (no CDN). Every panel is drawn
once for all businesses and once per business; a selector (or `#business=NAME` in the address)
shows one of them. Only counts, shares, channel names, rules, reasons and salted hashes appear:
never a phone number.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import jinja2
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from consent.domain.redact import redact
from consent.storage.db import table_exists

SQL = Path(__file__).with_name("sql")
ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# What a hash on the page links to: the command that prints that contact's evidence (no number).
EVIDENCE_COMMAND = "consent audit evidence --hash {}"
ENVIRONMENT.globals["evidence_command"] = EVIDENCE_COMMAND.format
ALL = ""  # the key of the all-businesses view
NOT_ATTRIBUTED = "(not attributed)"  # quarantine_summary's business of a row no business is named on
QUARANTINE_REASONS_SHOWN = 15
SEND_FINDINGS = "('sent_without_consent', 'sent_after_opt_out')"
# Opt-ins in the channel's colour, opt-outs in a lighter shade of it, hatched: two series of one
# channel never share a colour, and every channel has its own hue (ColorBrewer "Paired", then
# evenly spaced hues beyond its six pairs).
PAIRED = [("#1f78b4", "#a6cee3"), ("#33a02c", "#b2df8a"), ("#e31a1c", "#fb9a99"), ("#ff7f00", "#fdbf6f"),
          ("#6a3d9a", "#cab2d6"), ("#b15928", "#e0b48c")]
TIMELINESS_COLOURS = {"in time": "#067647", "late": "#b42318", "backfilled": "#7a8699"}


@dataclass
class Table:
    columns: list[str]
    rows: list[tuple]


@dataclass
class Data:
    """Every figure the page shows, read once, each row led by its business (when it has one)."""

    businesses: list[str]
    purposes: list[str]
    rows: dict[str, Table] = field(default_factory=dict)


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


def _figure(fig: go.Figure, height: int = 320) -> Markup:
    # a legend the figure placed itself (above the plot) stays where it is
    legend = dict(orientation="h", y=-0.2) if fig.layout.legend.y is None else {}
    fig.update_layout(height=height, margin=dict(l=40, r=10, t=40 if legend == {} else 10, b=40),
                      template="plotly_white", legend=legend, font=dict(size=12))
    return Markup(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                              config={"displaylogo": False, "responsive": True}))


def _render(template: str, **values) -> Markup:
    return Markup(ENVIRONMENT.get_template(template).render(**values))


# The parts that show the last run are marked, so the run's finalisation can refresh them alone
# (`refresh_last_run`) instead of rendering every chart a second time.
def _marked(name: str, content: str) -> Markup:
    return Markup(f"<!--last-run:{name}-->") + content + Markup(f"<!--/last-run:{name}-->")


def _content_mark(key: str) -> str:
    """The mark of what the page drew (`content_key`)."""
    return f"<!--content:{key}-->"


def _last_run(con: duckdb.DuckDBPyConnection) -> dict | None:
    row = con.execute(
        "SELECT run_id, status, as_of, checks_failed, check_outcomes FROM runs ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    outcomes = json.loads(row[4] or "{}")
    failed = [(name, o.get("severity"), "failed") for name, o in sorted(outcomes.items()) if not o.get("passed")]
    return {"run_id": row[0][:8], "as_of": str(row[2]), "checks": len(outcomes),
            "failed": Table(["check", "severity", "outcome"], failed),
            "tile": _tile("last run", row[1], "bad" if row[1] == "failed" else "good")}


def _last_run_parts(con: duckdb.DuckDBPyConnection) -> dict[str, Markup]:
    last_run = _last_run(con)
    return {"tile": _render("last_run_tile.html.j2", last_run=last_run),
            "checks": _render("last_run_checks.html.j2", last_run=last_run)}


def refresh_last_run(con: duckdb.DuckDBPyConnection, out: Path) -> int:
    """Show the last run's outcome on a dashboard rendered earlier in the run; its size in bytes.
    A page without the marks (written by an older version) is rendered whole."""
    return _refreshed(con, out, out.read_text(encoding="utf-8"), {})


def _refreshed(con: duckdb.DuckDBPyConnection, out: Path, document: str, parts: dict[str, str]) -> int:
    """`document` with the last run's parts (and `parts`) replaced between their marks, written to
    `out`; a page without the marks is rendered whole."""
    for name, content in {**_last_run_parts(con), **parts}.items():
        start, end = f"<!--last-run:{name}-->", f"<!--/last-run:{name}-->"
        before, found, rest = document.partition(start)
        _, closed, after = rest.partition(end)
        if not (found and closed):
            return render_dashboard(con, out, keep_charts=False)
        # joined as plain text: `str + Markup` would escape the page around the part
        document = "".join((before, _marked(name, content), after))
    out.write_text(document, encoding="utf-8")
    return len(document.encode("utf-8"))


def _tile(key: str, value, cls: str = "") -> dict:
    return {"key": key, "value": f"{value:,}" if isinstance(value, int) else value, "cls": cls}


def _query(con: duckdb.DuckDBPyConnection, name: str, sql: str, needs: str | None = None) -> tuple[str, Table]:
    """One figure's rows; empty when the mart it reads is not there (an older warehouse)."""
    if needs is not None and not table_exists(con, needs):
        return name, Table([], [])
    text = (SQL / sql).read_text(encoding="utf-8") if sql.endswith(".sql") else sql
    return name, Table(*_rows(con, text))


def _current_marts(con: duckdb.DuckDBPyConnection) -> None:
    """Marts built by an older version (the page rendered alone after an upgrade): built now."""
    from consent import marts

    if not table_exists(con, "business_contacts"):  # built before this mart existed
        marts.build(con, "business_contacts")
    for name in ("notice_usage", "quarantine_summary"):
        if table_exists(con, name) and "business" not in _columns(con, name):
            marts.build(con, name)  # built before it had a business column


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"SELECT * FROM {table} LIMIT 0").description]


def _load(con: duckdb.DuckDBPyConnection, configured: list[str] | None) -> Data:
    """Every mart the page reads, once, grouped by business (the views are cut from these rows)."""
    _current_marts(con)
    queries = [
        ("contacts", "SELECT * FROM business_contacts ORDER BY business", None),
        ("sendable", "SELECT business, purpose, count(*) FILTER (WHERE sendable) FROM consent_status GROUP BY ALL ORDER BY ALL", None),
        ("refused", "SELECT business, count(DISTINCT event_id) FROM consent_violations WHERE refused GROUP BY ALL", None),
        ("findings", f"SELECT business, count(*) FROM send_audit WHERE finding IN {SEND_FINDINGS} GROUP BY ALL", "send_audit"),
        ("daily", "SELECT business, day, channel, sum(opt_ins), sum(opt_outs) FROM consent_daily GROUP BY ALL ORDER BY day, channel, business", None),
        ("audience", "SELECT business, day, purpose, sum(sendable_audience) FROM consent_daily GROUP BY ALL ORDER BY day, purpose, business", None),
        ("coverage", "SELECT business, channel || ' / ' || purpose AS \"channel / purpose\", opted_in_contacts, complete, "
                     "with_method, with_date, with_notice, with_lineage FROM consent_coverage ORDER BY 2, 1", None),
        ("rules", "SELECT business, rule || ' (' || severity || ')', sum(opt_ins) FROM violations_summary GROUP BY ALL ORDER BY 3 DESC, 2, 1", None),
        ("send_summary", "SELECT business, category, finding, count(*) AS messages FROM send_audit GROUP BY ALL ORDER BY 2, 3, 1", "send_audit"),
        ("send_latest", "send_audit_latest.sql", "send_audit"),
        ("timeliness", "timeliness_summary.sql", "opt_out_timeliness"),
        ("timeliness_by_channel", "timeliness_by_channel.sql", "opt_out_timeliness"),
        ("timeliness_latest", "timeliness_latest.sql", "opt_out_timeliness"),
        ("renewals", "SELECT business, purpose, count(*) AS due, min(expires_at) AS first_lapse FROM consent_renewals GROUP BY ALL ORDER BY ALL",
         "consent_renewals"),
        ("reasons", "SELECT business, reason, sum(rows) FROM quarantine_summary GROUP BY ALL ORDER BY 3 DESC, 2, 1", None),
        ("notices", "SELECT business, coalesce(notice_version, '(none)'), notice_state, sum(opt_ins) FROM notice_usage "
                    "GROUP BY ALL ORDER BY 2, 3, 1", "notice_usage"),
    ]
    rows = dict(_query(con, *q) for q in queries)
    purposes = sorted({r[1] for r in rows["sendable"].rows})
    seen = {r[0] for name in ("contacts", "sendable", "daily") for r in rows[name].rows}
    # a business whose every row was quarantined has no contact yet, and a view all the same
    seen |= {r[0] for r in rows["reasons"].rows if r[0] != NOT_ATTRIBUTED}
    # the businesses of businesses.yaml, and any the marts hold (a business may have no contact yet)
    businesses = sorted(set(configured or []) | seen)
    return Data(businesses, purposes, rows)


def _of(table: Table, business: str) -> list[tuple]:
    """The rows of one business (its column kept), or every row for the all-businesses view."""
    return [r for r in table.rows if business == ALL or r[0] == business]


def _summed(table: Table, business: str, keys: int) -> list[tuple]:
    """One business's rows without their business column; for all businesses, the rows summed per key
    (the first `keys` columns after the business), in the order the query gave."""
    totals: dict[tuple, list] = {}
    for row in _of(table, business):
        key, values = row[1:1 + keys], row[1 + keys:]
        before = totals.setdefault(key, [0] * len(values))
        totals[key] = [a + (b or 0) for a, b in zip(before, values)]
    return [(*k, *v) for k, v in totals.items()]


def _tiles(data: Data, business: str) -> list[dict]:
    # A contact is one person as known to one business (by number, or by BSUID alone): the
    # all-businesses figures are the per-business figures summed.
    contacts = _summed(data.rows["contacts"], business, 0)
    columns = data.rows["contacts"].columns[1:]
    figures = dict(zip(columns, contacts[0])) if contacts else {}
    sendable = dict(_summed(data.rows["sendable"], business, 1))
    refused = sum(n for _, n in _of(data.rows["refused"], business))
    findings = sum(n for _, n in _of(data.rows["findings"], business))
    quarantined = sum(n for _, _, n in _of(data.rows["reasons"], business))
    return [
        _tile("contacts", figures.get("contacts", 0)),
        *[_tile(f"sendable: {p}", sendable.get(p, 0), "good") for p in data.purposes],
        _tile("opted out (any purpose)", figures.get("opted_out", 0)),
        _tile("opt-ins refused", refused, "bad" if refused else ""),
        _tile("sends without consent", findings, "bad" if findings else "good"),
        _tile("rows quarantined", quarantined, "bad" if quarantined else ""),
    ]


def channel_colours(channels: list[str]) -> dict[str, tuple[str, str]]:
    """Each channel's (opt-in, opt-out) colours: a hue per channel, dark for opt-ins, light for opt-outs."""
    colours = {}
    for i, channel in enumerate(sorted(channels)):
        if i < len(PAIRED):
            colours[channel] = PAIRED[i]
            continue
        hue = ((i - len(PAIRED)) * 0.618034 + 0.08) % 1.0  # golden-ratio steps: far from the hues before
        dark, light = colorsys.hls_to_rgb(hue, 0.35, 0.7), colorsys.hls_to_rgb(hue, 0.75, 0.7)
        colours[channel] = tuple("#%02x%02x%02x" % tuple(round(c * 255) for c in rgb) for rgb in (dark, light))
    return colours


def _daily_figure(daily: list[tuple], colours: dict[str, tuple[str, str]]) -> go.Figure:
    fig = go.Figure()
    for channel in sorted({r[1] for r in daily}):
        series = [r for r in daily if r[1] == channel]
        opt_in, opt_out = colours[channel]
        if any(r[2] for r in series):
            fig.add_trace(go.Bar(x=[r[0] for r in series], y=[r[2] for r in series], name=f"{channel} opt-ins",
                                 marker=dict(color=opt_in)))
        if any(r[3] for r in series):
            fig.add_trace(go.Bar(x=[r[0] for r in series], y=[-r[3] for r in series], name=f"{channel} opt-outs",
                                 marker=dict(color=opt_out, line=dict(color=opt_in, width=1),
                                             pattern=dict(shape="/", fgcolor=opt_in, size=6))))
    fig.update_layout(barmode="relative", yaxis_title="contacts (opt-outs below zero, hatched)")
    return fig


def _audience_figure(audience: list[tuple], purposes: list[str]) -> go.Figure:
    fig = go.Figure()
    for purpose in purposes:
        series = [r for r in audience if r[1] == purpose]
        fig.add_trace(go.Scatter(x=[r[0] for r in series], y=[r[2] for r in series], name=purpose, mode="lines"))
    fig.update_layout(yaxis_title="sendable contacts at end of day")
    return fig


MISSING = ("method", "date", "notice", "lineage")


def _missing(coverage: list[tuple]) -> list[tuple]:
    """Per channel and purpose: opted-in contacts, complete, and how many lack each part of the evidence."""
    return [(label, n, complete, *(n - with_ for with_ in withs)) for label, n, complete, *withs in coverage]


def _coverage_figure(missing: list[tuple]) -> go.Figure:
    fig = go.Figure()
    for i, part in enumerate(MISSING):
        fig.add_trace(go.Bar(x=[r[3 + i] for r in missing], y=[r[0] for r in missing], orientation="h",
                             name=f"no {part}"))
    fig.update_layout(barmode="group", xaxis_title="opted-in contacts lacking it", yaxis=dict(autorange="reversed"))
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig


def _bars(rows: list[tuple], colour: str, axis: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=[r[1] for r in rows], y=[r[0] for r in rows], orientation="h", marker_color=colour))
    fig.update_layout(yaxis=dict(autorange="reversed"), xaxis_title=axis)
    return fig


def _timeliness_figure(rows: list[tuple]) -> go.Figure:
    fig = go.Figure()
    for published, colour in TIMELINESS_COLOURS.items():
        series = [r for r in rows if r[1] == published]
        if series:
            fig.add_trace(go.Bar(x=[r[2] for r in series], y=[r[0] for r in series], orientation="h",
                                 name=published, marker_color=colour))
    # the legend even when one kind is there: "backfilled" must read as such, not as a bare bar
    fig.update_layout(barmode="stack", xaxis_title="opt-outs", yaxis=dict(autorange="reversed"), showlegend=True)
    return fig


def _height(rows: list) -> int:
    return 60 + 28 * max(3, len(rows))


def _charts(data: Data, business: str, colours: dict[str, tuple[str, str]]) -> list[dict]:
    rows = data.rows
    charts = [
        ("Opt-ins and opt-outs per day and channel", _daily_figure(_summed(rows["daily"], business, 2), colours), 320),
        ("Sendable audience per purpose", _audience_figure(_summed(rows["audience"], business, 2), data.purposes), 320),
        ("Consent rule violations", _bars(_summed(rows["rules"], business, 1), "#b42318", "opt-ins"),
         _height(_summed(rows["rules"], business, 1))),
    ]
    missing = [r for r in _missing(_summed(rows["coverage"], business, 1)) if any(r[3:])]
    if missing:  # nothing missing: the coverage table says so with its count
        charts.insert(2, ("Evidence coverage: opted-in contacts lacking method, date, notice or lineage",
                          _coverage_figure(missing), 120 + 20 * 4 * len(missing)))
    if rows["timeliness_by_channel"].columns:
        by_channel = _summed(rows["timeliness_by_channel"], business, 2)
        charts.append(("Opt-outs per channel: published in time, late, or backfilled",
                       _timeliness_figure(by_channel), 60 + _height({r[0] for r in by_channel})))
    if rows["notices"].columns:
        charts.append(("Opt-ins per notice version (and notices missing or deficient)",
                       _notices_figure(_summed(rows["notices"], business, 2)), 320))
    reasons = _quarantine_reasons(data, business)
    if reasons:
        charts.append((_quarantine_title(data, business), _bars(reasons, "#b54708", "rows"), _height(reasons)))
    return [{"title": title, "html": _figure(fig, height)} for title, fig, height in charts]


def _table(table: Table, business: str) -> Table:
    """A table of one business (its column dropped), or of every business (the column kept)."""
    rows = _of(table, business)
    return Table(table.columns, rows) if business == ALL else Table(table.columns[1:], [r[1:] for r in rows])


def _coverage_block(data: Data, business: str) -> dict:
    every = _missing(_summed(data.rows["coverage"], business, 1))
    missing = [r for r in every if any(r[3:])]
    columns = ["channel / purpose", "opted-in contacts", "complete", *[f"no {part}" for part in MISSING]]
    total = sum(r[1] for r in every)
    return {"heading": None, "table": Table(columns, missing),
            "empty": f"Every opted-in contact ({total:,}) has method, date, notice and lineage."}


def _panels(data: Data, business: str) -> list[dict]:
    rows = data.rows
    latest = lambda name: Table(rows[name].columns, _of(rows[name], business)[:25])  # noqa: E731
    panels = [{"title": "Evidence coverage: what is missing", "blocks": [_coverage_block(data, business)]}]
    if rows["send_summary"].columns:
        panels.append({"title": "Send audit: business-sent messages checked against consent at send time", "blocks": [
            {"heading": None, "table": _table(rows["send_summary"], business), "empty": "No message statuses ingested yet."},
            {"heading": "Latest findings", "table": _table(latest("send_latest"), business),
             "empty": "No message went to anyone without consent or after an opt-out."}]})
    if rows["timeliness"].columns:
        panels.append({"title": "Opt-out timeliness: honoured in time, whatever the channel", "blocks": [
            {"heading": None, "table": _table(rows["timeliness"], business), "empty": "No opt-outs yet."},
            {"heading": "Latest late, breached or backfilled opt-outs", "table": _table(latest("timeliness_latest"), business),
             "empty": "Every opt-out was published within the deadline and honoured."}]})
    if rows["renewals"].columns:
        panels.append({"title": "Consents due for renewal", "blocks": [
            {"heading": None, "table": _table(rows["renewals"], business),
             "empty": "No consent lapses within the notice period."}]})
    return panels


def _view(data: Data, business: str, colours: dict[str, tuple[str, str]]) -> dict:
    return {"key": business, "label": business or "All businesses", "tiles": _tiles(data, business),
            "businesses": Table(data.rows["contacts"].columns, _of(data.rows["contacts"], business)),
            "charts": _charts(data, business, colours), "panels": _panels(data, business)}


def _notices_figure(notices: list[tuple]) -> go.Figure:
    """Opt-ins per notice version (rows: notice version, state, opt-ins), a stacked bar per state."""
    fig = go.Figure()
    for state in sorted({r[1] for r in notices}):
        series = [r for r in notices if r[1] == state]
        fig.add_trace(go.Bar(x=[r[0] for r in series], y=[r[2] for r in series], name=state))
    fig.update_layout(barmode="stack", yaxis_title="opt-ins")
    return fig


def _quarantine_reasons(data: Data, business: str) -> list[tuple]:
    """The most frequent quarantine reasons of one business (of every row, attributed or not, for all)."""
    summed = _summed(data.rows["reasons"], business, 1)
    return sorted(summed, key=lambda r: (-r[1], r[0]))[:QUARANTINE_REASONS_SHOWN]


def _quarantine_title(data: Data, business: str) -> str:
    """The chart's title; a business's says how many rows no business is named on (they are in no
    business's view, only in all businesses')."""
    elsewhere = sum(n for _, _, n in _of(data.rows["reasons"], NOT_ATTRIBUTED))
    if not elsewhere:
        return "Quarantine reasons"
    if business == ALL:
        return f"Quarantine reasons ({elsewhere:,} of the rows are not attributed to a business)"
    return f"Quarantine reasons ({elsewhere:,} more rows are not attributed to a business: see all businesses)"


def content_key(data: Data) -> str:
    """A digest of what the page draws apart from the last run: the rows it read from the marts,
    its businesses and purposes, its templates, this module and Plotly's version."""
    digest = hashlib.sha256(repr((data.businesses, data.purposes, sorted(data.rows.items()))).encode())
    for source in (*sorted(Path(__file__).with_name("templates").iterdir()), Path(__file__)):
        digest.update(source.read_bytes())
    digest.update(plotly.__version__.encode())
    return digest.hexdigest()


def render_dashboard(con: duckdb.DuckDBPyConnection, out: Path, businesses: list[str] | None = None,
                     keep_charts: bool = True) -> int:
    """Write the dashboard; returns its size in bytes. `businesses`: those of businesses.yaml (the
    selector lists them with every business the marts hold).

    A page already at `out` that drew the same rows (its `content_key`, written into it) keeps its
    charts: only the last run's parts and the time it was generated are written again (a night
    with nothing new draws nothing twice); `keep_charts=False` draws them all the same."""
    data = _load(con, businesses)
    key = content_key(data)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        before = out.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        before = ""
    if keep_charts and _content_mark(key) in before:
        return _refreshed(con, out, before, {"generated": Markup.escape(generated)})
    colours = channel_colours(sorted({r[2] for r in data.rows["daily"].rows}))
    keys = [ALL, *data.businesses] if len(data.businesses) > 1 else [ALL]
    last_run = _last_run_parts(con)
    document = ENVIRONMENT.get_template("dashboard.html.j2").render(
        plotly_js=Markup(get_plotlyjs()),
        content_mark=Markup(_content_mark(key)),
        generated=_marked("generated", Markup.escape(generated)),
        views=[_view(data, key, colours) for key in keys],
        last_run_tile=_marked("tile", last_run["tile"]),
        last_run_checks=_marked("checks", last_run["checks"]),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return len(document.encode("utf-8"))
