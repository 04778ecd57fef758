"""What every published status row must prove.

Guards `consent_status`: an `opted_in` row is the claim "we may message this
number for this purpose", so it must carry its evidence. Contacts are keyed by
a hash of the number here, never the number itself.
"""

from __future__ import annotations

import polars as pl

from consent.reconcile import STATUSES
from expectations.runner import Expect
from expectations.staged_opt_ins import expect_e164, phone_is_e164

EVIDENCE = [
    ("consent_method", "how the person consented"),
    ("consent_at", "when the person consented"),
    ("channel", "where the consent was captured"),
    ("event_id", "which ledger event proves it"),
    ("source_file", "which export file it came from"),
    ("source_line", "which row of that file"),
]


def rows_to_validate(status: pl.DataFrame) -> pl.DataFrame:
    return status.select(
        pl.struct("business", "contact_id").hash().alias("contact_key"), phone_is_e164(), "purpose", "status",
        *[column for column, _ in EVIDENCE], "notice_version",
    )


def build_suite() -> list[Expect]:
    opted_in = {"row_condition": 'status == "opted_in"', "condition_parser": "pandas"}
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
