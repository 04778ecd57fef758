"""Moving a file warehouse into a DuckLake catalog: every published table and mart copied in one
transaction, then verified table by table (row count and a checksum of every row) against the file
it came from."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


class MoveError(Exception):
    """The target is not empty, or what it holds after the copy differs from the source."""


@dataclass(frozen=True)
class Tally:
    table: str
    rows: int
    checksum: int


def tables(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    """The tables to move: every published table and mart (schema `main`). The last run's scratch
    tables (schema `staging`, rebuilt by every run) are not copied: the target has its own, empty
    `staging` schema, and its first run writes them (its marts are then built whole)."""
    return [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND NOT temporary AND schema_name = 'main' "
        "ORDER BY table_name", [database]).fetchall()]


def columns(con: duckdb.DuckDBPyConnection, database: str, table: str) -> list[str]:
    return [c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' AND table_name = ? "
        "ORDER BY column_name", [database, table]).fetchall()]


def tally(con: duckdb.DuckDBPyConnection, database: str, table: str) -> Tally:
    """Rows and the sum of a hash of every row (its columns by name, so column order does not count)."""
    names = columns(con, database, table)
    row = "struct_pack(" + ", ".join(f'"{c}" := "{c}"' for c in names) + ")"
    count, checksum = con.execute(
        f'SELECT count(*), coalesce(sum(hash({row})::HUGEINT), 0) FROM "{database}".main."{table}"').fetchone()
    return Tally(table, count, int(checksum))


def copy_tables(con: duckdb.DuckDBPyConnection, source: str, target: str) -> list[str]:
    """Copy every table of `source` into `target` (its schema already created, its tables empty but
    for `schema_version`, which the source's replaces), in one transaction; the tables copied."""
    held = [t for t in tables(con, target)
            if t != "schema_version" and con.execute(f'SELECT count(*) FROM "{target}".main."{t}"').fetchone()[0]]
    if held:
        raise MoveError(f"the target already holds rows ({', '.join(held[:5])}): move into an empty catalog")
    copied = tables(con, source)
    existing = set(tables(con, target))
    con.execute("BEGIN TRANSACTION")
    try:
        for table in copied:
            if table in existing:
                con.execute(f'DELETE FROM "{target}".main."{table}"')
                con.execute(f'INSERT INTO "{target}".main."{table}" BY NAME SELECT * FROM "{source}".main."{table}"')
            else:  # a mart: built by runs, not by the schema
                con.execute(f'CREATE TABLE "{target}".main."{table}" AS SELECT * FROM "{source}".main."{table}"')
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return copied


def verify(source: list[Tally], target: list[Tally]) -> None:
    """Raise `MoveError` naming every table whose rows or checksum differ."""
    theirs = {t.table: t for t in target}
    wrong = [f"{t.table} ({t.rows} rows, {theirs[t.table].rows if t.table in theirs else 'no table'} in the target)"
             for t in source if theirs.get(t.table) != t]
    if wrong:
        raise MoveError("the copy differs from the warehouse: " + "; ".join(wrong))
