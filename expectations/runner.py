"""Run a GX suite on a Polars frame and report failing rows by lineage only.

Route chosen: GX 1.x has no Polars engine, and its SQL path on DuckDB (through
duckdb_engine) loses results when the connection closes mid-validation. So
the frame goes to pandas through Arrow, restricted to the columns the suite
and the lineage need, and GX validates it in an ephemeral context. Unexpected
values are dropped from the outcome: only row positions are read from GX and
turned into (source_file, source_line), so no phone number leaves this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import count
from typing import Callable

import polars as pl

LINEAGE_COLUMNS = ("source_file", "source_line")
MAX_LINEAGE_ROWS = 50
_names = count()


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    description: str
    severity: str
    success: bool
    unexpected_count: int
    failing_rows: list[dict] = field(default_factory=list)


@dataclass
class SuiteOutcome:
    suite: str
    row_count: int
    results: list[ExpectationOutcome]

    @property
    def errors(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "error"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity != "error"]

    @property
    def success(self) -> bool:
        return not self.errors


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate(frame: pl.DataFrame, build_suite: Callable[[], object], name: str) -> SuiteOutcome:
    """Validate `frame` against the suite `build_suite()` returns."""
    suite = build_suite()
    pandas_frame = frame.to_pandas(use_pyarrow_extension_array=False)
    if frame.height == 0:
        return SuiteOutcome(
            name, 0,
            [ExpectationOutcome(e.expectation_type, getattr(e, "column", None), e.description or "",
                                (e.meta or {}).get("severity", "error"), True, 0) for e in suite.expectations],
        )
    context = _context()
    n = next(_names)
    batch = (
        context.data_sources.add_pandas(f"frames_{n}")
        .add_dataframe_asset(f"{name}_{n}")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": pandas_frame})
    )
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 0})
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        rows = (r.result or {}).get("unexpected_index_list") or []
        lineage = [
            {c: _plain(pandas_frame.iloc[i][c]) for c in LINEAGE_COLUMNS if c in pandas_frame.columns}
            for i in rows[:MAX_LINEAGE_ROWS]
            if isinstance(i, int)
        ]
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column"),
                description=config.description or config.type,
                severity=(config.meta or {}).get("severity", "error"),
                success=bool(r.success),
                unexpected_count=int((r.result or {}).get("unexpected_count") or 0),
                failing_rows=lineage,
            )
        )
    return SuiteOutcome(name, frame.height, outcomes)


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    # pandas turns integer columns with nulls into floats: give line numbers back as integers.
    return int(value) if isinstance(value, float) and value.is_integer() else value
