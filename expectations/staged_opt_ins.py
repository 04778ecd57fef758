"""What every staged opt-in must carry before it can count as consent.

Guards the opt-in rows (`opt_in`, `opt_in_confirm`) of `stg_consent_events`.
A failure here never blocks the run's opt-outs: the state machine already
refuses an opt-in without method or date; this suite makes the run fail so
the export gets fixed. GX never sees a phone number: the E.164 rule is checked
on a flag computed beside the number.
"""

from __future__ import annotations

import polars as pl

from consent.events import EVENT_TYPES
from consent.policy import Policy
from consent.rules import describe
from expectations.runner import Expect

E164 = r"^\+[1-9][0-9]{6,14}$"


def phone_is_e164() -> pl.Expr:
    # A contact known only by its BSUID has no number: the rule is on numbers that are there.
    return (pl.col("phone_e164").is_null() | pl.col("phone_e164").str.contains(E164)).alias("phone_is_e164")


def expect_e164() -> Expect:
    """Every suite's E.164 rule, on the `phone_is_e164` flag (GX never sees the number)."""
    return Expect("ExpectColumnValuesToBeInSet", "Phone numbers, when present, are normalised to E.164.", "error",
                  {"column": "phone_is_e164", "value_set": [True]})


# The columns of stg_consent_events the suite reads (the check selects only these).
SOURCE_COLUMNS = (
    "event_type", "channel", "phone_e164", "consent_method", "occurred_at", "notice_version", "source_file", "source_line",
)


def rows_to_validate(staged_events: pl.DataFrame, policy: Policy) -> pl.DataFrame:
    """Opt-ins that claim consent by themselves (a double opt-in's click is checked at confirmation)."""
    claims = pl.col("event_type").is_in(["opt_in", "opt_in_confirm"]) & ~pl.col("channel").is_in(
        policy.double_opt_in_channels
    )
    return staged_events.filter(claims).select(
        "event_type", "channel", phone_is_e164(), "consent_method", "occurred_at", "notice_version",
        "source_file", "source_line",
    )


def build_suite() -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_consent_method"), "error", {"column": "consent_method"}),
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_consent_date"), "error", {"column": "occurred_at"}),
        Expect("ExpectColumnValuesToBeInSet", "Event types come from the known set.", "error",
               {"column": "event_type", "value_set": list(EVENT_TYPES)}),
        expect_e164(),
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_notice_version"), "warn", {"column": "notice_version"}),
    ]
