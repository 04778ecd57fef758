"""Every warehouse table's columns, defined once.

The Polars frames the domain builds and the DuckDB DDL the warehouse runs
both come from the `Table`s here, so a column is added in one place. Writes
go by column name (`INSERT ... BY NAME`), never by position. Changing a table
of an existing warehouse also needs a step in `consent/storage/migrations.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

TEXT, INT, BOOL, TIME = pl.Utf8, pl.Int64, pl.Boolean, pl.Datetime("us")
TEXTS, INTS = pl.List(pl.Utf8), pl.List(pl.Int64)


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, pl.DataType]
    primary_key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    # Columns stored as DuckDB JSON (text on the Polars side).
    json: tuple[str, ...] = ()

    def column_sql(self, column: str) -> str:
        sql = f"{column} {'JSON' if column in self.json else duckdb_type(self.columns[column])}"
        return sql + (" NOT NULL" if column in self.not_null else "")

    def ddl(self) -> str:
        parts = [self.column_sql(c) for c in self.columns]
        if self.primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    " + ",\n    ".join(parts) + "\n)"

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.columns)


def duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List):
        return duckdb_type(dtype.inner) + "[]"
    return {pl.Utf8: "VARCHAR", pl.Int64: "BIGINT", pl.Boolean: "BOOLEAN"}.get(dtype) or (
        "TIMESTAMP" if isinstance(dtype, pl.Datetime) else _unknown(dtype)
    )


def _unknown(dtype: pl.DataType) -> str:
    raise TypeError(f"no DuckDB type for {dtype}")


_REJECT_COLUMNS = {
    "channel": TEXT, "source_file": TEXT, "source_line": INT, "source_pointer": TEXT, "file_hash": TEXT,
    "raw_row": TEXT, "reason": TEXT, "ingested_at": TIME, "run_id": TEXT,
    # Schema version 13: the business the row is for, when the file or the row names one (null:
    # not attributed, e.g. a webhook line that cannot be read or names a number no business claims).
    "business": TEXT,
}
_REJECT_NOT_NULL = ("channel", "source_file", "file_hash", "reason", "ingested_at", "run_id")

CONSENT_EVENTS = Table(
    "consent_events",
    {
        "event_id": TEXT, "channel": TEXT, "event_type": TEXT, "phone_raw": TEXT, "country_hint": TEXT,
        "phone_e164": TEXT, "phone_region": TEXT, "phone_type": TEXT, "purposes": TEXTS, "occurred_at": TIME,
        "consent_method": TEXT, "notice_version": TEXT, "checkbox_pre_ticked": BOOL, "bundled_with_terms": BOOL,
        "acquisition_source": TEXT, "evidence_ref": TEXT, "source_file": TEXT, "source_line": INT,
        "source_pointer": TEXT, "file_hash": TEXT, "ingested_at": TIME, "run_id": TEXT, "warnings": TEXTS,
        # Schema version 3: who consented to whom. The business the event is for; the person's
        # business-scoped user ID and parent BSUID (an event may carry no phone number at all);
        # for a number change, the new number (E.164).
        "business": TEXT, "whatsapp_user_id": TEXT, "parent_user_id": TEXT, "changed_to": TEXT,
    },
    # No primary key (schema version 5): event ids are unique by construction (append_ledger.sql
    # adds only ids the ledger does not hold) and checked every run (ERROR check
    # `ledger_rows_are_well_formed`). DuckDB rewrites a primary key's index whole at every
    # checkpoint: 3 s a night on a 5M-event ledger, growing with it.
    not_null=("event_id", "channel", "event_type", "source_file", "source_line", "file_hash",
              "ingested_at", "run_id", "business"),
)
# No primary key on the quarantine, the skipped items and the message statuses (schema version 9):
# one row per id (per message and status) is kept by append_ledger.sql, which adds only ids the
# table does not hold, and checked every run (ERROR check `ledger_rows_are_well_formed`). DuckDB
# rewrote each key's whole index at the checkpoint of every night that added a row (at 5M events:
# 0.5 s a night for the three, growing with them).
QUARANTINE = Table(
    "quarantine", {"quarantine_id": TEXT, **_REJECT_COLUMNS},
    not_null=("quarantine_id", *_REJECT_NOT_NULL),
)
SKIPPED_ITEMS = Table(
    "skipped_items", {"skipped_id": TEXT, **_REJECT_COLUMNS},
    not_null=("skipped_id", *_REJECT_NOT_NULL),
)
CONSENT_STATUS = Table(
    "consent_status",
    {
        "phone_e164": TEXT, "purpose": TEXT, "status": TEXT, "sendable": BOOL, "status_since": TIME,
        "consent_method": TEXT, "consent_at": TIME, "channel": TEXT, "notice_version": TEXT, "event_id": TEXT,
        "source_file": TEXT, "source_line": INT, "opted_out_at": TIME, "opt_out_channel": TEXT,
        "opt_out_event_id": TEXT, "decided_by_event_id": TEXT,
        # Schema version 3: per business; the contact is its phone number, or its BSUID while no
        # number is linked to it (then phone_e164 is null).
        "business": TEXT, "contact_id": TEXT, "whatsapp_user_id": TEXT,
    },
    # No primary key (schema version 6), nor on consent_violations: DuckDB builds a key's index in
    # memory, and a full run rewrites these tables whole (at 5M events the two indexes took 775 MB
    # of the publishing transaction, growing with the contacts). Rows are unique by construction
    # (a contact is decided in one range, after its old rows are deleted) and checked every run
    # (ERROR check `opted_in_rows_have_evidence`, on the contacts the run decided).
    not_null=("business", "contact_id", "purpose", "status", "sendable"),
)
CONSENT_STATUS_HISTORY = Table(
    "consent_status_history",
    {
        "phone_e164": TEXT, "purpose": TEXT, "status": TEXT, "valid_from": TIME, "valid_to": TIME,
        "decided_by_event_id": TEXT, "consent_event_id": TEXT, "consent_method": TEXT, "consent_at": TIME,
        "business": TEXT, "contact_id": TEXT,
        # Schema version 8: the channels of those two events, as the ledger has them, written when the
        # row is decided (the marts counted them by joining every row to the ledger twice).
        "decided_by_channel": TEXT, "consent_channel": TEXT,
    },
    not_null=("business", "contact_id", "purpose", "status", "valid_from"),
)
CONSENT_VIOLATIONS = Table(
    "consent_violations",
    {
        "event_id": TEXT, "rule": TEXT, "severity": TEXT, "refused": BOOL, "phone_e164": TEXT, "channel": TEXT,
        "event_type": TEXT, "purposes": TEXTS, "occurred_at": TIME, "source_file": TEXT, "source_line": INT,
        "business": TEXT, "contact_id": TEXT,
    },
    not_null=("event_id", "rule", "severity", "refused", "business", "contact_id"),
)
SOURCE_FILES = Table(
    "source_files",
    {
        "channel": TEXT, "source_file": TEXT, "file_hash": TEXT, "size_bytes": INT, "first_seen_run": TEXT,
        "last_seen_run": TEXT, "rows_read": INT, "events": INT, "new_events": INT, "quarantined": INT,
        "skipped": INT, "events_no_longer_in_file": INT, "notes": TEXTS,
    },
    primary_key=("channel", "source_file", "file_hash"),
    not_null=("channel", "source_file", "file_hash", "first_seen_run", "last_seen_run"),
)
FILE_FINGERPRINTS = Table(
    "file_fingerprints",
    {"source_file": TEXT, "size_bytes": INT, "mtime_ns": INT, "file_hash": TEXT},
    primary_key=("source_file", "size_bytes", "mtime_ns"),
    not_null=("source_file", "size_bytes", "mtime_ns", "file_hash"),
)
MESSAGE_STATUSES = Table(
    "message_statuses",
    {
        "message_id": TEXT, "status": TEXT, "status_at": TIME, "recipient_e164": TEXT, "pricing_category": TEXT,
        "error_codes": INTS, "source_file": TEXT, "source_line": INT, "source_pointer": TEXT, "ingested_at": TIME,
        "run_id": TEXT,
        # Schema version 3: the business that sent it; the recipient's BSUID (a message sent to a
        # BSUID may report no number).
        "business": TEXT, "recipient_user_id": TEXT,
    },
    # No primary key (schema version 9; see QUARANTINE): one row per message and status.
    not_null=("message_id", "status", "source_file", "ingested_at", "run_id"),
)
NOTICE_COLUMNS = {
    "notice_version": TEXT, "notice_text": TEXT, "business_name": TEXT, "channels": TEXTS, "purposes": TEXTS,
    "frequency": TEXT, "opt_out_instructions": TEXT, "privacy_policy_url": TEXT, "valid_from": TIME,
    "valid_until": TIME, "names_business": BOOL, "mentions_whatsapp": BOOL, "says_how_to_opt_out": BOOL,
    "content_hash": TEXT, "source_file": TEXT,
}
CONSENT_NOTICES = Table(
    "consent_notices",
    # Schema version 3: the business a notice was shown for (optional in the notice file).
    {**NOTICE_COLUMNS, "loaded_at": TIME, "run_id": TEXT, "business": TEXT},
    primary_key=("notice_version",),
    not_null=("notice_text", "content_hash", "loaded_at", "run_id"),
)
PHONE_CACHE = Table(
    "phone_cache",
    {
        "phone_raw": TEXT, "country_hint": TEXT, "metadata_version": TEXT, "phone_e164": TEXT,
        "phone_region": TEXT, "phone_type": TEXT, "invalid_reason": TEXT,
    },
    # No primary key (schema version 7): DuckDB rewrote the key's whole index at the checkpoint of
    # every night that cached a new number (1.0 s at 3.4M cached spellings, 0.07 s without), and
    # built it in memory on a first run. One row per key is kept by the insert
    # (`consent.run.staging.PhoneCache.resolve` adds only the keys its lookup did not find), and a lookup
    # that finds a key twice stops the run (`DuplicateCacheKeys`).
    not_null=("phone_raw", "country_hint", "metadata_version"),
)
RUNS = Table(
    "runs",
    {
        "run_id": TEXT, "mode": TEXT, "as_of": TIME, "started_at": TIME, "published_at": TIME,
        "finished_at": TIME, "status": TEXT, "files_seen": INT, "files_read": INT, "rows_read": INT, "events": INT,
        "new_events": INT, "quarantined": INT, "skipped": INT, "contacts_reconciled": INT, "checks_failed": TEXTS,
        "check_outcomes": TEXT, "retention": TEXT, "per_channel": TEXT, "step_seconds": TEXT,
        # Schema version 2: why a run failed (a step's error), for `consent runs` and alerts.
        "failure_reason": TEXT,
    },
    primary_key=("run_id",),
    not_null=("mode", "as_of", "started_at", "status"),
    json=("check_outcomes", "retention", "per_channel", "step_seconds"),
)
SUPPRESSION_LIST = Table(
    "suppression_list",
    # Schema version 10: national_hash, the salted hash of the national significant number, so a
    # later import naming the number in national form in free text is known as erased too.
    {"phone_hash": TEXT, "erased_at": TIME, "reason": TEXT, "national_hash": TEXT},
    primary_key=("phone_hash",),
    not_null=("erased_at", "reason"),
)
ERASED_EVENTS = Table(
    "erased_events",
    {
        "event_id": TEXT, "phone_hash": TEXT, "channel": TEXT, "event_type": TEXT, "occurred_at": TIME,
        "ingested_at": TIME, "erased_at": TIME, "reason": TEXT,
    },
    primary_key=("event_id",),
    not_null=("phone_hash", "erased_at", "reason"),
)

IDENTIFIER_LINKS = Table(
    # Schema version 3: phone <-> BSUID <-> parent BSUID, as webhook items and exports showed them
    # together (or a BSUID change: previous_user_id -> whatsapp_user_id). Append-only evidence.
    "identifier_links",
    {
        "link_id": TEXT, "business": TEXT, "phone_e164": TEXT, "whatsapp_user_id": TEXT, "parent_user_id": TEXT,
        "previous_user_id": TEXT, "linked_at": TIME, "event_id": TEXT, "channel": TEXT, "source_file": TEXT,
        "source_line": INT, "source_pointer": TEXT, "ingested_at": TIME, "run_id": TEXT,
    },
    primary_key=("link_id",),
    not_null=("link_id", "business", "linked_at", "channel", "source_file", "ingested_at", "run_id"),
)

SEND_CHECKS = Table(
    # Schema version 4: every pre-send check of an audience (`consent check`, the audiences sensor).
    "send_checks",
    {
        "check_id": TEXT, "audience_file": TEXT, "audience_hash": TEXT, "purpose": TEXT, "business": TEXT,
        "status_at": TIME, "checked_at": TIME, "rows_checked": INT, "sendable": INT, "blocked": INT,
        "reasons": TEXT, "run_id": TEXT,
    },
    primary_key=("check_id",),
    not_null=("check_id", "audience_file", "audience_hash", "purpose", "business", "status_at", "checked_at",
              "rows_checked", "sendable", "blocked"),
    json=("reasons",),
)
SEND_CHECK_ROWS = Table(
    # Schema version 4: each audience row's decision; the recipient only as a salted hash.
    "send_check_rows",
    {"check_id": TEXT, "row_number": INT, "recipient_hash": TEXT, "decision": TEXT, "reason": TEXT},
    primary_key=("check_id", "row_number"),
    not_null=("check_id", "row_number", "decision", "reason"),
)

MART_BUILDS = Table(
    # Schema version 5: which run each mart reflects, so a night rebuilds only what it touched
    # (consent/marts). No row (a new warehouse, after an erasure or a retention purge): the next
    # build is whole.
    "mart_builds",
    {"mart": TEXT, "run_id": TEXT, "fingerprint": TEXT, "mode": TEXT, "built_at": TIME},
    primary_key=("mart",),
    not_null=("mart", "run_id", "fingerprint", "mode", "built_at"),
)

# The published tables, in creation order.
TABLES: tuple[Table, ...] = (
    CONSENT_EVENTS, QUARANTINE, SKIPPED_ITEMS, CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS,
    SOURCE_FILES, FILE_FINGERPRINTS, MESSAGE_STATUSES, CONSENT_NOTICES, PHONE_CACHE, RUNS, SUPPRESSION_LIST,
    ERASED_EVENTS, IDENTIFIER_LINKS, SEND_CHECKS, SEND_CHECK_ROWS, MART_BUILDS,
)

# Frames the domain builds (staging has the ledger's columns; skipped items are read as quarantine rows).
EVENT_SCHEMA = CONSENT_EVENTS.columns
QUARANTINE_SCHEMA = QUARANTINE.columns
SKIPPED_SCHEMA = QUARANTINE_SCHEMA
SEND_SCHEMA = MESSAGE_STATUSES.columns
STATUS_SCHEMA = CONSENT_STATUS.columns
HISTORY_SCHEMA = CONSENT_STATUS_HISTORY.columns
VIOLATION_SCHEMA = CONSENT_VIOLATIONS.columns
NOTICE_SCHEMA = {**NOTICE_COLUMNS, "business": TEXT}
LINK_SCHEMA = IDENTIFIER_LINKS.columns
