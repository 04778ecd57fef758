"""What the notice behind each opt-in must prove (the notices registry).

Guards this run's opt-ins that name a notice, once a registry is kept
(`notices/` in the exports folder). Severity per expectation comes from the
policy (`rule_severity`), WARN by default. The state machine applies the same
rules: consent is granted only for purposes the notice states.
"""

from __future__ import annotations

from pathlib import Path

from consent.domain.policy import Policy
from consent.domain.rules import describe
from consent.storage import sql
from expectations.runner import Expect

# expectation column -> (rule of the registry, what a reviewer reads: the rule's own
# description, or for the three parts of notice_deficient, which part)
RULES = {
    "notice_known": ("notice_unknown", describe("notice_unknown")),
    "notice_valid_at_opt_in": ("notice_not_valid_at_opt_in", describe("notice_not_valid_at_opt_in")),
    "notice_names_business": ("notice_deficient", "The notice names the business."),
    "notice_mentions_whatsapp": ("notice_deficient", "The notice says the consent covers WhatsApp messages."),
    "notice_covers_purposes": ("notice_does_not_cover_purpose", describe("notice_does_not_cover_purpose")),
    "notice_says_how_to_opt_out": ("notice_deficient", "The notice says how to opt out."),
}

# The rows validated, one flag per rule (opt_in_notices.sql beside this file).
ROWS_SQL = sql.file_statements(Path(__file__).with_suffix(".sql"))[0]


def suite_for(policy: Policy):
    def build_suite() -> list[Expect]:
        return [
            Expect("ExpectColumnValuesToBeInSet", text, policy.severity(rule), {"column": column, "value_set": [True]},
                   meta={"rule": rule})
            for column, (rule, text) in RULES.items()
        ]

    return build_suite
