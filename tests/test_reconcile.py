"""The consent state machine, rule by rule (consent-rules.md sections 3 to 6)."""

import random
from datetime import datetime, timedelta
from itertools import count

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.domain.policy import Policy
from consent.domain.reconcile import LEDGER_COLUMNS, reconcile

T0 = datetime(2026, 11, 1, 12, 0)
AS_OF = datetime(2026, 11, 20)
PHONE = "+4915112345678"
_ids = count()


def ev(hours, event_type, channel="web_form", purposes=("marketing",), **fields):
    at = None if hours is None else T0 + timedelta(hours=hours)
    row = {
        "phone_e164": fields.pop("phone", PHONE),
        "event_id": fields.pop("event_id", f"e{next(_ids):05d}"),
        "channel": channel,
        "event_type": event_type,
        "purposes": list(purposes),
        "occurred_at": at,
        "ingested_at": fields.pop("ingested_at", AS_OF),
        "consent_method": "checkbox" if event_type == "opt_in" else None,
        "notice_version": "v1" if event_type.startswith("opt_in") else None,
        "checkbox_pre_ticked": False,
        "bundled_with_terms": False,
        "acquisition_source": "organic",
        "source_file": f"{channel}/export.csv",
        "source_line": 2,
    }
    row.update(fields)
    return row


def frame(events):
    return pl.DataFrame(events, schema_overrides={"purposes": pl.List(pl.Utf8), "occurred_at": pl.Datetime("us"), "ingested_at": pl.Datetime("us")}).select(
        LEDGER_COLUMNS + tuple(c for c in ("business", "whatsapp_user_id", "changed_to") if c in events[0])
    )


def decide(events, policy=None, as_of=AS_OF):
    status, violations, _ = reconcile(frame(events), policy or Policy(), as_of)
    rows = {r["purpose"]: r for r in status.filter(pl.col("phone_e164") == PHONE).iter_rows(named=True)}
    return rows, {(v["event_id"], v["rule"]) for v in violations.iter_rows(named=True)}


def status(events, purpose="marketing", **kw):
    return decide(events, **kw)[0][purpose]["status"]


# --- section 3: what counts as consent -----------------------------------


def test_rule3_valid_opt_in_grants_consent_with_its_evidence():
    rows, violations = decide([ev(0, "opt_in", evidence_ref="form-1")])
    row = rows["marketing"]
    assert row["status"] == "opted_in" and row["sendable"]
    assert (row["consent_method"], row["consent_at"], row["channel"], row["notice_version"]) == ("checkbox", T0, "web_form", "v1")
    assert row["event_id"] and row["source_file"] == "web_form/export.csv" and row["source_line"] == 2
    assert rows["utility"]["status"] == "no_consent"  # consent is per purpose
    assert not violations


@pytest.mark.parametrize(
    ("rule", "fields"),
    [
        ("missing_consent_method", {"consent_method": None}),
        ("method_not_active", {"consent_method": "imported"}),
        ("pre_ticked_checkbox", {"checkbox_pre_ticked": True}),
        ("bundled_with_terms", {"bundled_with_terms": True}),
        ("non_organic_source", {"acquisition_source": "purchased"}),
        ("non_organic_source", {"acquisition_source": "scraped"}),
        ("non_organic_source", {"acquisition_source": "implied"}),
    ],
)
def test_rule3_refused_opt_in_never_grants_and_is_reported(rule, fields):
    event = ev(0, "opt_in", **fields)
    rows, violations = decide([event])
    assert rows["marketing"]["status"] == "no_consent"
    assert (event["event_id"], rule) in violations


def test_rule3_missing_consent_date_never_grants():
    event = ev(None, "opt_in")
    assert status([event]) == "no_consent"
    assert (event["event_id"], "missing_consent_date") in decide([event])[1]


def test_rule3_future_date_beyond_clock_skew_never_grants():
    future = ev((AS_OF - T0).total_seconds() / 3600 + 1, "opt_in")
    assert status([future]) == "no_consent"
    within_skew = ev((AS_OF - T0).total_seconds() / 3600 + 0.01, "opt_in")
    assert status([within_skew]) == "opted_in"


def test_rule3_missing_notice_is_a_warning_unless_policy_requires_it():
    event = ev(0, "opt_in", notice_version=None)
    rows, violations = decide([event])
    assert rows["marketing"]["status"] == "opted_in"
    assert (event["event_id"], "missing_notice_version") in violations
    assert status([event], policy=Policy(require_notice_version=True)) == "no_consent"


def test_rule3_opt_in_without_purposes_never_grants():
    assert status([ev(0, "opt_in", purposes=())]) == "no_consent"


# --- rule 7: double opt-in --------------------------------------------------


def test_rule7_link_click_alone_is_pending_inside_the_window():
    rows, _ = decide([ev(0, "opt_in_request", channel="email_link")], as_of=T0 + timedelta(days=3))
    assert rows["marketing"]["status"] == "pending" and not rows["marketing"]["sendable"]


def test_rule7_opt_in_on_a_link_channel_counts_only_as_a_request():
    assert status([ev(0, "opt_in", channel="sms_link")], as_of=T0 + timedelta(days=1)) == "pending"


def test_rule7_unconfirmed_request_expires_after_the_window():
    assert status([ev(0, "opt_in_request", channel="email_link")]) == "expired"


def test_rule7_confirmation_inside_the_window_grants_double_opt_in_dated_at_confirmation():
    rows, _ = decide([
        ev(0, "opt_in_request", channel="email_link"),
        ev(30, "opt_in_confirm", channel="email_link", purposes=()),
    ])
    row = rows["marketing"]
    assert row["status"] == "opted_in"
    assert row["consent_method"] == "double_opt_in"
    assert row["consent_at"] == T0 + timedelta(hours=30)


def test_rule7_confirmation_after_the_window_is_expired_and_reported():
    confirm = ev(24 * 8, "opt_in_confirm", channel="email_link")
    rows, violations = decide([ev(0, "opt_in_request", channel="email_link"), confirm])
    assert rows["marketing"]["status"] == "expired"
    assert (confirm["event_id"], "confirmation_outside_window") in violations


def test_rule7_confirmation_without_request_grants_nothing():
    confirm = ev(1, "opt_in_confirm", channel="sms_link")
    rows, violations = decide([confirm])
    assert rows["marketing"]["status"] == "no_consent"
    assert (confirm["event_id"], "confirmation_without_request") in violations


def test_rule7_window_is_configurable():
    events = [ev(0, "opt_in_request", channel="email_link"), ev(24 * 8, "opt_in_confirm", channel="email_link")]
    assert status(events, policy=Policy(confirmation_window_days=10)) == "opted_in"


# --- rule 8: customer-initiated messages ------------------------------------


def test_rule8_inbound_message_never_grants_consent():
    rows, _ = decide([ev(0, "inbound_message", channel="whatsapp", purposes=())])
    assert {r["status"] for r in rows.values()} == {"no_consent"}


# --- section 4: opt-outs and re-consent --------------------------------------


def test_section4_opt_out_without_purposes_covers_all_purposes():
    rows, _ = decide([ev(0, "opt_in", purposes=("marketing", "utility")), ev(1, "opt_out", channel="whatsapp", purposes=())])
    assert {r["status"] for r in rows.values()} == {"opted_out"}
    assert rows["utility"]["opt_out_channel"] == "whatsapp"
    assert rows["utility"]["opted_out_at"] == T0 + timedelta(hours=1)


def test_section4_marketing_opt_out_leaves_utility_consent():
    rows, _ = decide([ev(0, "opt_in", purposes=("marketing", "utility")), ev(1, "opt_out", channel="whatsapp")])
    assert (rows["marketing"]["status"], rows["utility"]["status"]) == ("opted_out", "opted_in")


def test_section4_undated_opt_out_applies_at_ingestion_time():
    rows, _ = decide([ev(0, "opt_in"), ev(None, "opt_out", ingested_at=T0 + timedelta(days=2))])
    assert rows["marketing"]["status"] == "opted_out"
    assert rows["marketing"]["opted_out_at"] == T0 + timedelta(days=2)


def test_section4_resume_restores_an_earlier_valid_opt_in():
    rows, _ = decide([ev(0, "opt_in"), ev(1, "opt_out", purposes=()), ev(2, "resume", channel="whatsapp", purposes=())])
    assert rows["marketing"]["status"] == "opted_in"
    assert rows["marketing"]["consent_method"] == "checkbox"  # the evidence is the original opt-in


def test_section4_resume_without_earlier_valid_opt_in_gives_nothing():
    assert status([ev(1, "opt_out"), ev(2, "resume")]) == "opted_out"
    assert status([ev(0, "opt_in", acquisition_source="rented"), ev(1, "opt_out"), ev(2, "resume")]) == "opted_out"


def test_section4_resume_after_a_later_opt_in_is_not_needed_and_resume_before_opt_out_does_nothing():
    # After a later opt-in, a resume changes nothing: the later opt-in stays the evidence, from its time.
    later = ev(2, "opt_in")
    rows, _ = decide([ev(0, "opt_in"), ev(1, "opt_out", purposes=()), later, ev(3, "resume", channel="whatsapp", purposes=())])
    assert rows["marketing"]["status"] == "opted_in"
    assert (rows["marketing"]["event_id"], rows["marketing"]["status_since"]) == (later["event_id"], T0 + timedelta(hours=2))
    # A resume before the opt-out restores nothing afterwards.
    assert status([ev(0, "opt_in"), ev(1, "resume"), ev(2, "opt_out")]) == "opted_out"


def test_section4_later_valid_opt_in_after_opt_out_opts_in_again():
    assert status([ev(0, "opt_in"), ev(1, "opt_out"), ev(2, "opt_in")]) == "opted_in"


def test_section4_invalid_opt_in_after_opt_out_keeps_the_opt_out():
    assert status([ev(0, "opt_in"), ev(1, "opt_out"), ev(2, "opt_in", checkbox_pre_ticked=True)]) == "opted_out"


def test_section4_earlier_dated_opt_in_arriving_late_does_not_undo_an_opt_out():
    late = ev(0, "opt_in", ingested_at=AS_OF + timedelta(days=1))
    assert status([ev(1, "opt_out"), late]) == "opted_out"


# --- section 5: ordering and determinism ---------------------------------------


def test_section5_at_equal_instants_the_opt_out_wins():
    assert status([ev(0, "opt_out", event_id="a"), ev(0, "opt_in", event_id="z")]) == "opted_out"
    assert status([ev(0, "opt_out", event_id="z"), ev(0, "opt_in", event_id="a")]) == "opted_out"


# --- section 6: statuses ----------------------------------------------------------


def test_section6_consent_older_than_configured_validity_expires():
    assert status([ev(0, "opt_in")], policy=Policy(consent_validity_days=5)) == "expired"
    assert status([ev(0, "opt_in")], policy=Policy(consent_validity_days=365)) == "opted_in"


# --- property: order independence -----------------------------------------------

EVENT_KINDS = ["opt_in", "opt_in_request", "opt_in_confirm", "opt_out", "resume", "inbound_message"]


@st.composite
def histories(draw):
    events = []
    for n in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(EVENT_KINDS))
        channel = draw(st.sampled_from(["web_form", "email_link", "whatsapp"]))
        hours = draw(st.one_of(st.none(), st.integers(0, 24 * 12)))
        purposes = draw(st.sampled_from([(), ("marketing",), ("utility",), ("marketing", "utility")]))
        phone = draw(st.sampled_from([PHONE, "+447400123456"]))
        events.append(ev(hours, kind, channel=channel, purposes=purposes, phone=phone, event_id=f"id{n:03d}",
                         checkbox_pre_ticked=draw(st.booleans()) and draw(st.booleans())))
    return events


def _snapshot(events):
    status_df, violations, history = reconcile(frame(events), Policy(), AS_OF)
    return status_df.sort("phone_e164", "purpose").rows(), sorted(violations.rows()), sorted(history.rows(), key=repr)


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_property_shuffling_events_never_changes_status(events, rnd):
    expected = _snapshot(events)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert _snapshot(shuffled) == expected


def test_property_no_contact_is_opted_in_without_evidence():
    rng = random.Random(3)
    for _ in range(200):
        events = [ev(rng.choice([None, 0, 5, 50]), rng.choice(EVENT_KINDS), channel=rng.choice(["web_form", "sms_link"]),
                     consent_method=rng.choice([None, "checkbox"])) for _ in range(rng.randint(1, 6))]
        status_df, _, _ = reconcile(frame(events), Policy(), AS_OF)
        opted_in = status_df.filter(pl.col("status") == "opted_in")
        assert opted_in.select(["consent_method", "consent_at", "channel", "event_id", "source_file"]).null_count().sum_horizontal().item() == 0


def test_status_history_records_every_change_with_its_interval():
    _, _, history = reconcile(frame([ev(0, "opt_in"), ev(10, "opt_out"), ev(20, "opt_in")]), Policy(), AS_OF)
    rows = history.filter(pl.col("purpose") == "marketing").sort("valid_from").select("status", "valid_from", "valid_to").rows()
    assert rows == [
        ("opted_in", T0, T0 + timedelta(hours=10)),
        ("opted_out", T0 + timedelta(hours=10), T0 + timedelta(hours=20)),
        ("opted_in", T0 + timedelta(hours=20), None),
    ]


def test_section6_validity_expiry_happens_in_time_not_only_at_the_end():
    _, _, history = reconcile(frame([ev(0, "opt_in"), ev(24 * 10, "inbound_message", purposes=())]), Policy(consent_validity_days=5), AS_OF)
    rows = history.filter(pl.col("purpose") == "marketing").sort("valid_from").select("status", "valid_from").rows()
    assert rows == [("opted_in", T0), ("expired", T0 + timedelta(days=5))]

