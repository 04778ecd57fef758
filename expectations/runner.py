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
from pathlib import Path
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


_contexts: dict[str, object] = {}


def _context(docs_dir: Path | None):
    """One ephemeral GX context per Data Docs folder, so a run's suites share one site index."""
    key = str(docs_dir or "")
    if key in _contexts:
        return _contexts[key]
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="run_docs",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    _contexts[key] = context
    return context


def validate(
    frame: pl.DataFrame, build_suite: Callable[[], object], name: str, docs_dir: Path | None = None
) -> SuiteOutcome:
    """Validate `frame` against the suite `build_suite()` returns.

    With `docs_dir`, GX Data Docs (static HTML) for the validation are written there.
    The frame must hold no raw phone numbers: GX renders unexpected values in its docs.
    """
    import great_expectations as gx

    suite = build_suite()
    if frame.height == 0:
        # Nothing to validate (a night with nothing new): every expectation here is row by row and
        # holds on no rows. Reported as passed on 0 rows without starting a GX validation, and
        # without a Data Docs page.
        return SuiteOutcome(name, 0, [_outcome(e.configuration, True, 0, []) for e in suite.expectations])
    # Arrow-backed columns: no Python object per cell (a 1M-row frame stays small and fast).
    pandas_frame = frame.to_pandas(use_pyarrow_extension_array=True)
    context = _context(docs_dir)
    n = next(_names)
    suite.name = f"{name}"
    suite = context.suites.add_or_update(suite)
    batch_definition = (
        context.data_sources.add_pandas(f"frames_{n}")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(f"run_{n}")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_{n}", data=batch_definition, suite=suite)
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["run_docs"])] if docs_dir else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{name}_{n}",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": pandas_frame})
    (result,) = run.run_results.values()
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        rows = (r.result or {}).get("unexpected_index_list") or []
        lineage = [
            {c: _plain(pandas_frame.iloc[i][c]) for c in LINEAGE_COLUMNS if c in pandas_frame.columns}
            for i in sorted(i for i in rows if isinstance(i, int))[:MAX_LINEAGE_ROWS]
        ]
        outcomes.append(
            _outcome(config, bool(r.success), int((r.result or {}).get("unexpected_count") or 0), lineage)
        )
    return SuiteOutcome(name, frame.height, outcomes)


def _outcome(config, success: bool, unexpected_count: int, lineage: list[dict]) -> ExpectationOutcome:
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        description=config.description or config.type,
        severity=(config.meta or {}).get("severity", "error"),
        success=success,
        unexpected_count=unexpected_count,
        failing_rows=lineage,
    )


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    # pandas turns integer columns with nulls into floats: give line numbers back as integers.
    return int(value) if isinstance(value, float) and value.is_integer() else value
