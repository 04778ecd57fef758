"""What the notice behind each opt-in must prove (the notices registry).

Guards this run's opt-ins that name a notice, once a registry is kept
(`notices/` in the exports folder). Severity per expectation comes from the
policy (`rule_severity`), WARN by default. The state machine applies the same
rules: consent is granted only for purposes the notice states.
"""

from __future__ import annotations

from consent.domain.policy import Policy
from consent.domain.rules import describe
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

ROWS_SQL = """
SELECT
    e.source_file,
    e.source_line,
    n.notice_version IS NOT NULL AS notice_known,
    -- validity is judged once, by the state machine (rule notice_not_valid_at_opt_in)
    NOT EXISTS (
        SELECT 1 FROM consent_violations AS v WHERE v.event_id = e.event_id AND v.rule = 'notice_not_valid_at_opt_in'
    ) AS notice_valid_at_opt_in,
    coalesce(n.names_business, TRUE) AS notice_names_business,
    coalesce(n.mentions_whatsapp, TRUE) AS notice_mentions_whatsapp,
    coalesce(len(list_filter(e.purposes, p -> NOT list_contains(n.purposes, p))) = 0, TRUE) AS notice_covers_purposes,
    coalesce(n.says_how_to_opt_out, TRUE) AS notice_says_how_to_opt_out
FROM consent_events AS e
LEFT JOIN consent_notices AS n USING (notice_version)
WHERE e.run_id = $run_id
  AND e.event_type IN ('opt_in', 'opt_in_request', 'opt_in_confirm')
  AND e.notice_version IS NOT NULL
  AND (SELECT count(*) FROM consent_notices) > 0
ORDER BY e.source_file, e.source_line
"""


def suite_for(policy: Policy):
    def build_suite() -> list[Expect]:
        return [
            Expect("ExpectColumnValuesToBeInSet", text, policy.severity(rule), {"column": column, "value_set": [True]},
                   meta={"rule": rule})
            for column, (rule, text) in RULES.items()
        ]

    return build_suite
