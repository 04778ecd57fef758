"""Privacy operations (consent-rules.md section 8): erasure, access, retention.

Plain Python over a DuckDB connection. A contact is named by its E.164
number; everything the warehouse keeps about it is found by that number, and
free-text rows (quarantine, skipped items, the phone cache) by the digits of
its national number, so every spelling is caught.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import phonenumbers

from consent.db import table_exists, transaction, upsert

ERASED_REASON = "erased number (GDPR Art. 17): event not re-imported"

def phone_hash(phone_e164: str, salt: str) -> str:
    """Salted SHA-256 of the E.164 number: the Python twin of SQL `salted_hash` (consent/sql/macros.sql)."""
    return hashlib.sha256((salt + phone_e164).encode("utf-8")).hexdigest()[:32]


def number_digits(phone_e164: str) -> str:
    """The national significant number: present in every spelling's digits."""
    parsed = phonenumbers.parse(phone_e164, None)
    return phonenumbers.national_significant_number(parsed)


def _digits_match_sql(column: str) -> str:
    return f"strpos(regexp_replace(coalesce({column}, ''), '[^0-9]', '', 'g'), $digits) > 0"


@dataclass
class ErasureReport:
    phone_hash: str
    events_tombstoned: int = 0
    statuses_removed: int = 0
    violations_removed: int = 0
    quarantine_removed: int = 0
    skipped_removed: int = 0
    cache_entries_removed: int = 0
    staging_rows_removed: int = 0
    files_still_containing: list[str] = field(default_factory=list)


def erase(con: duckdb.DuckDBPyConnection, phone_e164: str, salt: str, erased_at: datetime, reason: str) -> ErasureReport:
    """Remove the number everywhere, keep tombstones and a suppression entry, in one transaction."""
    hashed = phone_hash(phone_e164, salt)
    params = {"phone": phone_e164, "digits": number_digits(phone_e164)}
    report = ErasureReport(phone_hash=hashed)
    with transaction(con):
        report.events_tombstoned = _run(
            con,
            """
            INSERT OR IGNORE INTO erased_events BY NAME
            SELECT event_id, $hash AS phone_hash, channel, event_type, occurred_at, ingested_at,
                   $erased_at AS erased_at, $reason AS reason
            FROM consent_events WHERE phone_e164 = $phone
            """,
            {**params, "hash": hashed, "erased_at": erased_at, "reason": reason},
        ).fetchone()[0]
        _delete(con, "consent_events", "phone_e164 = $phone", params)
        report.statuses_removed = _delete(con, "consent_status", "phone_e164 = $phone", params)
        report.violations_removed = _delete(con, "consent_violations", "phone_e164 = $phone", params)
        _delete(con, "consent_status_history", "phone_e164 = $phone", params)
        _delete(con, "message_statuses", "recipient_e164 = $phone", params)
        report.quarantine_removed = _delete(con, "quarantine", _digits_match_sql("raw_row"), params)
        report.skipped_removed = _delete(con, "skipped_items", _digits_match_sql("raw_row"), params)
        report.cache_entries_removed = _delete(
            con, "phone_cache", f"phone_e164 = $phone OR {_digits_match_sql('phone_raw')}", params
        )
        for table, condition in (
            ("stg_consent_events", "phone_e164 = $phone"),
            ("stg_touched", "phone_e164 = $phone"),
            ("stg_quarantine", _digits_match_sql("raw_row")),
            ("stg_skipped", _digits_match_sql("raw_row")),
            ("stg_message_statuses", "recipient_e164 = $phone"),
        ):
            if table_exists(con, table):
                report.staging_rows_removed += _delete(con, table, condition, params)
        upsert(con, "suppression_list", {"phone_hash": hashed, "erased_at": erased_at, "reason": reason})
    return report


def _run(con, sql: str, params: dict):
    """Execute with only the named parameters the statement uses (DuckDB refuses extras)."""
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def _delete(con, table: str, condition: str, params: dict) -> int:
    return _run(con, f"DELETE FROM {table} WHERE {condition}", params).fetchone()[0]


def files_containing(exports_dir: Path, phone_e164: str) -> list[str]:
    """Export files (outside the warehouse) whose text holds the number in any spelling."""
    digits = number_digits(phone_e164)
    found = []
    if not exports_dir.is_dir():
        return found
    for path in sorted(p for p in exports_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for encoding in ("utf-8", "utf-16", "latin-1"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        if digits in re.sub(r"\D", "", text):
            found.append(path.relative_to(exports_dir).as_posix())
    return found


def suppress_staged(con: duckdb.DuckDBPyConnection) -> int:
    """Keep erased numbers out of a new run (call inside the publish transaction, after `use_salt`).

    A staged event of a number on the suppression list is dropped, and counted
    as a skipped item without its raw row, unless the same batch or the ledger
    holds an opt-in for that number dated after the erasure (a new consent).
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE suppressed AS
        SELECT s.event_id, s.channel, s.source_file, s.source_line, s.source_pointer, s.file_hash, s.ingested_at, s.run_id
        FROM stg_consent_events s
        JOIN suppression_list p ON p.phone_hash = salted_hash(s.phone_e164)
        WHERE NOT EXISTS (
            SELECT 1 FROM (
                SELECT phone_e164, event_type, occurred_at FROM stg_consent_events
                UNION ALL SELECT phone_e164, event_type, occurred_at FROM consent_events
            ) o
            WHERE o.phone_e164 = s.phone_e164 AND o.event_type IN ('opt_in', 'opt_in_confirm')
              AND o.occurred_at > p.erased_at
        ) OR s.occurred_at IS NULL OR s.occurred_at <= p.erased_at
        """
    )
    count = con.execute("SELECT count(*) FROM suppressed").fetchone()[0]
    if not count:
        return 0
    con.execute(
        """
        INSERT OR IGNORE INTO skipped_items BY NAME
        SELECT 'erased-' || event_id AS skipped_id, channel, source_file, source_line, source_pointer, file_hash,
               NULL AS raw_row, ? AS reason, ingested_at, run_id
        FROM suppressed
        """,
        [ERASED_REASON],
    )
    con.execute(
        """
        UPDATE stg_source_files f SET events = f.events - n.k, skipped = f.skipped + n.k
        FROM (SELECT source_file, file_hash, count(*) AS k FROM suppressed GROUP BY ALL) n
        WHERE f.source_file = n.source_file AND f.file_hash = n.file_hash
        """
    )
    con.execute("DELETE FROM stg_consent_events WHERE event_id IN (SELECT event_id FROM suppressed)")
    return count


def access_report(con: duckdb.DuckDBPyConnection, phone_e164: str, salt: str) -> dict:
    """Everything the warehouse holds about one number (GDPR Art. 15), with its evidence."""

    def rows(sql: str, params: dict) -> list[dict]:
        cursor = con.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, r)) for r in cursor.fetchall()]

    params = {"phone": phone_e164}
    digits = {"digits": number_digits(phone_e164)}
    hashed = phone_hash(phone_e164, salt)
    report = {
        "phone_e164": phone_e164,
        "consent_status": rows("SELECT * FROM consent_status WHERE phone_e164 = $phone ORDER BY purpose", params),
        "consent_events": rows(
            "SELECT * EXCLUDE (file_hash) FROM consent_events WHERE phone_e164 = $phone ORDER BY occurred_at NULLS LAST, event_id",
            params,
        ),
        "consent_violations": rows("SELECT * FROM consent_violations WHERE phone_e164 = $phone ORDER BY ALL", params),
        "consent_status_history": rows(
            "SELECT * FROM consent_status_history WHERE phone_e164 = $phone ORDER BY purpose, valid_from", params
        ),
        "quarantine": rows(f"SELECT * FROM quarantine WHERE {_digits_match_sql('raw_row')} ORDER BY ALL", digits),
        "erased_events": rows("SELECT * FROM erased_events WHERE phone_hash = $hash ORDER BY ALL", {"hash": hashed}),
        "suppressed": rows("SELECT * FROM suppression_list WHERE phone_hash = $hash", {"hash": hashed}),
    }
    return json.loads(json.dumps(report, default=str))


@dataclass
class RetentionReport:
    raw_rows_cleared: int
    contacts_purged: int
    events_purged: int


def purge_retention(
    con: duckdb.DuckDBPyConnection, as_of: datetime, raw_retention_days: float, evidence_retention_years: float
) -> RetentionReport:
    """Clear raw rows older than the raw retention; drop the evidence of consents ended long ago.

    A contact's evidence goes when it is not opted in and its last event is
    older than `evidence_retention_years`. One transaction.
    """
    raw_cutoff = as_of - timedelta(days=raw_retention_days)
    evidence_cutoff = as_of - timedelta(days=365.25 * evidence_retention_years)
    with transaction(con):
        raw = 0
        for table in ("quarantine", "skipped_items"):
            raw += con.execute(
                f"UPDATE {table} SET raw_row = NULL WHERE raw_row IS NOT NULL AND ingested_at < ?", [raw_cutoff]
            ).fetchone()[0]
        raw += con.execute(
            "UPDATE consent_events SET phone_raw = NULL WHERE phone_raw IS NOT NULL AND ingested_at < ?", [raw_cutoff]
        ).fetchone()[0]
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE ended AS
            SELECT e.phone_e164 FROM consent_events e
            GROUP BY e.phone_e164
            HAVING max(coalesce(e.occurred_at, e.ingested_at)) < $cutoff
               AND NOT EXISTS (SELECT 1 FROM consent_status s WHERE s.phone_e164 = e.phone_e164 AND s.status = 'opted_in')
            """,
            {"cutoff": evidence_cutoff},
        )
        contacts = con.execute("SELECT count(*) FROM ended").fetchone()[0]
        events = con.execute("DELETE FROM consent_events WHERE phone_e164 IN (SELECT phone_e164 FROM ended)").fetchone()[0]
        for table in ("consent_status", "consent_violations", "consent_status_history"):
            con.execute(f"DELETE FROM {table} WHERE phone_e164 IN (SELECT phone_e164 FROM ended)")
        con.execute("DELETE FROM message_statuses WHERE recipient_e164 IN (SELECT phone_e164 FROM ended)")
    return RetentionReport(raw_rows_cleared=raw, contacts_purged=contacts, events_purged=events)
