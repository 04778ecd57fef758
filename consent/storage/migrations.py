"""Schema versions: a warehouse written by an earlier version opens in this one.

The warehouse records its version in `schema_version`. A new warehouse is
created at the latest version from `consent/domain/schema.py`. An older one is
migrated in place, one step after the other, all inside one transaction: a
failed migration leaves the file as it was. A warehouse without
`schema_version` but with a ledger was written before versions existed:
that layout is version 1.

To change a table: edit it in `consent/domain/schema.py`, append a step here
(version, what it does) with its statements in
`consent/storage/sql/migrations/v<version>.sql` (and, for what SQL alone cannot
say, a Python step `then`), and add a test against the version-1 fixture in
`tests/fixtures/warehouse_v1/`.

A run's scratch tables are in the schema `staging` (`staging.stg_*`), created
with the warehouse; `main` holds the published tables and the marts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import duckdb

from consent.storage import sql
from consent.storage.db import table_exists, transaction
from consent.storage.dictionary import published, set_comments
from consent.domain.schema import TABLES
from consent.storage.ducklake import is_lake_connection, without_constraints


def _steps(version: int) -> tuple[str, ...]:
    """A step's statements: consent/storage/sql/migrations/v<version>.sql, run in order."""
    return sql.statements(f"migrations/v{version:02d}")


def move_scratch_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Every `main.stg_*` table into the schema `staging`, with its rows (DuckDB has no
    `ALTER TABLE ... SET SCHEMA`): a copy, then the table dropped."""
    names = [name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND NOT temporary AND starts_with(table_name, 'stg_') ORDER BY table_name").fetchall()]
    for name in names:
        con.execute(f'CREATE TABLE staging."{name}" AS FROM main."{name}"')
        con.execute(f'DROP TABLE main."{name}"')


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # What SQL alone cannot say (the tables a warehouse happens to hold), run after the statements.
    then: Callable[[duckdb.DuckDBPyConnection], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "runs.failure_reason: why a run failed, recorded by the run itself",
        _steps(2),
    ),
    Migration(
        3,
        "who consented to whom: business and WhatsApp user IDs on events, statuses, history, violations, "
        "sends and notices; statuses keyed by business, contact and purpose; identifier_links (existing rows "
        "belong to business 'default')",
        _steps(3),
    ),
    Migration(
        4,
        "before every campaign: send_checks and send_check_rows (the log of pre-send audience checks)",
        _steps(4),
    ),
    Migration(
        5,
        "nights that cost what is new: mart_builds records which run each mart reflects (none yet: the next "
        "build is whole); the ledger keeps unique event ids without a primary-key index (append_ledger.sql "
        "and an ERROR check keep them unique)",
        _steps(5),
    ),
    Migration(
        6,
        "ten million events on one machine: consent_status and consent_violations keep one row per key "
        "without a primary-key index (built in memory on every full run; an ERROR check keeps them unique)",
        _steps(6),
    ),
    Migration(
        7,
        "ten million events on one machine: phone_cache keeps one row per key without a primary-key index "
        "(its checkpoint rewrote the whole index every night; the insert adds only keys not cached)",
        _steps(7),
    ),
    Migration(
        8,
        "ten million events on one machine: consent_status_history keeps the channels of its deciding and "
        "consent events (decided_by_channel, consent_channel), filled from the ledger (consent_daily joined "
        "every history row to the ledger twice)",
        _steps(8),
    ),
    Migration(
        9,
        "ten million events on one machine: quarantine, skipped_items and message_statuses keep one row per "
        "id without a primary-key index (rewritten whole at every checkpoint; append_ledger.sql adds only ids "
        "a table does not hold, and an ERROR check keeps them unique)",
        _steps(9),
    ),
    Migration(
        10,
        "suppression_list.national_hash: the salted hash of an erased number's national digits, so free text "
        "naming it in any spelling is recognised at import (rows erased before keep only their E.164 hash)",
        _steps(10),
    ),
    Migration(
        11,
        "a data dictionary in the database: every published table and column carries a comment "
        "(COMMENT ON, from consent/domain/tables.yml); no table or row changes",
        _steps(11),  # only comments: set after every migration (`ensure_schema`), from the dictionary
    ),
    Migration(
        12,
        "scratch tables in their own schema: a run's staging tables (`stg_*`) move from `main` to `staging` "
        "with their rows; `main` holds the published tables and the marts only",
        _steps(12),
        move_scratch_tables,
    ),
    Migration(
        13,
        "quarantine and skipped_items per business: a `business` column, filled for the rows read before "
        "from the events of the same file when they name one business (else null: not attributed)",
        _steps(13),
    ),
)
LATEST = MIGRATIONS[-1].version if MIGRATIONS else 1
# Where a run's scratch tables live (`staging.stg_*`, written by consent.run); published ones are in `main`.
SCRATCH_SCHEMA = "CREATE SCHEMA IF NOT EXISTS staging"


class WarehouseOutdated(Exception):
    """A read-only connection found a warehouse older than this code (it cannot migrate it)."""


def current_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The warehouse's schema version; None for an empty file."""
    if table_exists(con, "schema_version"):
        return con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return 1 if table_exists(con, "consent_events") else None


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create a new warehouse at the latest version, or migrate an older one in place."""
    try:  # the common case, in one query: a warehouse already at this version
        if con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST:
            return
    except duckdb.CatalogException:
        pass
    version = current_version(con)
    if version == LATEST:
        return
    if version is not None and version > LATEST:
        raise WarehouseOutdated(
            f"the warehouse has schema version {version}, newer than this code knows ({LATEST}): upgrade the pipeline"
        )
    # DuckLake has no key constraints: the same tables without them (uniqueness kept by the writes).
    ddl = without_constraints if is_lake_connection(con) else (lambda sql: sql)
    with transaction(con):
        con.execute(ddl(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL)"
        ))
        if version is None:
            for table in TABLES:
                con.execute(ddl(table.ddl()))
            con.execute(SCRATCH_SCHEMA)
            _record(con, LATEST, "created at this version")
            set_comments(con, list(published().values()))
            return
        if version == 1:
            _record(con, 1, "the layout written before schema versions")
        for migration in MIGRATIONS:
            if migration.version > version:
                for statement in migration.statements:
                    con.execute(ddl(statement))
                if migration.then is not None:
                    migration.then(con)
                _record(con, migration.version, migration.description)
        # Tables added since the warehouse was written.
        for table in TABLES:
            con.execute(ddl(table.ddl()))
        # A migration may have recreated a table (dropping its comments): every comment is set again.
        set_comments(con, list(published().values()))


def require_current(con: duckdb.DuckDBPyConnection, older_ok: bool = False) -> None:
    """For read-only connections: refuse a warehouse that needs migrating, with what to do.
    `older_ok`: a DuckLake snapshot taken before a migration is read in the layout it had then
    (migrating the catalog never changes an old snapshot); only a newer one is refused."""
    version = current_version(con)
    if version is not None and (version > LATEST if older_ok else version != LATEST):
        raise WarehouseOutdated(
            f"the warehouse has schema version {version}, this code expects {LATEST}: "
            "run `consent migrate` (or any `consent run`) once to migrate it in place"
        )


def _record(con: duckdb.DuckDBPyConnection, version: int, description: str) -> None:
    con.execute(
        "INSERT INTO schema_version (version, description, applied_at) SELECT $version, $description, now()::TIMESTAMP "
        "WHERE NOT EXISTS (SELECT 1 FROM schema_version WHERE version = $version)",
        {"version": version, "description": description},
    )
