"""Compliance marts: one SQL file per mart, named after the table it builds.

Each file starts with `-- <name>: <what one row is>` and reads top-down as
named CTEs. Marts never hold a raw number: counts, or `salted_hash(...)`
(the macro of consent/sql/macros.sql). `build` replaces the table in one statement.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from consent.sql import use_salt

FOLDER = Path(__file__).parent
MARTS: dict[str, str] = {path.stem: path.read_text(encoding="utf-8") for path in sorted(FOLDER.glob("*.sql"))}


def purpose_of(name: str) -> str:
    first = MARTS[name].splitlines()[0]
    return first.split(":", 1)[1].strip() if ":" in first else first.lstrip("- ")


def build(con: duckdb.DuckDBPyConnection, name: str, salt: str) -> int:
    """(Re)build one mart table; returns its row count."""
    use_salt(con, salt)
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {MARTS[name]}")
    return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
