"""The warehouse's SQL, one file per step, beside the code that runs it.

`statements(name)` reads `consent/storage/sql/<name>.sql` (split on `;` at the end of
a line) and `run(con, name, params)` executes each statement with only the
`$parameters` it uses. `use_salt` defines, once per writing connection, the
`salted_hash(value)` macro every mart and privacy query uses (`macros.sql`),
so the hash expression is written in one place. A read-only connection never
holds the salt (`use_reader_macros`): no variable, setting or macro body an
SQL reader could print.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import duckdb

FOLDER = Path(__file__).parent
_PARAMETER = re.compile(r"\$([A-Za-z_]\w*)")


@cache
def statements(name: str) -> tuple[str, ...]:
    return split((FOLDER / f"{name}.sql").read_text(encoding="utf-8"))


def file_statements(path: Path) -> tuple[str, ...]:
    """The statements of a .sql file kept beside the module that runs it (a suite's rows, a check)."""
    return split(path.read_text(encoding="utf-8"))


def split(text: str) -> tuple[str, ...]:
    """The statements of a SQL text: each ends with `;` at the end of a line (a comment may follow
    it); a comment line ending with `;` ends nothing; parts holding only comments are dropped."""
    parts, current = [], []
    for line in text.splitlines():
        end = None if line.lstrip().startswith("--") else _END.search(line)
        current.append(line[:end.start()] if end else line)
        if end:
            parts.append("\n".join(current))
            current = []
    parts.append("\n".join(current))
    return tuple(part.strip() for part in parts if _code(part))


_END = re.compile(r";[ \t]*(?:--.*)?$")


def _code(part: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in part.splitlines())


def bind(sql: str, params: dict | None) -> dict:
    """The parameters a statement uses (DuckDB refuses extra named parameters)."""
    used = set(_PARAMETER.findall(sql))
    return {k: v for k, v in (params or {}).items() if k in used}


def run(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Execute every statement of `<name>.sql`; the cursor of the last one."""
    cursor = con
    for sql in statements(name):
        cursor = con.execute(sql, bind(sql, params))
    return cursor


def use_salt(con: duckdb.DuckDBPyConnection, salt: str | None) -> None:
    """Define `salted_hash(value)` on this connection, with the deployment's salt."""
    con.execute("SET VARIABLE hash_salt = ?", [salt])
    run(con, "macros")
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    if {"identifier_links", "message_statuses"} <= tables:
        run(con, "send_macros")


def salted_hash(con: duckdb.DuckDBPyConnection, value: str) -> str:
    """The connection's `salted_hash(value)`: the salt stays with the connection that defined it."""
    hashed = con.execute("SELECT salted_hash(?)", [value]).fetchone()[0]
    if hashed is None:
        raise RuntimeError("this connection has no hash salt: open it with consent.storage.access (a writer, "
                           "or a reader with hashing)")
    return hashed


def use_reader_macros(con: duckdb.DuckDBPyConnection, salt: str | None = None, hashing: bool = False) -> None:
    """A read-only connection's macros: the send macros, and `salted_hash(value)` only when a salt
    is given (the canned audits), as a Python function: the salt stays in this process, out of
    `getvariable`, `duckdb_variables()`, `duckdb_settings()` and `duckdb_functions()`."""
    if hashing:
        from duckdb.sqltypes import VARCHAR

        from consent.domain.hashing import phone_hash

        # Without a salt there is no hash (NULL), never an unsalted one.
        hashed = (lambda value: phone_hash(value, salt)) if salt else (lambda value: None)
        con.create_function("salted_hash", hashed, [VARCHAR], VARCHAR, side_effects=False)
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    if {"identifier_links", "message_statuses"} <= tables:
        run(con, "send_macros")
