"""Contact buckets: every identifier of one person in the same bucket, so buckets can be decided apart.

A person is what the links and events show together: a number and its BSUIDs, a parent BSUID,
the BSUID one replaced, the old and new number of a number change (consent/storage/sql/
person_buckets.sql). Its bucket is a stable hash of its smallest identifier modulo the bucket
count: the same inputs give the same buckets on every machine and DuckDB version. A link learnt
later that joins two persons makes them one, named by the smaller identifier, so the identifiers of
the other move to its bucket (and are decided there from then on).
"""

from __future__ import annotations

from typing import Callable

import duckdb

from consent.domain.policy import Policy
from consent.reading.ingest import Progress
from consent.run.scope import replace_bucket
from consent.storage import sql
from consent.storage.db import drop_temporary, retried_transaction, table_exists, transaction

# The rounds of label propagation allowed: each round joins identifiers one link further apart.
MAX_ROUNDS = 64


class BucketError(RuntimeError):
    """The links form a chain longer than MAX_ROUNDS: refuse rather than split a person."""


def assign_buckets(con: duckdb.DuckDBPyConnection, buckets: int) -> int:
    """Create the temporary table `person_buckets(identifier, person, bucket)`; the rounds it took."""
    if buckets < 1:
        raise ValueError(f"the bucket count must be at least 1, not {buckets}")
    sql.run(con, "person_buckets")
    *prepare, changed = sql.statements("person_buckets_step")
    for rounds in range(1, MAX_ROUNDS + 1):
        for statement in prepare:
            con.execute(statement)
        moved = con.execute(changed).fetchone()[0]
        con.execute("CREATE OR REPLACE TEMP TABLE person_labels AS FROM person_labels_next")
        if moved == 0:
            sql.run(con, "person_buckets_final", {"buckets": buckets})
            return rounds
    raise BucketError(f"identifier links still joining persons after {MAX_ROUNDS} rounds")


def bucket_sizes(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Persons per bucket (after `assign_buckets`)."""
    rows = con.execute("SELECT bucket, count(DISTINCT person) FROM person_buckets GROUP BY bucket").fetchall()
    return dict(rows)


def decide_by_bucket(
    con: duckdb.DuckDBPyConnection,
    buckets: int,
    decide: Callable[[str], int],
    *,
    full: bool,
    progress: Progress | None = None,
) -> int:
    """Decide the touched contacts (`staging.stg_touched`, their rows not yet replaced) one bucket
    at a time, each bucket in a transaction of its own: its contacts' statuses, history and
    violations replaced (`replace_bucket`) and decided again by `decide(contacts_table)`. A bucket
    whose commit meets a write conflict is rolled back and decided again whole; one that still
    conflicts after the retries stops the run with `TransactionConflict`. The contacts decided."""
    assign_buckets(con, buckets)
    sql.run(con, "touched_buckets", {"full": full, "buckets": buckets})
    decided = 0
    try:
        for bucket in range(buckets):
            decided += decide_bucket(con, bucket, decide, full=full)
            if progress:
                progress("reconciling buckets", bucket + 1, buckets)
    finally:
        drop_bucket_scope(con)
    return decided


# What the night's process staged for the processes that decide its buckets (`stage_bucket_scope`):
# each touched contact's bucket and, on an incremental night, the ledger's part the night reads.
STAGED_BUCKETS = "staging.stg_touched_buckets"
STAGED_SCOPE = (("scoped_events", "staging.stg_scope_events", "scope_event_rows"),
                ("scoped_links", "staging.stg_scope_links", "scope_link_rows"))


def stage_bucket_scope(con: duckdb.DuckDBPyConnection, buckets: int, *, full: bool) -> None:
    """In the night's process, after its ledger transaction committed: the touched contacts' buckets
    computed once (on the night's scope, as `decide_by_bucket` does) and committed as
    `STAGED_BUCKETS`, with the night's part of the ledger when it read only a part, so that each
    process deciding a bucket starts from them instead of computing the whole ledger's persons
    again."""
    assign_buckets(con, buckets)
    sql.run(con, "touched_buckets", {"full": full, "buckets": buckets})
    # The night read a part of the ledger when its `scoped_events` view is over that part (scope_events).
    partial = con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = 'scoped_events' "
                          "AND contains(sql, ?)", [STAGED_SCOPE[0][2]]).fetchone()[0] > 0
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TABLE {STAGED_BUCKETS} AS FROM touched_buckets")
        for _, staged, rows in STAGED_SCOPE:
            con.execute(f"DROP TABLE IF EXISTS {staged}")
            if partial:
                con.execute(f"CREATE TABLE {staged} AS FROM {rows}")
    drop_bucket_scope(con)


def drop_staged_bucket_scope(con: duckdb.DuckDBPyConnection) -> None:
    for table in (STAGED_BUCKETS, *(staged for _, staged, _ in STAGED_SCOPE)):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def open_bucket_scope(con: duckdb.DuckDBPyConnection, policy: Policy, *, full: bool, buckets: int) -> None:
    """On a connection of its own, after the run's ledger transaction committed: the views deciding
    reads (consent/storage/sql/contact_events.sql) and `touched_buckets`. From what the night staged
    (`stage_bucket_scope`) when it did: its buckets, and its part of the ledger (else the whole
    ledger: a closed superset of the night's scope, so the same histories). Otherwise from the
    committed ledger and links, which deciding never changes: every process computes the same
    buckets."""
    con.execute("SET VARIABLE opt_out_all_businesses = ?", [policy.opt_out_scope == "all_businesses"])
    staged = table_exists(con, STAGED_BUCKETS)
    for view, table, _ in STAGED_SCOPE:
        source = table if staged and table_exists(con, table) else ("consent_events" if view == "scoped_events"
                                                                     else "identifier_links")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {source}")
    sql.run(con, "contact_events")
    if staged:
        con.execute(f"CREATE OR REPLACE TEMP TABLE touched_buckets AS FROM {STAGED_BUCKETS}")
        return
    assign_buckets(con, buckets)
    sql.run(con, "touched_buckets", {"full": full, "buckets": buckets})


def drop_bucket_scope(con: duckdb.DuckDBPyConnection) -> None:
    drop_temporary(con, "bucket_contacts", "touched_buckets", "person_buckets", "person_labels",
                   "person_labels_next", "person_edges")


def decide_bucket(con: duckdb.DuckDBPyConnection, bucket: int, decide: Callable[[str], int], *, full: bool) -> int:
    """One bucket of `touched_buckets` replaced and decided in its own (retried) transaction."""

    def work() -> int:
        con.execute("CREATE OR REPLACE TEMP TABLE bucket_contacts AS "
                    "SELECT contact_key FROM touched_buckets WHERE bucket = ?", [bucket])
        replace_bucket(con, full, "bucket_contacts")
        return decide("bucket_contacts")

    return retried_transaction(con, work, what=f"deciding bucket {bucket}")
