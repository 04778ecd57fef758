"""What every staged opt-in must carry before it can count as consent.

Guards the opt-in rows (`opt_in`, `opt_in_confirm`) of `staging.stg_consent_events`.
A failure here never blocks the run's opt-outs: the state machine already
refuses an opt-in without method or date; this suite makes the run fail so
the export gets fixed. GX never sees a phone number: the E.164 rule is checked
on a flag computed beside the number.
"""

from __future__ import annotations

from pathlib import Path

from consent.domain.events import EVENT_TYPES
from consent.domain.policy import Policy
from consent.domain.rules import describe
from consent.storage import sql
from expectations.runner import Expect

E164 = r"^\+[1-9][0-9]{6,14}$"
# The flag GX checks instead of the number (SQL, beside `phone_e164`). A contact known only by its
# BSUID has no number: the rule is on numbers that are there.
PHONE_IS_E164 = f"(phone_e164 IS NULL OR regexp_matches(phone_e164, '{E164}')) AS phone_is_e164"


def expect_e164() -> Expect:
    """Every suite's E.164 rule, on the `phone_is_e164` flag (GX never sees the number)."""
    return Expect("ExpectColumnValuesToBeInSet", "Phone numbers, when present, are normalised to E.164.", "error",
                  {"column": "phone_is_e164", "value_set": [True]})


# Opt-ins that claim consent by themselves (staged_opt_ins.sql beside this file; its
# `phone_is_e164` is PHONE_IS_E164 written out, a structure test keeps the two equal).
ROWS_SQL = sql.file_statements(Path(__file__).with_suffix(".sql"))[0]


def rows_params(policy: Policy) -> dict:
    return {"double_opt_in_channels": list(policy.double_opt_in_channels)}


def build_suite() -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_consent_method"), "error", {"column": "consent_method"}),
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_consent_date"), "error", {"column": "occurred_at"}),
        Expect("ExpectColumnValuesToBeInSet", "Event types come from the known set.", "error",
               {"column": "event_type", "value_set": list(EVENT_TYPES)}),
        expect_e164(),
        Expect("ExpectColumnValuesToNotBeNull", describe("missing_notice_version"), "warn", {"column": "notice_version"}),
    ]
