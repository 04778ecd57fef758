"""Schema versions: a warehouse written by an earlier version opens in this one.

The warehouse records its version in `schema_version`. A new warehouse is
created at the latest version from `consent/domain/schema.py`. An older one is
migrated in place, one step after the other, all inside one transaction: a
failed migration leaves the file as it was. A warehouse without
`schema_version` but with a ledger was written before versions existed:
that layout is version 1.

To change a table: edit it in `consent/domain/schema.py`, append a step here
(version, what it does, its statements), and add a test against the
version-1 fixture in `tests/fixtures/warehouse_v1/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from consent.storage.db import table_exists, transaction
from consent.storage.dictionary import published, set_comments
from consent.domain.schema import TABLES


def _add_business(table: str) -> tuple[str, ...]:
    """A NOT NULL `business` column; the rows already there belong to the one business, `default`."""
    return (
        f"ALTER TABLE {table} ADD COLUMN business VARCHAR DEFAULT 'default'",
        f"ALTER TABLE {table} ALTER COLUMN business DROP DEFAULT",
        f"ALTER TABLE {table} ALTER COLUMN business SET NOT NULL",
    )


def _without_key(table: str, version: int, columns: str) -> tuple[str, ...]:
    """`table` recreated with `columns` (its layout, without the primary key), every row kept."""
    return (
        f"CREATE TABLE {table}__v{version} ({columns})",
        f"INSERT INTO {table}__v{version} BY NAME SELECT * FROM {table}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}__v{version} RENAME TO {table}",
    )


# The columns the quarantine and the skipped items share after their id (schema version 9).
_REJECT_COLUMNS_V9 = (
    "channel VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT, source_pointer VARCHAR, "
    "file_hash VARCHAR NOT NULL, raw_row VARCHAR, reason VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL, "
    "run_id VARCHAR NOT NULL"
)


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
    Migration(
        3,
        "who consented to whom: business and WhatsApp user IDs on events, statuses, history, violations, "
        "sends and notices; statuses keyed by business, contact and purpose; identifier_links "
        "(existing rows belong to business 'default')",
        (
            # New tables first: DuckDB cannot create an index after updates in the same transaction.
            """CREATE TABLE IF NOT EXISTS identifier_links (
                link_id VARCHAR NOT NULL, business VARCHAR NOT NULL, phone_e164 VARCHAR, whatsapp_user_id VARCHAR,
                parent_user_id VARCHAR, previous_user_id VARCHAR, linked_at TIMESTAMP NOT NULL, event_id VARCHAR,
                channel VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT, source_pointer VARCHAR,
                ingested_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL, PRIMARY KEY (link_id))""",
            # The status key changes; status, history and violations are rebuilt with every row.
            """CREATE TABLE consent_status__v3 (
                phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, sendable BOOLEAN NOT NULL,
                status_since TIMESTAMP, consent_method VARCHAR, consent_at TIMESTAMP, channel VARCHAR,
                notice_version VARCHAR, event_id VARCHAR, source_file VARCHAR, source_line BIGINT,
                opted_out_at TIMESTAMP, opt_out_channel VARCHAR, opt_out_event_id VARCHAR,
                decided_by_event_id VARCHAR, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
                whatsapp_user_id VARCHAR, PRIMARY KEY (business, contact_id, purpose))""",
            """CREATE TABLE consent_status_history__v3 (
                phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, valid_from TIMESTAMP NOT NULL,
                valid_to TIMESTAMP, decided_by_event_id VARCHAR, consent_event_id VARCHAR, consent_method VARCHAR,
                consent_at TIMESTAMP, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL)""",
            """CREATE TABLE consent_violations__v3 (
                event_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, severity VARCHAR NOT NULL, refused BOOLEAN NOT NULL,
                phone_e164 VARCHAR, channel VARCHAR, event_type VARCHAR, purposes VARCHAR[], occurred_at TIMESTAMP,
                source_file VARCHAR, source_line BIGINT, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
                PRIMARY KEY (event_id, rule))""",
            *(
                f"INSERT INTO {table}__v3 BY NAME SELECT *, 'default' AS business, phone_e164 AS contact_id FROM {table}"
                for table in ("consent_status", "consent_status_history", "consent_violations")
            ),
            *_add_business("consent_events"),
            "ALTER TABLE consent_events ADD COLUMN whatsapp_user_id VARCHAR",
            "ALTER TABLE consent_events ADD COLUMN parent_user_id VARCHAR",
            "ALTER TABLE consent_events ADD COLUMN changed_to VARCHAR",
            "ALTER TABLE consent_events ALTER COLUMN phone_e164 DROP NOT NULL",
            "DROP TABLE consent_status",
            "ALTER TABLE consent_status__v3 RENAME TO consent_status",
            "DROP TABLE consent_status_history",
            "ALTER TABLE consent_status_history__v3 RENAME TO consent_status_history",
            "DROP TABLE consent_violations",
            "ALTER TABLE consent_violations__v3 RENAME TO consent_violations",
            "ALTER TABLE message_statuses ADD COLUMN business VARCHAR DEFAULT 'default'",
            "ALTER TABLE message_statuses ALTER COLUMN business DROP DEFAULT",
            "ALTER TABLE message_statuses ADD COLUMN recipient_user_id VARCHAR",
            "ALTER TABLE message_statuses ALTER COLUMN recipient_e164 DROP NOT NULL",
            "ALTER TABLE consent_notices ADD COLUMN business VARCHAR",
        ),
    ),
    Migration(
        4,
        "before every campaign: send_checks and send_check_rows (the log of pre-send audience checks)",
        (
            """CREATE TABLE IF NOT EXISTS send_checks (
                check_id VARCHAR NOT NULL, audience_file VARCHAR NOT NULL, audience_hash VARCHAR NOT NULL,
                purpose VARCHAR NOT NULL, business VARCHAR NOT NULL, status_at TIMESTAMP NOT NULL,
                checked_at TIMESTAMP NOT NULL, rows_checked BIGINT NOT NULL, sendable BIGINT NOT NULL,
                blocked BIGINT NOT NULL, reasons JSON, run_id VARCHAR, PRIMARY KEY (check_id))""",
            """CREATE TABLE IF NOT EXISTS send_check_rows (
                check_id VARCHAR NOT NULL, row_number BIGINT NOT NULL, recipient_hash VARCHAR,
                decision VARCHAR NOT NULL, reason VARCHAR NOT NULL, PRIMARY KEY (check_id, row_number))""",
        ),
    ),
    Migration(
        5,
        "nights that cost what is new: mart_builds records which run each mart reflects (none yet: the next "
        "build is whole); the ledger keeps unique event ids without a primary-key index (append_ledger.sql "
        "and an ERROR check keep them unique)",
        (
            """CREATE TABLE consent_events__v5 (
                event_id VARCHAR NOT NULL, channel VARCHAR NOT NULL, event_type VARCHAR NOT NULL, phone_raw VARCHAR,
                country_hint VARCHAR, phone_e164 VARCHAR, phone_region VARCHAR, phone_type VARCHAR,
                purposes VARCHAR[], occurred_at TIMESTAMP, consent_method VARCHAR, notice_version VARCHAR,
                checkbox_pre_ticked BOOLEAN, bundled_with_terms BOOLEAN, acquisition_source VARCHAR,
                evidence_ref VARCHAR, source_file VARCHAR NOT NULL, source_line BIGINT NOT NULL,
                source_pointer VARCHAR, file_hash VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL,
                run_id VARCHAR NOT NULL, warnings VARCHAR[], business VARCHAR NOT NULL, whatsapp_user_id VARCHAR,
                parent_user_id VARCHAR, changed_to VARCHAR)""",
            "INSERT INTO consent_events__v5 BY NAME SELECT * FROM consent_events",
            "DROP TABLE consent_events",
            "ALTER TABLE consent_events__v5 RENAME TO consent_events",
            """CREATE TABLE IF NOT EXISTS mart_builds (
                mart VARCHAR NOT NULL, run_id VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, mode VARCHAR NOT NULL,
                built_at TIMESTAMP NOT NULL, PRIMARY KEY (mart))""",
        ),
    ),
    Migration(
        6,
        "ten million events on one machine: consent_status and consent_violations keep one row per key "
        "without a primary-key index (built in memory on every full run; an ERROR check keeps them unique)",
        (
            """CREATE TABLE consent_status__v6 (
                phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, sendable BOOLEAN NOT NULL,
                status_since TIMESTAMP, consent_method VARCHAR, consent_at TIMESTAMP, channel VARCHAR,
                notice_version VARCHAR, event_id VARCHAR, source_file VARCHAR, source_line BIGINT,
                opted_out_at TIMESTAMP, opt_out_channel VARCHAR, opt_out_event_id VARCHAR,
                decided_by_event_id VARCHAR, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
                whatsapp_user_id VARCHAR)""",
            "INSERT INTO consent_status__v6 BY NAME SELECT * FROM consent_status",
            "DROP TABLE consent_status",
            "ALTER TABLE consent_status__v6 RENAME TO consent_status",
            """CREATE TABLE consent_violations__v6 (
                event_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, severity VARCHAR NOT NULL, refused BOOLEAN NOT NULL,
                phone_e164 VARCHAR, channel VARCHAR, event_type VARCHAR, purposes VARCHAR[], occurred_at TIMESTAMP,
                source_file VARCHAR, source_line BIGINT, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL)""",
            "INSERT INTO consent_violations__v6 BY NAME SELECT * FROM consent_violations",
            "DROP TABLE consent_violations",
            "ALTER TABLE consent_violations__v6 RENAME TO consent_violations",
        ),
    ),
    Migration(
        7,
        "ten million events on one machine: phone_cache keeps one row per key without a primary-key index "
        "(its checkpoint rewrote the whole index every night; the insert adds only keys not cached)",
        (
            """CREATE TABLE phone_cache__v7 (
                phone_raw VARCHAR NOT NULL, country_hint VARCHAR NOT NULL, metadata_version VARCHAR NOT NULL,
                phone_e164 VARCHAR, phone_region VARCHAR, phone_type VARCHAR, invalid_reason VARCHAR)""",
            "INSERT INTO phone_cache__v7 BY NAME SELECT * FROM phone_cache",
            "DROP TABLE phone_cache",
            "ALTER TABLE phone_cache__v7 RENAME TO phone_cache",
        ),
    ),
    Migration(
        8,
        "ten million events on one machine: consent_status_history keeps the channels of its deciding and "
        "consent events (decided_by_channel, consent_channel), filled from the ledger (consent_daily joined "
        "every history row to the ledger twice)",
        (
            """CREATE TABLE consent_status_history__v8 (
                phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, valid_from TIMESTAMP NOT NULL,
                valid_to TIMESTAMP, decided_by_event_id VARCHAR, consent_event_id VARCHAR, consent_method VARCHAR,
                consent_at TIMESTAMP, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
                decided_by_channel VARCHAR, consent_channel VARCHAR)""",
            # One channel per event id (the ledger holds each id once; grouped so a row is never doubled).
            """INSERT INTO consent_status_history__v8 BY NAME
               WITH channels AS (SELECT event_id, any_value(channel) AS channel FROM consent_events GROUP BY event_id)
               SELECT h.*, d.channel AS decided_by_channel, c.channel AS consent_channel
               FROM consent_status_history AS h
               LEFT JOIN channels AS d ON d.event_id = h.decided_by_event_id
               LEFT JOIN channels AS c ON c.event_id = h.consent_event_id""",
            "DROP TABLE consent_status_history",
            "ALTER TABLE consent_status_history__v8 RENAME TO consent_status_history",
            # A run's copy of the rows it replaced has the old columns: the next run writes it again
            # (until then, marts are rebuilt whole).
            "DROP TABLE IF EXISTS stg_replaced_history",
        ),
    ),
    Migration(
        9,
        "ten million events on one machine: quarantine, skipped_items and message_statuses keep one row per "
        "id without a primary-key index (rewritten whole at every checkpoint; append_ledger.sql adds only ids "
        "a table does not hold, and an ERROR check keeps them unique)",
        (
            *_without_key("quarantine", 9, f"quarantine_id VARCHAR NOT NULL, {_REJECT_COLUMNS_V9}"),
            *_without_key("skipped_items", 9, f"skipped_id VARCHAR NOT NULL, {_REJECT_COLUMNS_V9}"),
            *_without_key("message_statuses", 9, """
                message_id VARCHAR NOT NULL, status VARCHAR NOT NULL, status_at TIMESTAMP, recipient_e164 VARCHAR,
                pricing_category VARCHAR, error_codes BIGINT[], source_file VARCHAR NOT NULL, source_line BIGINT,
                source_pointer VARCHAR, ingested_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL, business VARCHAR,
                recipient_user_id VARCHAR"""),
        ),
    ),
    Migration(
        10,
        "suppression_list.national_hash: the salted hash of an erased number's national digits, so free text "
        "naming it in any spelling is recognised at import (rows erased before keep only their E.164 hash)",
        ("ALTER TABLE suppression_list ADD COLUMN IF NOT EXISTS national_hash VARCHAR",),
    ),
    Migration(
        11,
        "a data dictionary in the database: every published table and column carries a comment "
        "(COMMENT ON, from consent/domain/tables.yml); no table or row changes",
        # the comments are set after every migration (`ensure_schema`), from the dictionary as it is then
        (),
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
    with transaction(con):
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL)"
        )
        if version is None:
            for table in TABLES:
                con.execute(table.ddl())
            _record(con, LATEST, "created at this version")
            set_comments(con, list(published().values()))
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
        # A migration may have recreated a table (dropping its comments): every comment is set again.
        set_comments(con, list(published().values()))


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
