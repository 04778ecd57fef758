"""Histories decided in SQL (consent/run/decide_sql.py) equal the state machine's decisions.

Two property tests. The first feeds random contact histories straight to both paths (every rule of
the registry, BSUID contacts, inherited events of number changes and all-businesses opt-outs,
several businesses, notices registries, policies) and compares statuses, history and violations
row for row. The second runs the pipeline on random exports (CSV rows and WhatsApp webhooks with
BSUIDs, links, number changes, two businesses, both opt-out scopes, both number-change policies),
a first run and a night, with the SQL path on and off, and compares the published tables.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.domain.notices import NoticeTerms
from consent.domain.policy import Policy, load_channels
from consent.domain.reconcile import INPUT_COLUMNS, reconcile
from consent.domain.rules import ASSESSED, RULES
from consent.domain.schema import CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS
from consent.run import decide_sql
from consent.run.decide import _contact_ranges
from consent.run.publish import publish
from consent.run.staging import stage_run
from consent.storage.migrations import ensure_schema

AS_OF = datetime(2026, 11, 20)
START = datetime(2026, 11, 1)
PURPOSES = [[], ["marketing"], ["utility"], ["marketing", "utility"], ["newsletter"], ["marketing", "marketing"], None]
# Contacts: (business, contact id); a BSUID contact has no number.
CONTACTS = [("default", "+4915112345678"), ("default", "+447400123456"), ("default", "DE.1001"),
            ("acme_bank", "+4915112345678")]
NOTICES = {
    "v1": NoticeTerms(frozenset({"marketing", "utility"}), datetime(2026, 10, 1), None, ()),
    "v2": NoticeTerms(frozenset({"marketing"}), datetime(2026, 11, 3), datetime(2026, 11, 8), ("no_opt_out",)),
    "bank-v1": NoticeTerms(frozenset({"marketing", "utility"}), None, None, (), "acme_bank"),
}
NOTICE_EDGES = [edge + timedelta(seconds=step) for terms in NOTICES.values()
                for edge in (terms.valid_from, terms.valid_until) if edge for step in (-1, 0, 1)]
FRAME_SCHEMA = {
    "contact_key": pl.Utf8, "business": pl.Utf8, "contact_id": pl.Utf8, "inherited": pl.Boolean,
    "whatsapp_user_id": pl.Utf8, "changed_to": pl.Utf8, "phone_e164": pl.Utf8, "event_id": pl.Utf8,
    "channel": pl.Utf8, "event_type": pl.Utf8, "purposes": pl.List(pl.Utf8), "occurred_at": pl.Datetime("us"),
    "ingested_at": pl.Datetime("us"), "consent_method": pl.Utf8, "notice_version": pl.Utf8,
    "checkbox_pre_ticked": pl.Boolean, "bundled_with_terms": pl.Boolean, "acquisition_source": pl.Utf8,
    "source_file": pl.Utf8, "source_line": pl.Int64,
}
SIMPLE = {"opt_out", "resume", "inbound_message"}
DECIDED = (CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS)


@st.composite
def events(draw, n: int, business: str, contact: str) -> dict:
    kind = draw(st.sampled_from(["opt_in", "opt_in", "opt_in", "opt_out", "opt_out", "resume", "resume", "inbound_message",
                                 "opt_in_confirm", "opt_in_request", "number_change"]))
    # A small grid of instants: equal instants happen, as do undated and future ones, and the
    # instants where a notice starts and stops being valid (and just around them).
    when = draw(st.one_of(st.integers(0, 40).map(lambda h: START + timedelta(hours=h)),
                          st.sampled_from([None, AS_OF, AS_OF + timedelta(days=2), AS_OF + timedelta(minutes=5)]),
                          st.sampled_from(NOTICE_EDGES)))
    event = {
        "business": business, "contact_id": contact, "inherited": draw(st.integers(0, 9)) == 0,
        "whatsapp_user_id": draw(st.sampled_from([None, "", "DE.1001", "DE.1002"])),
        "changed_to": "+4915199887766" if kind == "number_change" else None,
        "phone_e164": contact if contact.startswith("+") else None,
        "event_id": f"e{n:03d}", "channel": draw(st.sampled_from(["web_form", "in_app", "email_link", "whatsapp"])),
        "event_type": kind, "purposes": draw(st.sampled_from(PURPOSES)), "occurred_at": when,
        "ingested_at": START + timedelta(hours=draw(st.integers(0, 450))),
        "consent_method": draw(st.sampled_from(["checkbox", "checkbox", "", None, "imported", "double_opt_in"])),
        "notice_version": draw(st.sampled_from(["v1", "v1", "v2", "bank-v1", "gone", "", None])),
        "checkbox_pre_ticked": draw(st.sampled_from([None, False, False, True])),
        "bundled_with_terms": draw(st.sampled_from([None, False, False, True])),
        "acquisition_source": draw(st.sampled_from([None, "", "organic", "organic", "purchased"])),
        "source_file": f"f{n % 3}.csv", "source_line": n,
    }
    if draw(st.booleans()):  # a valid opt-in as far as the event alone goes: grants happen often
        event.update(consent_method="checkbox", notice_version=draw(st.sampled_from(["v1", "v2", None])),
                     checkbox_pre_ticked=False, bundled_with_terms=None, acquisition_source="organic",
                     purposes=draw(st.sampled_from([["marketing"], ["utility"], ["marketing", "utility"]])))
    return event


@st.composite
def histories(draw) -> pl.DataFrame:
    rows = []
    for business, contact in draw(st.lists(st.sampled_from(CONTACTS), min_size=1, max_size=4, unique=True)):
        # Some contacts hold only the kinds SQL decides: most real contacts are like that.
        simple = draw(st.integers(0, 2)) > 0
        for _ in range(draw(st.integers(0, 8))):
            event = draw(events(len(rows), business, contact))
            if simple and event["event_type"] not in SIMPLE:
                event.update(event_type="opt_in", channel=draw(st.sampled_from(["web_form", "in_app"])), inherited=False)
            rows.append(event)
    # An event reaching a second contact: a BSUID-only opt-out reaching every linked number, or an
    # event inherited from an old number or another business.
    if rows and draw(st.booleans()):
        copy = dict(draw(st.sampled_from(rows)))
        copy["business"], copy["contact_id"] = draw(st.sampled_from(CONTACTS))
        copy["inherited"] = copy["event_type"] != "opt_out" or draw(st.booleans())
        rows.append(copy)
    for row in rows:
        row["contact_key"] = f"{row['business']}\x1f{row['contact_id']}"
    frame = pl.DataFrame(rows, schema=FRAME_SCHEMA) if rows else pl.DataFrame(schema=FRAME_SCHEMA)
    # One contact holds an event once (contact_events.sql keeps one row per contact and event).
    return frame.unique(["contact_key", "event_id"], keep="first", maintain_order=True).select(INPUT_COLUMNS)


@st.composite
def policies(draw) -> Policy:
    severities = {rule: draw(st.sampled_from(["warn", "error"])) for rule in RULES if draw(st.booleans())}
    return Policy(
        require_notice_version=draw(st.booleans()), rule_severity=severities,
        double_opt_in_channels=draw(st.sampled_from([["email_link"], ["email_link", "whatsapp"], []])),
        active_consent_methods=draw(st.sampled_from([["checkbox"], ["checkbox", "double_opt_in"]])),
        purposes=draw(st.sampled_from([["marketing", "utility"], ["marketing"]])),
        number_change=draw(st.sampled_from(["end", "carry"])),
        clock_skew_minutes=draw(st.sampled_from([5, 0])),
    )


def rows(frame: pl.DataFrame) -> list[str]:
    return sorted(map(repr, frame.rows()))


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return sorted(map(repr, con.execute(f"SELECT * FROM {table}").fetchall()))


def decide_both(frame: pl.DataFrame, policy: Policy, notices: dict) -> tuple[dict, dict, int]:
    """(state machine's rows, SQL and state machine's rows, contacts decided in SQL) per table."""
    status, violations, history = reconcile(frame, policy, AS_OF, notices=notices)
    reference = {"consent_status": rows(status), "consent_status_history": rows(history),
                 "consent_violations": rows(violations)}
    con = duckdb.connect()
    # The tables both paths write, as a new warehouse creates them. (ensure_schema would create every
    # table and its comments for each example: 40% of this test's time.)
    for table in DECIDED:
        con.execute(table.ddl())
    con.register("history_frame", frame)
    con.execute("CREATE TEMP TABLE touched_history AS SELECT * FROM history_frame")
    # twelve events per range: a larger example is decided over several ranges (as a 5M-event run is)
    in_sql = decide_sql.decide_touched(con, policy, AS_OF, notices, lambda: _contact_ranges(con, 12))
    rest = con.execute("SELECT * FROM touched_history").pl()
    if rest.height:
        for table, part in zip(("consent_status", "consent_violations", "consent_status_history"),
                               reconcile(rest, policy, AS_OF, notices=notices)):
            con.register("part", part)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM part")
            con.unregister("part")
    both = {table: table_rows(con, table) for table in reference}
    con.close()
    return reference, both, in_sql


def sql_decidable(frame: pl.DataFrame, policy: Policy) -> int:
    """The contacts SQL should take, said in Python: only opt-ins (or confirmations) on channels
    without double opt-in given by the contact itself, opt-outs, resumes and messages."""
    contacts = 0
    for _, group in frame.group_by("contact_key"):
        ok = all(
            (e["event_type"] in ("opt_in", "opt_in_confirm") and e["channel"] not in policy.double_opt_in_channels
             and not e["inherited"]) or e["event_type"] in SIMPLE
            for e in group.iter_rows(named=True)
        ) and all(len(set(p or [])) == len(p or []) for p in group["purposes"].to_list())
        contacts += ok
    return contacts


@settings(max_examples=int(__import__("os").environ.get("DECIDE_SQL_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories(), policies(), st.sampled_from([{}, NOTICES]))
def test_histories_decided_in_sql_equal_the_state_machine(frame, policy, notices):
    reference, both, in_sql = decide_both(frame, policy, notices)
    assert both == reference
    assert in_sql == sql_decidable(frame, policy)


def test_the_sql_path_judges_every_rule_of_the_registry():
    # A rule added to the registry must be written in sql_decidable.sql too (else SQL turns itself off).
    assert {rule.name for rule in ASSESSED} == decide_sql.SQL_RULES
    assert decide_sql.applies(Policy(), NOTICES)


def test_the_sql_path_steps_aside_for_validity_and_its_switch():
    frame = pl.DataFrame([{
        **{c: None for c in FRAME_SCHEMA}, "contact_key": "default\x1f+4915112345678", "business": "default",
        "contact_id": "+4915112345678", "inherited": False, "phone_e164": "+4915112345678", "event_id": "e1",
        "channel": "web_form", "event_type": "opt_in", "purposes": ["marketing"], "occurred_at": START,
        "ingested_at": START, "consent_method": "checkbox", "notice_version": "v1", "source_file": "f.csv",
        "source_line": 2,
    }], schema=FRAME_SCHEMA).select(INPUT_COLUMNS)
    assert decide_both(frame, Policy(), NOTICES)[2] == 1
    # Consent validity (expiry by time) is left to the state machine.
    reference, both, in_sql = decide_both(frame, Policy(consent_validity_days=10), NOTICES)
    assert (in_sql, both) == (0, reference)
    saved = decide_sql.SQL_DECISIONS
    try:
        decide_sql.SQL_DECISIONS = False
        assert decide_both(frame, Policy(), NOTICES)[2] == 0
    finally:
        decide_sql.SQL_DECISIONS = saved


# -- the pipeline, SQL path on and off ------------------------------------------------------------

SPELLINGS = {"+4915112345678": ["+4915112345678", "0151 12345678|DE"], "+447400123456": ["+447400123456"]}
BSUIDS = {"+4915112345678": "DE.1001", "+447400123456": "GB.2002"}
COLUMNS = ["phone", "country", "event_type", "purposes", "occurred_at", "consent_method", "notice_version",
           "checkbox_pre_ticked", "acquisition_source", "whatsapp_user_id"]
BUSINESSES_YAML = """businesses:
  acme_shoes:
    channels: [web_form, in_app, whatsapp]
    whatsapp_phone_number_ids: ["111"]
  acme_bank:
    channels: [email_link, preference_center]
    whatsapp_phone_number_ids: ["222"]
"""
NOTICE_YAML = ("version: v1\nbusiness_name: Acme Shoes\nchannels: [web_form]\npurposes: [marketing]\n"
               "frequency: weekly\nvalid_from: 2026-10-01\ntext: \"Acme Shoes may send me offers on WhatsApp. "
               "Reply STOP to opt out.\"\n")


@st.composite
def csv_rows(draw):
    number = draw(st.sampled_from(sorted(SPELLINGS)))
    phone, _, country = draw(st.sampled_from(SPELLINGS[number])).partition("|")
    by_bsuid = draw(st.integers(0, 4)) == 0  # a row naming the person by BSUID alone
    return [
        "" if by_bsuid else phone, "" if by_bsuid else country,
        draw(st.sampled_from(["opt_in", "opt_in", "opt_out", "opt_in_request", "opt_in_confirm", "resume",
                              "inbound_message"])),
        draw(st.sampled_from(["marketing", "utility", "marketing;utility", ""])),
        draw(st.sampled_from([(START + timedelta(hours=draw(st.integers(0, 24 * 15)))).isoformat() + "Z", ""])),
        draw(st.sampled_from(["checkbox", "checkbox", "", "imported"])), draw(st.sampled_from(["v1", "", "v9"])),
        draw(st.sampled_from(["false", "false", "true", ""])), draw(st.sampled_from(["organic", "", "purchased"])),
        BSUIDS[number] if by_bsuid or draw(st.booleans()) else "",
    ]


@st.composite
def webhook_lines(draw):
    """A message by number, by BSUID alone or both (a link), a delivered status linking the two, or
    a number change, to one of two businesses' WhatsApp numbers."""
    number = draw(st.sampled_from(sorted(SPELLINGS)))
    wa_id, user = number[1:], BSUIDS[number]
    stamp = str(int(START.timestamp()) + draw(st.integers(0, 15 * 86400)))
    mid = f"wamid.{draw(st.integers(0, 10 ** 6))}"
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550001111", "phone_number_id": draw(st.sampled_from(["111", "222"]))}}
    kind = draw(st.sampled_from(["message", "message", "status", "change"]))
    by = draw(st.sampled_from(["number", "bsuid", "both"]))
    if kind == "change":
        value["messages"] = [{"from": wa_id, "id": mid, "timestamp": stamp, "type": "system",
                              "system": {"body": "changed", "wa_id": "4915199887766", "type": "user_changed_number"}}]
    elif kind == "status":
        value["statuses"] = [{"id": mid, "status": "delivered", "timestamp": stamp, "recipient_id": wa_id,
                              "recipient_user_id": user, "pricing": {"category": "marketing"}}]
    else:
        body = draw(st.sampled_from(["STOP", "START", "hello", "stop!"]))
        value["contacts"] = [{"profile": {"name": "Kim"}, **({"wa_id": wa_id} if by != "bsuid" else {}),
                              **({"user_id": user} if by != "number" else {})}]
        value["messages"] = [{**({"from": wa_id} if by != "bsuid" else {}), **({"from_user_id": user} if by != "number" else {}),
                              "id": mid, "timestamp": stamp, "type": "text", "text": {"body": body}}]
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})


@st.composite
def export_sets(draw, night: int):
    files = {}
    for n in range(draw(st.integers(1, 3))):
        channel = draw(st.sampled_from(["web_form", "in_app", "email_link", "preference_center"]))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(draw(st.lists(csv_rows(), min_size=1, max_size=8)))
        files[f"{channel}/night{night}_{n}.csv"] = out.getvalue()
    if draw(st.booleans()):
        files[f"whatsapp/night{night}.jsonl"] = "\n".join(draw(st.lists(webhook_lines(), min_size=1, max_size=5))) + "\n"
    return files


def run_pipeline(exports: Path, con: duckdb.DuckDBPyConnection, policy: Policy, run_id: str, as_of: datetime) -> dict:
    @contextmanager
    def connect():
        yield con

    stage_run(connect, exports, policy=policy, channels=load_channels(exports), as_of=as_of, run_id=run_id)
    return publish(con, policy=policy, salt="s")


@pytest.mark.slow  # `make test-slow`: whole runs; the frame-level property test above runs by default
@settings(max_examples=int(__import__("os").environ.get("DECIDE_SQL_RUNS", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(export_sets(1), export_sets(2), st.booleans(), st.booleans(),
       st.sampled_from(["business", "all_businesses"]), st.sampled_from(["end", "carry"]))
def test_runs_with_the_sql_path_publish_what_the_state_machine_publishes(
    tmp_path_factory, first, second, businesses, notice, scope, number_change
):
    policy = Policy(opt_out_scope=scope, number_change=number_change)
    root = tmp_path_factory.mktemp("exports")
    if businesses:
        first = {**first, "businesses.yaml": BUSINESSES_YAML}
    if notice:
        first = {**first, "notices/v1.yaml": NOTICE_YAML}
    published = {}
    for flag in (True, False):
        decide_sql.SQL_DECISIONS = flag
        try:
            con = duckdb.connect()
            ensure_schema(con)
            tables = []
            for night, (files, as_of) in enumerate(((first, datetime(2026, 11, 10)), (second, AS_OF))):
                for name, text in files.items():
                    (root / name).parent.mkdir(parents=True, exist_ok=True)
                    (root / name).write_text(text)
                run_pipeline(root, con, policy, f"r{night}", as_of)
                tables.append({t: table_rows(con, t) for t in
                               ("consent_status", "consent_status_history", "consent_violations")})
            published[flag] = tables
            con.close()
        finally:
            decide_sql.SQL_DECISIONS = True
        for path in sorted(root.rglob("night2*")):
            path.unlink()
    assert published[True] == published[False]


def test_an_error_inside_the_sql_path_reaches_the_run_record_as_itself(tmp_path, monkeypatch, capsys):
    """A statement that fails inside the publish transaction (at 5M events: out of memory) aborts
    it; the clean-ups after it must not replace that error with "Current transaction is aborted":
    the run's reason names the real one."""
    import shutil

    from cli.main import main
    from consent.storage import sql
    from tests.conftest import FIXTURES

    real = sql.run

    def failing(con, name, params=None):
        if name == "sql_decisions":
            con.execute("SELECT error('could not allocate block (simulated)')")
        return real(con, name, params)

    monkeypatch.setattr(sql, "run", failing)
    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    warehouse = str(tmp_path / "wh" / "consent.duckdb")
    assert main(["run", "--exports", str(exports), "--warehouse", warehouse, "--as-of", "2026-11-08T00:00:00Z"]) == 1
    err = capsys.readouterr().err
    assert "could not allocate block (simulated)" in err and "transaction is aborted" not in err.lower(), err
