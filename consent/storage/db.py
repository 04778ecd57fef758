"""Small DuckDB helpers shared by the warehouse, privacy and dashboard modules."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import duckdb

T = TypeVar("T")
log = logging.getLogger(__name__)
# A transaction that meets a write conflict is tried again whole, at most this many times in all.
TRANSACTION_ATTEMPTS = 5
CONFLICT_PAUSE_SECONDS = 0.2


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All or nothing: COMMIT when the block ends, ROLLBACK when anything (even a kill signal) stops it."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def drop_temporary(con: duckdb.DuckDBPyConnection, *tables: str, view: bool = False) -> None:
    """Drop these temporary tables (views), as a `finally:` does after the work that made them. In a
    transaction that an error aborted there is nothing to drop (its ROLLBACK drops what it made),
    and a DROP there would raise "Current transaction is aborted" in place of the error on its way
    up: the real one (an out-of-memory, a conflict) would be hidden from the run's record."""
    for table in tables:
        try:
            con.execute(f"DROP {'VIEW' if view else 'TABLE'} IF EXISTS {table}")
        except duckdb.TransactionException as exc:
            if "transaction is aborted" not in str(exc).lower():
                raise
            return


class TransactionConflict(RuntimeError):
    """A transaction still met a write conflict after TRANSACTION_ATTEMPTS tries: nothing of it was written."""


def is_conflict(error: BaseException) -> bool:
    """Whether `error` is a commit refused because another transaction wrote the same data first
    (DuckLake: "Transaction conflict - attempting to delete from file ... another transaction ...")."""
    return isinstance(error, duckdb.TransactionException) and "conflict" in str(error).lower()


def retried_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], T], *, what: str,
                        attempts: int = TRANSACTION_ATTEMPTS) -> T:
    """`work()` in a transaction of its own; a transaction that meets a write conflict is rolled back
    and run again whole (`work` must start from what is committed), at most `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction(con):
                return work()
        except duckdb.TransactionException as exc:
            if not is_conflict(exc):
                raise
            _end_transaction(con)  # a commit refused may leave the transaction open
            if attempt == attempts:
                raise TransactionConflict(
                    f"{what}: still meeting a write conflict after {attempts} tries, nothing of it written "
                    f"(another writer kept changing the same data files): {exc}") from exc
            log.warning("%s met a write conflict; trying it again whole (%d of %d)", what, attempt + 1, attempts)
            time.sleep(CONFLICT_PAUSE_SECONDS * attempt)
    raise AssertionError("unreachable")


def _end_transaction(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass  # none open


# The units DuckDB prints a memory size in (`current_setting('memory_limit')`).
_MEMORY_UNITS = {"bytes": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _printed_limit(con: duckdb.DuckDBPyConnection) -> tuple[float, int] | None:
    """DuckDB's memory limit as it prints it: (number, bytes of its unit); None: unreadable."""
    number, _, unit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0].partition(" ")
    try:
        return float(number), _MEMORY_UNITS[unit or "B"]
    except (KeyError, ValueError):
        return None


def memory_limit_bytes(con: duckdb.DuckDBPyConnection) -> int | None:
    """DuckDB's memory limit in bytes, as it prints it (to a tenth of its unit, cut down)."""
    printed = _printed_limit(con)
    return None if printed is None else int(printed[0] * printed[1])


@contextmanager
def engine_memory_share(con: duckdb.DuckDBPyConnection, share: float, floor_bytes: int) -> Iterator[None]:
    """DuckDB's memory limit lowered to `share` of itself (never below `floor_bytes`, nor above the
    limit) for the block, and set back after it, for work that holds large frames in Python beside
    DuckDB: DuckDB evicts what it holds over the lower limit (a temporary table spills to its temp
    directory) and frees that memory, so the two together stay near the limit alone.

    The limit is the whole instance's: it is set through a cursor of its own, which a transaction
    an error aborted on `con` cannot stop from setting it back. DuckDB prints the limit to a tenth
    of its unit, cut down: it is set back to the middle of that tenth, which prints the same (the
    1GB default: within 0.05 MiB). If DuckDB cannot free enough to lower it, it stays as it was."""
    printed = _printed_limit(con)
    limit = None if printed is None else int(printed[0] * printed[1])
    lowered = None if limit is None else min(limit, max(int(limit * share), floor_bytes))
    if lowered is not None and lowered < limit:
        with con.cursor() as setter:
            try:
                setter.execute(f"SET memory_limit = '{lowered}B'")
            except duckdb.Error as exc:  # what DuckDB holds cannot be evicted: keep the limit
                log.info("DuckDB's memory limit stays as it was: %s", exc)
                lowered = None
    try:
        yield
    finally:
        if lowered is not None and lowered < limit:
            number, unit = printed
            with con.cursor() as setter:
                setter.execute(f"SET memory_limit = '{int((number + 0.05) * unit)}B'")


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the warehouse holds `table`: `name` (in `main`) or `schema.name` (`staging.stg_run`)."""
    schema, _, name = table.rpartition(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? "
            "AND database_name = current_database()", [schema or "main", name]
        ).fetchone()[0]
    )


def upsert(con: duckdb.DuckDBPyConnection, table: str, row: dict) -> None:
    """Insert one row, by column name, or set the given columns of the row with its primary key.

    One MERGE on both storages: a DuckLake table has no primary key for `INSERT OR REPLACE`, so the
    key comes from the table's definition (`consent.schema`)."""
    from consent.domain.schema import TABLES

    key = next(t.primary_key for t in TABLES if t.name == table)
    source = ", ".join(f"${name} AS {name}" for name in row)
    match = " AND ".join(f"{table}.{column} = given.{column}" for column in key)
    changes = ", ".join(f"{name} = given.{name}" for name in row if name not in key)
    matched = f"UPDATE SET {changes}" if changes else "DO NOTHING"
    con.execute(
        f"MERGE INTO {table} USING (SELECT {source}) AS given ON ({match}) "
        f"WHEN MATCHED THEN {matched} WHEN NOT MATCHED THEN INSERT BY NAME",
        row,
    )


def write_frame(con: duckdb.DuckDBPyConnection, table: str, frame: object, *, replace: bool = False) -> None:
    """Append a Polars (or Arrow) frame to `table` by column name; `replace`: the table becomes the frame.

    DuckDB reads the frame by the name of a local variable (its replacement scan), never through a
    registered view: inside a transaction a view dropped by `unregister` stays in the catalog until
    the commit (for a rollback), and with it the Arrow copy of its frame, so a transaction writing
    many frames held every one of them until it committed (publishing a 5M-event first run: a
    6.0 GB peak before, 4.5 GB after; README, "Performance")."""
    frame_to_write = frame  # noqa: F841 (read by DuckDB by this name)
    if replace:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM frame_to_write")
    else:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame_to_write")
