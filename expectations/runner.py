"""Run a GX suite in the warehouse and report failing rows by lineage only.

Route chosen: GX's SQL execution engine on DuckDB (through
duckdb_engine), on the check's own connection, kept open for the whole
validation (GX 1.x otherwise reads results after closing the connection, which
DuckDB answers with nothing: GX issues #10738, #11579). Each suite selects the
rows it checks with SQL, restricted to the columns the suite and the lineage
need; the rows stay in DuckDB (no pandas frame: memory does not grow with the
rows validated). Unexpected values are dropped from the outcome: only the
failing rows' (source_file, source_line) are read from GX, so no phone number
leaves this module.

Suites are lists of `Expect` (a GX expectation class named, with its
arguments), turned into GX objects only when a suite has rows to validate:
GX is imported then, not when the pipeline is (a night with nothing new never
imports it, which keeps start-up short).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable

import duckdb


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
# Outcomes of the suites validated for each run's report folder, not yet written (`write_docs`).
_unreported: dict[str, list[SuiteOutcome]] = {}


def docs_folder(warehouse_file: str | Path, run_id: str) -> Path:
    """A run's data-quality report: `<warehouse folder>/data_docs/<run id>/index.html`."""
    return Path(warehouse_file).resolve().parent / "data_docs" / run_id


def write_docs(docs_dir: Path) -> Path | None:
    """Write the report of every suite validated for `docs_dir` and the index of all runs beside it,
    and let the run's GX context go; the report's page, or None when no suite ran (no page).

    Called once at the end of a run (`resources/finalise.py`). The pages are our own, self-contained
    (`expectations/report.py`): GX's Data Docs load their style and scripts from the network."""
    from expectations.report import write_run_report, write_runs_index

    _contexts.pop(str(docs_dir), None)
    outcomes = _unreported.pop(str(docs_dir), None)
    if not outcomes:
        return None
    page = write_run_report(docs_dir, outcomes)
    write_runs_index(docs_dir.parent)
    return page


class _QuietDiskFull(logging.Handler):
    """GX's records go on to the root logger's handlers as before, except those of a full disk (GX
    logs their tracebacks): the run reports a full disk once, in one line."""

    dropped = 0  # disk-full records dropped: GX logs some errors of a site build instead of raising

    def handle(self, record: logging.LogRecord) -> bool:
        from consent.storage.faults import is_disk_full

        error = record.exc_info[1] if record.exc_info else None
        if is_disk_full(error) or is_disk_full(record.getMessage()):
            type(self).dropped += 1
            return False
        root = logging.getLogger()
        if root.filter(record):
            root.callHandlers(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() forwards; nothing to emit here
        pass


def quiet_gx_disk_full() -> None:
    """Route every GX logger (created now or later, all below `great_expectations`) through the filter."""
    gx_logger = logging.getLogger("great_expectations")
    if not any(isinstance(h, _QuietDiskFull) for h in gx_logger.handlers):
        gx_logger.addHandler(_QuietDiskFull())
        gx_logger.propagate = False


def _context(docs_dir: Path | None):
    """One ephemeral GX context per run (per report folder), let go when the report is written."""
    key = str(docs_dir or "")
    if key in _contexts:
        return _contexts[key]
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    quiet_gx_disk_full()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    _contexts[key] = context
    return context


class _KeptConnection:
    """GX's SQL execution engine on one DuckDB connection, kept open for the whole validation.

    GX 1.x opens a connection per metric query and reads the rows after closing it; DuckDB drops
    a closed connection's pending rows, so every metric fails with an IndexError (GX issues #10738,
    #11579). Keeping the connection, as GX does for SQLite, fixes it; the engine is built on a
    duplicate of the check's own connection, so GX reads the warehouse that connection attached
    (and its encryption key and settings) without opening the file again."""

    def __init__(self, cursor):
        import sqlalchemy as sa
        from contextlib import contextmanager
        from duckdb_engine import ConnectionWrapper
        from great_expectations.execution_engine import SqlAlchemyExecutionEngine

        class Engine(SqlAlchemyExecutionEngine):
            @contextmanager
            def get_connection(self):
                if self._connection is None:
                    self._connection = self.engine.connect()
                yield self._connection

        self.engine = sa.create_engine("duckdb://", creator=lambda: ConnectionWrapper(cursor), poolclass=sa.pool.StaticPool)
        self.execution_engine = Engine(engine=self.engine, create_temp_table=False)

    def attach_to(self, datasource) -> None:
        """Make a fluent SQL datasource use this engine instead of building one from its connection string."""
        datasource._engine = self.engine
        datasource._cached_connection_string = datasource.connection_string
        datasource._execution_engine = self.execution_engine
        datasource._cached_execution_engine_kwargs = datasource.dict(
            exclude=datasource._get_exec_engine_excludes(), config_provider=datasource._config_provider,
            exclude_unset=False,
        )

    def close(self) -> None:
        if self.execution_engine._connection is not None:
            self.execution_engine._connection.close()
        self.engine.dispose()


def validate(
    con: duckdb.DuckDBPyConnection,
    query: str,
    build_suite: Callable[[], list[Expect]],
    name: str,
    docs_dir: Path | None = None,
    params: dict | None = None,
) -> SuiteOutcome:
    """Validate the rows `query` selects (on `con`, with `params`) against `build_suite()`.

    GX runs in the database (its SQL execution engine on DuckDB): the rows are materialised once
    in a temporary table of a duplicate of `con` and never pass through Python; GX reads back only
    counts and, for failing expectations, the lineage (`source_file`, `source_line`) of the first
    `MAX_LINEAGE_ROWS` failing rows, in lineage order.
    With `docs_dir`, the outcome goes into the run's report there (`write_docs`), with the other
    suites of the run.
    The query must select no raw phone numbers (GX holds unexpected values in its results).
    """
    expectations = build_suite()
    n = next(_names)
    table = f"gx_rows_{n}"
    cursor = con.cursor()
    try:
        catalog, schema = con.execute("SELECT current_database(), current_schema()").fetchone()
        cursor.execute(f"USE {_identifier(catalog)}.{_identifier(schema)}")
        cursor.execute(f"CREATE TEMP TABLE {table} AS {query}", params or {})
        columns = [row[0] for row in cursor.execute(f"DESCRIBE {table}").fetchall()]
        row_count = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if row_count == 0:
            # Nothing to validate (a night with nothing new): every expectation here is row by row and
            # holds on no rows. Reported as passed on 0 rows without importing or starting GX.
            outcome = SuiteOutcome(name, 0, [
                ExpectationOutcome(e.name, e.arguments.get("column"), e.description, e.severity, True, 0)
                for e in expectations
            ])
        else:
            outcome = SuiteOutcome(name, row_count, _run_suite(cursor, table, columns, expectations, name, n, docs_dir))
    finally:
        cursor.close()
    if docs_dir is not None:
        _unreported.setdefault(str(docs_dir), []).append(outcome)
    return outcome


def _run_suite(cursor, table: str, columns: list[str], expectations: list[Expect], name: str, n: int,
               docs_dir: Path | None) -> list[ExpectationOutcome]:
    import great_expectations as gx

    lineage_columns = [c for c in LINEAGE_COLUMNS if c in columns]
    suite = gx.ExpectationSuite(name=name, expectations=[e.to_gx() for e in expectations])
    context = _context(docs_dir)
    suite = context.suites.add_or_update(suite)
    engine = _KeptConnection(cursor)
    try:
        datasource = context.data_sources.add_sql(f"warehouse_{n}", connection_string="duckdb:///:memory:")
        engine.attach_to(datasource)
        batch_definition = (
            datasource.add_query_asset(name, query=f"SELECT * FROM {table}").add_batch_definition_whole_table(f"run_{n}")
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_{n}", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}_{n}",
                validation_definitions=[definition],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": MAX_LINEAGE_ROWS,
                    **({"unexpected_index_column_names": lineage_columns} if lineage_columns else {}),
                },
            )
        )
        run = checkpoint.run()
    finally:
        engine.close()
    ((_, result),) = run.run_results.items()
    outcomes = []
    for r in result.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            # Reported as failed (GX sets success False), never as passed.
            logging.getLogger(__name__).warning("GX could not evaluate %s in suite %s: %s", r.expectation_config.type,
                                                name, r.exception_info.get("exception_message"))
        found = (r.result or {}).get("partial_unexpected_index_list") or []
        # The first failing rows in the table's order (each suite's query orders by lineage).
        lineage = [{c: row.get(c) for c in lineage_columns} for row in found if isinstance(row, dict)][:MAX_LINEAGE_ROWS]
        outcomes.append(
            _outcome(r.expectation_config, bool(r.success), int((r.result or {}).get("unexpected_count") or 0), lineage)
        )
    return outcomes


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
