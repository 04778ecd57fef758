"""Contact buckets: every identifier of one person in the same bucket, so buckets can be decided apart.

A person is what the links and events show together: a number and its BSUIDs, a parent BSUID,
the BSUID one replaced, the old and new number of a number change (consent/storage/sql/
person_buckets.sql). Its bucket is a stable hash of its smallest identifier modulo the bucket
count: the same inputs give the same buckets on every machine and DuckDB version. A link learnt
later that joins two persons makes them one, named by the smaller identifier, so the identifiers of
the other move to its bucket (and are decided there from then on).
"""

from __future__ import annotations

import duckdb

from consent.storage import sql

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
