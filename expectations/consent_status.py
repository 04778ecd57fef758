"""What every published status row must prove.

Guards `consent_status`: an `opted_in` row is the claim "we may message this
number for this purpose", so it must carry its evidence. Contacts are keyed by
a hash of the number here, never the number itself.
"""

from __future__ import annotations

from consent.domain.reconcile import STATUSES
from expectations.runner import Expect
from expectations.staged_opt_ins import PHONE_IS_E164, expect_e164

EVIDENCE = [
    ("consent_method", "how the person consented"),
    ("consent_at", "when the person consented"),
    ("channel", "where the consent was captured"),
    ("event_id", "which ledger event proves it"),
    ("source_file", "which export file it came from"),
    ("source_line", "which row of that file"),
]


def rows_sql(status_rows: str = "SELECT * FROM consent_status") -> str:
    """The suite's columns of `status_rows` (a query of consent_status rows); contacts by a hash."""
    return f"""
SELECT hash(business, contact_id) AS contact_key, {PHONE_IS_E164}, purpose, status,
       {', '.join(column for column, _ in EVIDENCE)}, notice_version
FROM ({status_rows})
ORDER BY source_file, source_line
"""


def build_suite() -> list[Expect]:
    opted_in = {"row_condition": 'col("status")=="opted_in"', "condition_parser": "great_expectations"}
    return [
        *[
            Expect("ExpectColumnValuesToNotBeNull", f"Every opted_in row records {meaning} ({column}).", "error",
                   {"column": column, **opted_in})
            for column, meaning in EVIDENCE
        ],
        Expect("ExpectColumnValuesToBeInSet", "Statuses come from the known set.", "error",
               {"column": "status", "value_set": list(STATUSES)}),
        expect_e164(),
        Expect("ExpectCompoundColumnsToBeUnique", "One row per business, contact and purpose.", "error",
               {"column_list": ["contact_key", "purpose"]}),
        Expect("ExpectColumnValuesToNotBeNull", "Every opted_in row names the consent notice the person saw.", "warn",
               {"column": "notice_version", **opted_in}),
    ]
