"""Business and purpose names a command may be given: a typo is an error, never an empty list.

A misspelt `--business` or `--purpose` matches no row; an export would be a
header-only suppression list that suppresses nobody. The names known are those
the warehouse holds and those the configuration declares (businesses.yaml, the
policy's purposes).
"""

from __future__ import annotations

import difflib
from typing import Iterable

import duckdb

from consent.storage.db import table_exists

# The businesses and purposes of every status (and, below, the businesses the last run configured).
KNOWN_NAMES_SQL = """
SELECT 'business' AS kind, business AS name FROM consent_status
UNION SELECT 'purpose', purpose FROM consent_status
"""


def warehouse_names(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """{'business': {...}, 'purpose': {...}} as the warehouse holds them."""
    names: dict[str, set[str]] = {"business": set(), "purpose": set()}
    query = KNOWN_NAMES_SQL
    if table_exists(con, "staging.stg_run"):  # kept from the last run: a business configured but with no status yet
        query += "UNION SELECT 'business', unnest(businesses) FROM staging.stg_run\n"
    for kind, name in con.execute(query).fetchall():
        if name:
            names[kind].add(name)
    return names


def unknown_name(option: str, given: str, known: Iterable[str]) -> str | None:
    """One line naming the known names (and the closest one) when `given` is not among them; else None."""
    known = sorted(set(known))
    if given in known:
        return None
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        given.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    if close and close[0] not in known:  # matched case-insensitively: name it as it is spelt
        close = [next(k for k in known if k.lower() == close[0])]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(known) if known else "none"
    return f"unknown {option} {given!r}{hint} (known: {listed})"


__all__ = ["KNOWN_NAMES_SQL", "unknown_name", "warehouse_names"]
