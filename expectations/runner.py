"""Run a GX suite on a Polars frame and report failing rows by lineage only.

Route chosen: GX 1.x has no Polars engine, and its SQL path on DuckDB (through
duckdb_engine) loses results when the connection closes mid-validation. So
the frame goes to pandas through Arrow, restricted to the columns the suite
and the lineage need, and GX validates it in an ephemeral context. Unexpected
values are dropped from the outcome: only row positions are read from GX and
turned into (source_file, source_line), so no phone number leaves this module.

Suites are lists of `Expect` (a GX expectation class named, with its
arguments), turned into GX objects only when a suite has rows to validate:
GX is imported then, not when the pipeline is (a night with nothing new never
imports it; start-up, issue 16).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable

import polars as pl


@dataclass(frozen=True)
class Expect:
    """One expectation: `kind` is the GX class (`gx.expectations.<kind>`), `arguments` its own."""

    kind: str
    description: str
    severity: str
    arguments: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """GX's name of the expectation type (ExpectColumnValuesToBeInSet -> expect_column_values_to_be_in_set)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.kind).lower()

    def to_gx(self):
        import great_expectations as gx

        return getattr(gx.expectations, self.kind)(
            **self.arguments, description=self.description, meta={"severity": self.severity, **self.meta}
        )


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
# Validations of each Data Docs folder not yet rendered (`write_docs`).
_undocumented: dict[str, list] = {}


def docs_folder(warehouse_file: str | Path, run_id: str) -> Path:
    """GX Data Docs of a run: `<warehouse folder>/data_docs/<run id>/index.html`."""
    return Path(warehouse_file).resolve().parent / "data_docs" / run_id


def write_docs(docs_dir: Path) -> Path | None:
    """Render the Data Docs of every suite validated for `docs_dir`, in one build, and let the run's
    GX context go; the index page, or None when nothing was validated (no GX started, no page).

    Called once at the end of a run (`pipelines/finalise.py`): building the site once, not after each
    suite, renders each page once (at a night's size the pages cost more than the validations)."""
    identifiers = _undocumented.pop(str(docs_dir), None)
    context = _contexts.pop(str(docs_dir), None)
    if not identifiers or context is None:
        return None
    context.build_data_docs(site_names=["run_docs"], resource_identifiers=identifiers)
    return docs_dir / "index.html"


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
    frame: pl.DataFrame, build_suite: Callable[[], list[Expect]], name: str, docs_dir: Path | None = None
) -> SuiteOutcome:
    """Validate `frame` against the expectations `build_suite()` returns.

    With `docs_dir`, GX Data Docs (static HTML) of the validation are written there by
    `write_docs`, with the other suites of the run.
    The frame must hold no raw phone numbers: GX renders unexpected values in its docs.
    """
    expectations = build_suite()
    if frame.height == 0:
        # Nothing to validate (a night with nothing new): every expectation here is row by row and
        # holds on no rows. Reported as passed on 0 rows without importing or starting GX, and
        # without a Data Docs page.
        return SuiteOutcome(name, 0, [
            ExpectationOutcome(e.name, e.arguments.get("column"), e.description, e.severity, True, 0)
            for e in expectations
        ])
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name, expectations=[e.to_gx() for e in expectations])
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
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{name}_{n}",
            validation_definitions=[definition],
            result_format={"result_format": "COMPLETE"},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": pandas_frame})
    ((identifier, result),) = run.run_results.items()
    if docs_dir is not None:
        from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

        _undocumented.setdefault(str(docs_dir), []).extend([identifier, ExpectationSuiteIdentifier(name=suite.name)])
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
