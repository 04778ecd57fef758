"""Privacy operations (consent-rules.md section 8): erasure, access, retention.

Plain Python over a DuckDB connection. A person is named by an E.164 number
or a BSUID; everything the warehouse keeps about it is found by that
identifier and every identifier linked to it (`identifier_links`), and
free-text rows (quarantine, skipped items, the phone cache) by the digits of
each national number or the BSUID text, so every spelling is caught.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from consent.domain.hashing import number_digits
from consent.storage import sql
from consent.storage.db import table_exists, transaction, upsert
from consent.marts import forget_builds

ERASED_REASON = "erased number (GDPR Art. 17): event not re-imported"
# A night's copies of the rows it replaced and wrote, the marts' differences between them and
# what the marts read of the contacts in scope (consent.run.scope.replace_touched,
# consent/storage/sql/mart_scope.sql), with the column naming the contact: erasure and retention clear them
# like the tables they copy.
NIGHT_COPIES = {
    **dict.fromkeys(("staging.stg_replaced_status", "staging.stg_replaced_history", "staging.stg_replaced_violations",
                     "staging.stg_decided_status", "staging.stg_decided_history", "staging.stg_decided_violations",
                     "staging.stg_mart_history_delta", "staging.stg_mart_status_delta", "staging.stg_mart_violations_delta",
                     "staging.stg_mart_contacts", "staging.stg_mart_history"),
                    "contact_id"),
    "staging.stg_mart_sends": "recipient",
}


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
    free_text_cleared: int = 0
    files_still_containing: list[str] = field(default_factory=list)
    # Every identifier erased (the one given and those linked to it); not printed: personal data.
    identifiers: list[str] = field(default_factory=list, repr=False)


def linked_identifiers(con: duckdb.DuckDBPyConnection, identifier: str) -> list[str]:
    """The identifier and every identifier linked to it (numbers, BSUIDs, parent and previous BSUIDs),
    following `identifier_links` a few steps (a person's BSUID, its parent, the BSUID it replaced)."""
    found = {identifier}
    for _ in range(3):
        rows = con.execute(
            """
            SELECT DISTINCT unnest([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id])
            FROM identifier_links
            WHERE list_has_any([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id], $ids)
            """,
            {"ids": sorted(found)},
        ).fetchall()
        more = {v for (v,) in rows if v} - found
        if not more:
            break
        found |= more
    return sorted(found)


def _person_sql(phone: str, user: str) -> str:
    """A row of the person: its number column among the numbers, its BSUID column among the BSUIDs."""
    return f"({phone} IN (SELECT unnest($phones)) OR {user} IN (SELECT unnest($users)))"


def _text_match_sql(column: str) -> str:
    """Free text (raw rows) holding any spelling of the numbers, or any of the BSUIDs."""
    return (f"(len(list_filter($digits, lambda d: strpos(regexp_replace(coalesce({column}, ''), '[^0-9]', '', 'g'), d) > 0)) > 0 "
            f"OR len(list_filter($users, lambda u: strpos(coalesce({column}, ''), u) > 0)) > 0)")


def erase(con: duckdb.DuckDBPyConnection, identifier: str, erased_at: datetime, reason: str) -> ErasureReport:
    """Remove the person everywhere (the number or BSUID given and every identifier linked to it),
    keep tombstones and a suppression entry per identifier, in one transaction. The hashes are the
    connection's `salted_hash` (a writing connection of consent/storage/access.py)."""
    hashed = sql.salted_hash(con, identifier)
    ids = linked_identifiers(con, identifier)
    phones = [i for i in ids if i.startswith("+")]
    users = [i for i in ids if not i.startswith("+")]
    params = {"phones": phones, "users": users, "ids": ids, "digits": [number_digits(p) for p in phones] or [""]}
    if not phones:
        params["digits"] = ["\x00"]  # matches no text
    person = _person_sql("phone_e164", "whatsapp_user_id")
    report = ErasureReport(phone_hash=hashed, identifiers=ids)
    # not INSERT OR IGNORE: a DuckLake table has no key to ignore by
    not_yet_erased = "event_id NOT IN (SELECT event_id FROM erased_events)"
    with transaction(con):
        report.events_tombstoned = _run(
            con,
            f"""
            INSERT INTO erased_events BY NAME
            SELECT event_id, $hash AS phone_hash, channel, event_type, occurred_at, ingested_at,
                   $erased_at AS erased_at, $reason AS reason
            FROM consent_events WHERE ({person} OR parent_user_id IN (SELECT unnest($users))) AND {not_yet_erased}
            """,
            {**params, "hash": hashed, "erased_at": erased_at, "reason": reason},
        ).fetchone()[0]
        _delete(con, "consent_events", f"{person} OR parent_user_id IN (SELECT unnest($users))", params)
        report.statuses_removed = _delete(con, "consent_status", f"{person} OR contact_id IN (SELECT unnest($ids))", params)
        report.violations_removed = _delete(con, "consent_violations", "contact_id IN (SELECT unnest($ids))", params)
        _delete(con, "consent_status_history", "contact_id IN (SELECT unnest($ids))", params)
        _delete(con, "message_statuses", _person_sql("recipient_e164", "recipient_user_id"), params)
        _delete(con, "identifier_links", "list_has_any([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id], $ids)", params)
        report.quarantine_removed = _delete(con, "quarantine", _text_match_sql("raw_row"), params)
        report.skipped_removed = _delete(con, "skipped_items", _text_match_sql("raw_row"), params)
        report.cache_entries_removed = _delete(
            con, "phone_cache", f"phone_e164 IN (SELECT unnest($phones)) OR {_text_match_sql('phone_raw')}", params
        )
        for table, condition in (
            ("staging.stg_consent_events", person),
            ("staging.stg_touched", "split_part(contact_key, chr(31), 2) IN (SELECT unnest($ids))"),
            # what a night that fanned its buckets out staged for them (consent.run.buckets.stage_bucket_scope)
            ("staging.stg_touched_buckets", "split_part(contact_key, chr(31), 2) IN (SELECT unnest($ids))"),
            ("staging.stg_scope_events", person),
            ("staging.stg_scope_links", "list_has_any([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id], $ids)"),
            ("staging.stg_quarantine", _text_match_sql("raw_row")),
            ("staging.stg_skipped", _text_match_sql("raw_row")),
            ("staging.stg_message_statuses", _person_sql("recipient_e164", "recipient_user_id")),
            ("staging.stg_identifier_links", "list_has_any([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id], $ids)"),
            *((copy, f"{column} IN (SELECT unnest($ids))") for copy, column in NIGHT_COPIES.items()),
        ):
            if table_exists(con, table):
                report.staging_rows_removed += _delete(con, table, condition, params)
        report.free_text_cleared = scrub_free_text(con, params["digits"] if phones else [], users)
        for erased in ids:
            national = sql.salted_hash(con, number_digits(erased)) if erased.startswith("+") else None
            upsert(con, "suppression_list", {"phone_hash": sql.salted_hash(con, erased), "erased_at": erased_at,
                                             "reason": reason, "national_hash": national})
        forget_builds(con)  # the marts are rebuilt whole by the next run
    return report


# Columns naming a contact or a row exactly (their rows of the person are deleted above, and a
# digit run of another contact's number that merely contains the erased digits must not be
# touched), and file names (keys joining tables): the free-text sweep leaves them alone.
_NOT_FREE_TEXT = {"phone_e164", "whatsapp_user_id", "parent_user_id", "previous_user_id", "contact_id", "recipient",
                  "recipient_e164", "recipient_user_id", "phone_raw", "source_file", "file_hash", "event_type",
                  "channel", "business", "purpose", "status", "metadata_version"}
ERASED_MARK = "[erased]"
_SPELLING = re.compile(r"\+?\(?\d(?:[\d \t.\-/()\u00a0]*\d)?\)?")


def scrub_text(text: str, digits: list[str], users: list[str]) -> str:
    """The text with each digit run holding the erased digits, and each erased BSUID, replaced by
    ERASED_MARK; if the digits still show across other characters, every digit is masked."""
    for user in users:
        text = text.replace(user, ERASED_MARK)
    if digits:
        text = _SPELLING.sub(lambda m: ERASED_MARK if any(d in re.sub(r"\D", "", m.group(0)) for d in digits)
                             else m.group(0), text)
        if any(d in re.sub(r"\D", "", text) for d in digits):
            text = re.sub(r"\d", "#", text)
    return text


def scrub_free_text(con: duckdb.DuckDBPyConnection, digits: list[str], users: list[str]) -> int:
    """Rewrite every free-text cell of every table (notes, reasons, run records, staging copies)
    that still holds an erased number in any spelling or an erased BSUID; the cells rewritten."""
    if not digits and not users:
        return 0
    columns = con.execute(
        """
        SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() c
        JOIN duckdb_tables() t ON t.table_oid = c.table_oid
        WHERE c.database_name = current_database() AND c.schema_name IN ('main', 'staging') AND NOT c.internal
          AND c.data_type IN ('VARCHAR', 'VARCHAR[]') ORDER BY c.schema_name, c.table_name, c.column_index
        """
    ).fetchall()
    # The digits with anything but digits between them (what an auditor finds by stripping the
    # non-digits), or a BSUID: one linear regular expression, one pass over each column.
    pattern = "|".join([*("[^0-9]*".join(d) for d in digits), *(re.escape(u) for u in users)])
    rewritten = 0
    for schema, table, column, data_type in columns:  # the published tables and the run's scratch
        if column in _NOT_FREE_TEXT or column.endswith(("_id", "_hash")):
            continue
        text = f'array_to_string("{column}", chr(10))' if data_type.endswith("[]") else f'"{column}"'
        cells = con.execute(f'SELECT rowid, "{column}" FROM "{schema}"."{table}" WHERE regexp_matches({text}, ?)',
                            [pattern]).fetchall()
        for rowid, value in cells:
            new = [scrub_text(v, digits, users) if v else v for v in value] if isinstance(value, list) \
                else scrub_text(value, digits, users)
            con.execute(f'UPDATE "{schema}"."{table}" SET "{column}" = ? WHERE rowid = ?', [new, rowid])
        rewritten += len(cells)
    return rewritten


def _run(con, sql: str, params: dict):
    """Execute with only the named parameters the statement uses (DuckDB refuses extras)."""
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def _delete(con, table: str, condition: str, params: dict) -> int:
    return _run(con, f"DELETE FROM {table} WHERE {condition}", params).fetchone()[0]


def files_containing(exports_dir: Path, identifier: str) -> list[str]:
    """Export files (outside the warehouse) whose text holds the number in any spelling, or the BSUID."""
    digits = number_digits(identifier) if identifier.startswith("+") else None
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
        if (digits in re.sub(r"\D", "", text)) if digits else identifier in text:
            found.append(path.relative_to(exports_dir).as_posix())
    return found


def erased_text(identifiers: list[str]) -> tuple[list[str], list[str]]:
    """(national digits of the numbers, the BSUIDs) among erased identifiers: what free text is searched for."""
    return ([number_digits(i) for i in identifiers if i.startswith("+")],
            [i for i in identifiers if not i.startswith("+")])


def scrub_warehouse_files(folder: Path, identifiers: list[str], keep: set[Path]) -> dict[str, list[str]]:
    """Files under the warehouse folder (alerts, Data Docs, the dashboard, reports, checked
    audiences) that hold an erased identifier in any spelling: rewritten with each spelling
    replaced by ERASED_MARK, or removed when they are not text. `keep`: the database files and
    secrets (the database is compacted instead). Returns the relative names, by what was done."""
    digits, users = erased_text(identifiers)
    done: dict[str, list[str]] = {"rewritten": [], "removed": []}
    if not folder.is_dir():
        return done
    kept = {p.resolve() for p in keep}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.resolve() in kept or path.name.startswith("."):
            continue
        data = path.read_bytes()
        flat = re.sub(rb"\D", b"", data)
        if not any(d.encode() in flat for d in digits) and not any(u.encode() in data for u in users):
            continue
        name = path.relative_to(folder).as_posix()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            path.unlink()
            done["removed"].append(name)
            continue
        path.write_text(scrub_text(text, digits, users), encoding="utf-8")
        done["rewritten"].append(name)
    return done


def suppress_staged(con: duckdb.DuckDBPyConnection) -> int:
    """Keep erased numbers out of a new run (call inside the publish transaction, on a connection
    with `salted_hash`).

    A staged event of a number on the suppression list is dropped, and counted
    as a skipped item without its raw row, unless the same batch or the ledger
    holds an opt-in for that number dated after the erasure (a new consent).
    Links and sends of erased identifiers are not learnt again either (they are not consent).
    """
    if not con.execute("SELECT count(*) FROM suppression_list").fetchone()[0]:
        return 0
    erase_staged_raw_rows(con)
    count = sql.run(con, "suppressed_events").fetchone()[0]
    if count:
        sql.run(con, "suppress_events", {"reason": ERASED_REASON})
    return count


def erase_staged_raw_rows(con: duckdb.DuckDBPyConnection) -> int:
    """Staged quarantine rows and skipped items naming an erased number or BSUID in their raw text
    are kept as skipped items with the reason ERASED_REASON and without their raw row (a
    quarantined row moves to the skipped items: the file's counts still add up). Call on a
    connection with `salted_hash`, when the suppression list is not empty; the rows so kept.
    Numbers given a new opt-in after their erasure are known again (erased_raw_rows.sql)."""
    sql.run(con, "erased_raw_rows")
    con.execute(
        """
        UPDATE staging.stg_skipped SET raw_row = NULL, reason = $reason
        WHERE skipped_id IN (SELECT id FROM erased_raw WHERE kind = 'skipped')
        """,
        {"reason": ERASED_REASON},
    )
    # Read, then deleted (not DELETE ... RETURNING, which DuckLake lacks).
    erased_quarantine = "quarantine_id IN (SELECT id FROM erased_raw WHERE kind = 'quarantine')"
    moved = con.execute(f"SELECT * FROM staging.stg_quarantine WHERE {erased_quarantine}").pl()
    con.execute(f"DELETE FROM staging.stg_quarantine WHERE {erased_quarantine}")
    if moved.height:
        con.register("moved_rows", moved)
        con.execute(
            """
            INSERT INTO staging.stg_skipped BY NAME
            SELECT 'erased-' || quarantine_id AS skipped_id, * EXCLUDE (quarantine_id, raw_row, reason),
                   NULL AS raw_row, $reason AS reason
            FROM moved_rows
            """,
            {"reason": ERASED_REASON},
        )
        con.execute(
            """
            UPDATE staging.stg_source_files f SET quarantined = f.quarantined - n.k, skipped = f.skipped + n.k
            FROM (SELECT source_file, file_hash, count(*) AS k FROM moved_rows GROUP BY ALL) n
            WHERE f.source_file = n.source_file AND f.file_hash = n.file_hash
            """
        )
        con.unregister("moved_rows")
    return con.execute("SELECT count(*) FROM erased_raw").fetchone()[0]


def erased_rows_staged(con: duckdb.DuckDBPyConnection) -> int:
    """Rows of the last staged run kept as skipped items because they named an erased number
    (`erase_staged_raw_rows`; its events dropped by `suppress_staged` are counted in the run summary)."""
    if not table_exists(con, "staging.stg_skipped"):
        return 0
    return con.execute("SELECT count(*) FROM staging.stg_skipped WHERE reason = ?", [ERASED_REASON]).fetchone()[0]


def access_report(con: duckdb.DuckDBPyConnection, phone_e164: str) -> dict:
    """Everything the warehouse holds about one number (GDPR Art. 15), with its evidence (the
    tombstones and suppression entries found by the connection's `salted_hash`)."""

    def rows(sql: str, params: dict) -> list[dict]:
        cursor = con.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, r)) for r in cursor.fetchall()]

    ids = linked_identifiers(con, phone_e164)
    phones = [i for i in ids if i.startswith("+")]
    users = [i for i in ids if not i.startswith("+")]
    params = {"phones": phones, "users": users}
    person = _person_sql("phone_e164", "whatsapp_user_id")
    contacts = {"ids": ids}
    text = {"digits": [number_digits(p) for p in phones] or ["\x00"], "users": users}
    hashes = {"hashes": [sql.salted_hash(con, i) for i in ids]}
    report = {
        "phone_e164": phone_e164,
        "identifiers": ids,
        "identifier_links": rows(
            "SELECT * FROM identifier_links WHERE list_has_any([phone_e164, whatsapp_user_id, parent_user_id, "
            "previous_user_id], $ids) ORDER BY linked_at, link_id", contacts),
        "consent_status": rows("SELECT * FROM consent_status WHERE contact_id IN (SELECT unnest($ids)) ORDER BY ALL", contacts),
        "consent_events": rows(
            f"SELECT * EXCLUDE (file_hash) FROM consent_events WHERE {person} ORDER BY occurred_at NULLS LAST, event_id",
            params,
        ),
        "consent_violations": rows("SELECT * FROM consent_violations WHERE contact_id IN (SELECT unnest($ids)) ORDER BY ALL", contacts),
        "consent_status_history": rows(
            "SELECT * FROM consent_status_history WHERE contact_id IN (SELECT unnest($ids)) ORDER BY business, purpose, valid_from",
            contacts,
        ),
        "quarantine": rows(f"SELECT * FROM quarantine WHERE {_text_match_sql('raw_row')} ORDER BY ALL", text),
        "erased_events": rows("SELECT * FROM erased_events WHERE phone_hash IN (SELECT unnest($hashes)) ORDER BY ALL", hashes),
        "suppressed": rows("SELECT * FROM suppression_list WHERE phone_hash IN (SELECT unnest($hashes))", hashes),
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
        sql.run(con, "retention_ended", {"cutoff": evidence_cutoff})
        contacts = con.execute("SELECT count(*) FROM ended").fetchone()[0]
        events = con.execute("DELETE FROM consent_events WHERE phone_e164 IN (SELECT phone_e164 FROM ended)").fetchone()[0]
        for table, column in {**dict.fromkeys(("consent_status", "consent_violations", "consent_status_history"),
                                              "contact_id"), **NIGHT_COPIES}.items():
            if table_exists(con, table):
                con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT phone_e164 FROM ended)")
        con.execute("DELETE FROM message_statuses WHERE recipient_e164 IN (SELECT phone_e164 FROM ended)")
        if events:
            forget_builds(con)  # the marts are rebuilt whole, without the purged contacts
    return RetentionReport(raw_rows_cleared=raw, contacts_purged=contacts, events_purged=events)
