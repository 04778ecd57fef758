"""What every ledger row must be: the events this run appended to `consent_events`."""

from __future__ import annotations

import great_expectations as gx
import polars as pl

from consent.events import ACQUISITION_SOURCES, EVENT_TYPES
from expectations.staged_opt_ins import expect_e164, phone_is_e164


# The columns of consent_events the suite reads (the check selects only these).
SOURCE_COLUMNS = ("event_id", "event_type", "channel", "phone_e164", "acquisition_source", "source_file", "source_line")


def rows_to_validate(new_events: pl.DataFrame) -> pl.DataFrame:
    return new_events.select(
        "event_id", "event_type", "channel", phone_is_e164(), "acquisition_source", "source_file", "source_line",
    )


def build_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name="consent_events",
        expectations=[
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column="event_id", description="Every event has its deterministic id.", meta={"severity": "error"}
            ),
            gx.expectations.ExpectColumnValuesToBeUnique(
                column="event_id", description="An event is in the ledger once.", meta={"severity": "error"}
            ),
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="event_type", value_set=list(EVENT_TYPES),
                description="Event types come from the known set.", meta={"severity": "error"},
            ),
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="acquisition_source", value_set=list(ACQUISITION_SOURCES),
                description="Acquisition sources come from the known set.", meta={"severity": "error"},
            ),
            expect_e164(),
            *[
                gx.expectations.ExpectColumnValuesToNotBeNull(
                    column=column, description=f"Every event keeps its lineage ({column}).", meta={"severity": "error"}
                )
                for column in ("channel", "source_file", "source_line")
            ],
        ],
    )
