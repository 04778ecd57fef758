"""Scope: which contacts a night decides again, and what it set aside to do so.

`select_touched_contacts` writes `stg_touched` (new events, new links, or time alone may change
a contact's status), grows the ledger read to the identifiers involved (`scope_events`), and
moves the touched contacts' statuses, history and violations aside as `stg_replaced_*`
(`replace_touched`), keeping what the run then decides as `stg_decided_*`. The status check and
the incremental marts compare the two; the queries they use are here too.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb

from consent.storage import sql
from consent.storage.db import table_exists, write_frame
from consent.storage.ducklake import is_lake_connection
from consent.domain.policy import Policy
from consent.domain.rules import TIME_DEPENDENT, UNTIL_DATED
from consent.domain.schema import CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS
from consent.run.staging import StagedRun


def select_touched_contacts(con: duckdb.DuckDBPyConnection, run: StagedRun, policy: Policy, full: bool,
                            replace: bool = True) -> None:
    """`stg_touched`: the contacts to decide again (new events, new links, or time alone may change them).
    Their rows are set aside and deleted (`replace_touched`) unless `replace` is False: deciding by
    bucket replaces each bucket's rows in the bucket's own transaction (consent.run.buckets)."""
    con.execute("SET VARIABLE opt_out_all_businesses = ?", [policy.opt_out_scope == "all_businesses"])
    shortest = policy.shortest_validity_days
    params = {
        "full": full,
        "run_id": run.run_id,
        # Time alone moves a pending request to `expired` once the confirmation window has passed,
        # and an opt-in once its validity has: only a request made (a consent given) at least that
        # long before the run's clock can have changed (rows with no date are always decided again).
        "requested_by": run.as_of - timedelta(days=policy.confirmation_window_days),
        "consent_expires": shortest is not None,
        "given_by": run.as_of - timedelta(days=shortest or 0),
        "time_dependent_rules": list(TIME_DEPENDENT),
        # A violation of such a rule about the opt-in's own date (a future date) holds until the clock,
        # plus the allowed skew, reaches that date: decided again from then on.
        "until_dated_rules": list(UNTIL_DATED),
        "dated_by": run.as_of + timedelta(minutes=policy.clock_skew_minutes),
    }
    sql.run(con, "time_alone", params)
    first = scope_events(con, params, full)
    sql.run(con, "contact_events")
    sql.run(con, "touched_contacts", params)
    replace_touched(con, full, delete=replace)
    # What an incremental run decides, kept as written: the incremental marts compare it with the
    # rows it replaced (consent/storage/sql/mart_scope.sql), and the status check validates the statuses that
    # changed, without reading the whole tables again. Not on a full run, nor on a first one: they
    # decide every contact (a copy of every row), and the marts are rebuilt whole after them.
    for table, kept in ((CONSENT_STATUS, "staging.stg_decided_status"),
                        (CONSENT_STATUS_HISTORY, "staging.stg_decided_history"),
                        (CONSENT_VIOLATIONS, "staging.stg_decided_violations")):
        con.execute(f"DROP TABLE IF EXISTS {kept}")
        if not full and not first:
            con.execute(f"CREATE TABLE {kept} AS SELECT * FROM {table.name} LIMIT 0")


# A night touching at most this many contacts sets their rows aside with `DELETE ... RETURNING`
# (one pass over each table; the rows held in this process), more by reading them and deleting them
# in SQL (two passes; DuckDB can spill): the memory a night holds stays bounded.
RETURNING_CONTACTS = 50_000
# Each decided table and the staging copy of the rows a run replaced in it.
REPLACED = ((CONSENT_STATUS, "staging.stg_replaced_status"), (CONSENT_STATUS_HISTORY, "staging.stg_replaced_history"),
            (CONSENT_VIOLATIONS, "staging.stg_replaced_violations"))
# The rows of a table keyed by business and contact that belong to the contacts this run decides.
TOUCHED = "business || chr(31) || contact_id IN (SELECT contact_key FROM staging.stg_touched)"


def replace_touched(con: duckdb.DuckDBPyConnection, full: bool, delete: bool = True) -> None:
    """Delete the touched contacts' statuses, history and violations (every row on a full run), to be
    decided again, and keep the rows deleted as `stg_replaced_*` (empty on a full run): the status
    check validates only rows that changed, and the incremental marts (consent/storage/sql/mart_scope.sql)
    take the difference between these and the rows the run writes."""
    # `delete` False: only the empty `stg_replaced_*` tables; each bucket fills them (`replace_bucket`).
    # DuckLake has no DELETE ... RETURNING: there the rows are read, then deleted.
    returning = (delete and not full and not is_lake_connection(con)
                 and con.execute("SELECT count(*) FROM staging.stg_touched").fetchone()[0] <= RETURNING_CONTACTS)
    for table, kept in REPLACED:
        con.execute(f"CREATE OR REPLACE TABLE {kept} AS SELECT * FROM {table.name} LIMIT 0")
        if not delete:
            continue
        if full:
            con.execute(f"DELETE FROM {table.name}")
        elif returning:
            write_frame(con, kept, con.execute(f"DELETE FROM {table.name} WHERE {TOUCHED} RETURNING *").pl())
        else:
            con.execute(f"INSERT INTO {kept} SELECT * FROM {table.name} WHERE {TOUCHED}")
            con.execute(f"DELETE FROM {table.name} WHERE {TOUCHED}")


def replace_bucket(con: duckdb.DuckDBPyConnection, full: bool, contacts: str) -> None:
    """`replace_touched` for the contacts whose keys the table `contacts` holds (one bucket): their
    rows deleted, and kept as `stg_replaced_*` unless on a full run."""
    chosen = f"business || chr(31) || contact_id IN (SELECT contact_key FROM {contacts})"
    for table, kept in REPLACED:
        if not full:
            con.execute(f"INSERT INTO {kept} SELECT * FROM {table.name} WHERE {chosen}")
        con.execute(f"DELETE FROM {table.name} WHERE {chosen}")


# A night whose scope has not closed after this many steps (a very long chain of links and number
# changes) reads the whole ledger instead: slower, never wrong.
SCOPE_STEPS = 12


def scope_events(con: duckdb.DuckDBPyConnection, params: dict, full: bool) -> bool:
    """`scoped_events` and `scoped_links`: what contact_events.sql reads. The whole ledger on a full
    run; on an incremental one, the events and links of the identifiers the night touched, grown
    until closed (consent/storage/sql/event_scope.sql). A run whose events are the first in the ledger
    reads the whole ledger as a full run does: its scope would be all of it, copied. Returns
    whether the run is such a first run."""
    first = not full and con.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM consent_events WHERE run_id <> ?)", [params["run_id"]]
    ).fetchone()[0]
    if not full and not first:
        sql.run(con, "event_scope", params)
        for _ in range(SCOPE_STEPS):
            if sql.run(con, "event_scope_grow").fetchone()[0] == 0:
                con.execute("CREATE OR REPLACE TEMP VIEW scoped_events AS SELECT * FROM scope_event_rows")
                con.execute("CREATE OR REPLACE TEMP VIEW scoped_links AS SELECT * FROM scope_link_rows")
                return False
    con.execute("CREATE OR REPLACE TEMP VIEW scoped_events AS SELECT * FROM consent_events")
    con.execute("CREATE OR REPLACE TEMP VIEW scoped_links AS SELECT * FROM identifier_links")
    return first


def decided_every_contact(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the run just published decided every contact (a full run, or the first run of a
    warehouse): it kept no copy of what it wrote (`stg_decided_status`), and every row of the
    status, history and violation tables is its own."""
    return not table_exists(con, "staging.stg_decided_status")


def changed_status_rows(con: duckdb.DuckDBPyConnection) -> str:
    """A query of the consent_status rows the run just published changed: an incremental run's rows
    as it wrote them less those it replaced; after a run that decided every contact, the whole
    table (read as it is: filtering every row by the touched contacts and taking away no replaced
    rows gave the same rows, and at 10M events ran out of memory under a 1GB limit)."""
    if decided_every_contact(con):
        return "SELECT * FROM consent_status"
    return "SELECT * FROM staging.stg_decided_status EXCEPT ALL SELECT * FROM staging.stg_replaced_status"


def duplicate_decisions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Keys held by more than one row among the contacts this run decided (`stg_touched`; every
    contact after a run that decided them all): (business, contact, purpose) in consent_status,
    (event, rule) in consent_violations. Neither table has a primary-key index (schema version 6),
    so this is what keeps them one row per key; both 0 when all is well."""
    decided = "" if decided_every_contact(con) or not table_exists(con, "staging.stg_touched") else f"WHERE {TOUCHED}"
    counts = con.execute(f"""
        SELECT (SELECT count(*) FROM (SELECT 1 FROM consent_status {decided}
                                      GROUP BY business, contact_id, purpose HAVING count(*) > 1)),
               (SELECT count(*) FROM (SELECT 1 FROM consent_violations {decided}
                                      GROUP BY event_id, rule HAVING count(*) > 1))
    """).fetchone()
    return {"consent_status": int(counts[0]), "consent_violations": int(counts[1])}


# Tables without a primary-key index whose ids append_ledger.sql keeps unique (schema version 9;
