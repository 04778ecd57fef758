"""Small DuckDB helpers shared by the warehouse, privacy and dashboard modules."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb


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


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND database_name = current_database()", [table]
        ).fetchone()[0]
    )


def upsert(con: duckdb.DuckDBPyConnection, table: str, row: dict) -> None:
    """Insert (or replace, by primary key) one row, by column name."""
    columns = ", ".join(row)
    values = ", ".join(f"${name}" for name in row)
    con.execute(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({values})", row)
