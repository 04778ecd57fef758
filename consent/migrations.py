"""Schema versions: a warehouse written by an earlier version opens in this one.

The warehouse records its version in `schema_version`. A new warehouse is
created at the latest version from `consent/schema.py`. An older one is
migrated in place, one step after the other, all inside one transaction: a
failed migration leaves the file as it was. A warehouse without
`schema_version` but with a ledger was written before versions existed:
that layout is version 1.

To change a table: edit it in `consent/schema.py`, append a step here
(version, what it does, its statements), and add a test against the
version-1 fixture in `tests/fixtures/warehouse_v1/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from consent.db import table_exists, transaction
from consent.schema import TABLES


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "runs.failure_reason: why a run failed, recorded by the run itself",
        ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS failure_reason VARCHAR",),
    ),
)
LATEST = MIGRATIONS[-1].version if MIGRATIONS else 1


class WarehouseOutdated(Exception):
    """A read-only connection found a warehouse older than this code (it cannot migrate it)."""


def current_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The warehouse's schema version; None for an empty file."""
    if table_exists(con, "schema_version"):
        return con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return 1 if table_exists(con, "consent_events") else None


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create a new warehouse at the latest version, or migrate an older one in place."""
    version = current_version(con)
    if version == LATEST:
        return
    if version is not None and version > LATEST:
        raise WarehouseOutdated(
            f"the warehouse has schema version {version}, newer than this code knows ({LATEST}): upgrade the pipeline"
        )
    with transaction(con):
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL)"
        )
        if version is None:
            for table in TABLES:
                con.execute(table.ddl())
            _record(con, LATEST, "created at this version")
            return
        if version == 1:
            _record(con, 1, "the layout written before schema versions")
        for migration in MIGRATIONS:
            if migration.version > version:
                for statement in migration.statements:
                    con.execute(statement)
                _record(con, migration.version, migration.description)
        # Tables added since the warehouse was written.
        for table in TABLES:
            con.execute(table.ddl())


def require_current(con: duckdb.DuckDBPyConnection) -> None:
    """For read-only connections: refuse a warehouse that needs migrating, with what to do."""
    version = current_version(con)
    if version is not None and version != LATEST:
        raise WarehouseOutdated(
            f"the warehouse has schema version {version}, this code expects {LATEST}: "
            "run `consent migrate` (or any `consent run`) once to migrate it in place"
        )


def _record(con: duckdb.DuckDBPyConnection, version: int, description: str) -> None:
    con.execute(
        "INSERT OR IGNORE INTO schema_version (version, description, applied_at) VALUES (?, ?, now()::TIMESTAMP)",
        [version, description],
    )
