"""What every published status row must prove.

Guards `consent_status`: an `opted_in` row is the claim "we may message this
number for this purpose", so it must carry its evidence. Contacts are keyed by
a hash of the number here, never the number itself.
"""

from __future__ import annotations

import great_expectations as gx
import polars as pl

from consent.reconcile import STATUSES
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


def build_suite() -> gx.ExpectationSuite:
    opted_in = 'status == "opted_in"'
    return gx.ExpectationSuite(
        name="consent_status",
        expectations=[
            *[
                gx.expectations.ExpectColumnValuesToNotBeNull(
                    column=column,
                    row_condition=opted_in,
                    condition_parser="pandas",
                    description=f"Every opted_in row records {meaning} ({column}).",
                    meta={"severity": "error"},
                )
                for column, meaning in EVIDENCE
            ],
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="status", value_set=list(STATUSES),
                description="Statuses come from the known set.", meta={"severity": "error"},
            ),
            expect_e164(),
            gx.expectations.ExpectCompoundColumnsToBeUnique(
                column_list=["contact_key", "purpose"],
                description="One row per business, contact and purpose.", meta={"severity": "error"},
            ),
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column="notice_version", row_condition=opted_in, condition_parser="pandas",
                description="Every opted_in row names the consent notice the person saw.",
                meta={"severity": "warn"},
            ),
        ],
    )
