"""What every ledger row must be: the events this run appended to `consent_events`."""

from __future__ import annotations

from consent.domain.events import ACQUISITION_SOURCES, EVENT_TYPES
from expectations.runner import Expect
from expectations.staged_opt_ins import PHONE_IS_E164, expect_e164


ROWS_SQL = f"""
SELECT event_id, event_type, channel, {PHONE_IS_E164}, acquisition_source, source_file, source_line
FROM consent_events
WHERE run_id = $run_id
ORDER BY source_file, source_line
"""


def build_suite() -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToNotBeNull", "Every event has its deterministic id.", "error", {"column": "event_id"}),
        Expect("ExpectColumnValuesToBeUnique", "An event is in the ledger once.", "error", {"column": "event_id"}),
        Expect("ExpectColumnValuesToBeInSet", "Event types come from the known set.", "error",
               {"column": "event_type", "value_set": list(EVENT_TYPES)}),
        Expect("ExpectColumnValuesToBeInSet", "Acquisition sources come from the known set.", "error",
               {"column": "acquisition_source", "value_set": list(ACQUISITION_SOURCES)}),
        expect_e164(),
        *[
            Expect("ExpectColumnValuesToNotBeNull", f"Every event keeps its lineage ({column}).", "error", {"column": column})
            for column in ("channel", "source_file", "source_line")
        ],
    ]
