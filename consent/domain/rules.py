"""The consent rules: one registry, read by the state machine, the policy and the checks.

Each rule is a way an opt-in can fail to be consent (consent-rules.md
sections 3 and 4, and the notices registry). The registry says, per rule:
its default severity (`error` fails the run, `warn` is reported), whether
breaking it refuses consent, whether time alone can change its outcome
(then contacts with such a violation are re-decided every night, or, for a
rule about the opt-in's own date, from the night that date is reached), and
what it means. `policy.yaml`'s `rule_severity` may only name rules listed here.

To add a rule: add a `Rule` below; if it is judged on the opt-in event
alone, give `ConsentStateMachine` a method `_breaks_<name>(event, double_opt_in)`
(rules with `assessed=False` are raised by the event handlers themselves);
add a test in `tests/test_reconcile.py`. Nothing else changes: the policy
keys, the nightly re-decision, the checks and `consent rules` follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warn"]


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    # Breaking it refuses consent; None: the policy decides (`require_notice_version`).
    refuses: bool | None
    # The current time alone can change whether the rule is broken (re-decide every night).
    time_dependent: bool
    description: str
    # Judged on the opt-in by `assess` (a `_breaks_<name>` method); else raised by a handler.
    assessed: bool = True
    # Time changes the outcome only once the run's clock, plus the policy's clock skew, reaches the
    # opt-in's own date (`occurred_at`): its contacts are decided again from then on, not every night.
    until_dated: bool = False


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("missing_consent_date", "error", True, False,
             "Every opt-in records when the person consented (rule 3)."),
        Rule("future_date", "warn", True, True,
             "The consent date is not in the future, beyond the allowed clock skew (rule 3).", until_dated=True),
        Rule("missing_consent_method", "error", True, False,
             "Every opt-in records how the person consented (rule 2)."),
        Rule("method_not_active", "warn", True, False,
             "The consent method is an active action of the person (rule 2)."),
        Rule("pre_ticked_checkbox", "warn", True, False,
             "The consent box was not ticked by default (rule 4, GDPR Recital 32)."),
        Rule("bundled_with_terms", "warn", True, False,
             "Consent was not bundled with general terms (rule 5)."),
        Rule("non_organic_source", "warn", True, False,
             "The contact was not bought, rented, scraped, from a partner or implied (rule 6)."),
        Rule("missing_purposes", "warn", True, False,
             "The opt-in names the purposes it covers."),
        Rule("missing_notice_version", "warn", None, False,
             "The opt-in names the consent notice the person saw (refuses only with require_notice_version)."),
        Rule("notice_unknown", "warn", False, False,
             "The opt-in's notice version exists in the notices registry."),
        Rule("notice_not_valid_at_opt_in", "warn", False, False,
             "The notice was valid when the person opted in."),
        Rule("notice_deficient", "warn", False, False,
             "The notice names the business, mentions WhatsApp and says how to opt out."),
        Rule("notice_names_other_business", "warn", True, False,
             "The notice the person saw was shown for the business the opt-in is for (rules, section 10)."),
        Rule("notice_does_not_cover_purpose", "warn", True, False,
             "The notice states every purpose the opt-in claims (consent only for those it states).",
             assessed=False),
        Rule("confirmation_without_request", "warn", True, False,
             "A double opt-in confirmation follows a request of the same contact (rule 7).", assessed=False),
        Rule("confirmation_outside_window", "warn", True, False,
             "A double opt-in confirmation comes within the confirmation window (rule 7).", assessed=False),
    )
}

ASSESSED = tuple(rule for rule in RULES.values() if rule.assessed)
TIME_DEPENDENT = tuple(rule.name for rule in RULES.values() if rule.time_dependent)
UNTIL_DATED = tuple(rule.name for rule in RULES.values() if rule.time_dependent and rule.until_dated)


def default_severities() -> dict[str, Severity]:
    return {name: rule.severity for name, rule in RULES.items()}


def describe(name: str) -> str:
    return RULES[name].description
