"""Histories decided in SQL: the touched contacts whose events set-based DuckDB SQL decides exactly
as the state machine does, decided in one pass over all of them.

The state machine (`consent.domain.reconcile.ConsentStateMachine`) stays the reference and decides every
other contact. SQL takes a contact only when each of its events is an opt-in (or a confirmation)
on a channel without double opt-in, an opt-out, a resume or an inbound message, and only under a
policy without consent validity (`sql_decidable.sql` says the rest). There, purposes are
independent, violations belong to single events, and a status is the last of a few moves: rows
SQL can write with window functions. `SQL_DECISIONS = False` sends every contact to Python.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Mapping, Sequence

import duckdb
import polars as pl

from consent.domain.notices import NoticeTerms
from consent.domain.policy import Policy
from consent.domain.rules import ASSESSED, RULES
from consent.domain.schema import CONSENT_STATUS, CONSENT_STATUS_HISTORY, CONSENT_VIOLATIONS
from consent.storage import sql
from consent.storage.db import drop_temporary, table_exists

# The switch: False decides every contact with the state machine (tests and benchmarks compare).
SQL_DECISIONS = True
# The rules sql_decidable.sql judges. A rule added to the registry and not to the SQL turns the SQL
# path off (every contact to Python) until it is written there too.
SQL_RULES = frozenset({
    "missing_consent_date", "future_date", "missing_consent_method", "method_not_active",
    "pre_ticked_checkbox", "bundled_with_terms", "non_organic_source", "missing_purposes",
    "missing_notice_version", "notice_unknown", "notice_not_valid_at_opt_in", "notice_deficient",
    "notice_names_other_business",
})
OUTPUTS = (
    (CONSENT_STATUS, "sql_status_rows", "staging.stg_decided_status"),
    (CONSENT_STATUS_HISTORY, "sql_history_rows", "staging.stg_decided_history"),
    (CONSENT_VIOLATIONS, "sql_violation_rows", "staging.stg_decided_violations"),
)


def applies(policy: Policy, notices: Mapping[str, NoticeTerms]) -> bool:
    """Whether the SQL path may decide anything under this policy and notices registry."""
    return (
        SQL_DECISIONS
        and not policy.consent_expires  # expiry by validity is left to the state machine
        and {rule.name for rule in ASSESSED} == SQL_RULES
        and "" not in notices
    )


def _register_policy(
    con: duckdb.DuckDBPyConnection, policy: Policy, as_of: datetime, notices: Mapping[str, NoticeTerms]
) -> None:
    settings = pl.DataFrame([{
        "policy_purposes": list(dict.fromkeys(policy.purposes)),
        "doi_channels": list(policy.double_opt_in_channels),
        "active_methods": list(policy.active_consent_methods),
        "refusing_rules": [name for name in RULES if policy.refuses(name)],
        "notices_kept": bool(notices),
        "future_limit": as_of + timedelta(minutes=policy.clock_skew_minutes),
    }], schema={"policy_purposes": pl.List(pl.Utf8), "doi_channels": pl.List(pl.Utf8), "active_methods": pl.List(pl.Utf8),
                "refusing_rules": pl.List(pl.Utf8), "notices_kept": pl.Boolean, "future_limit": pl.Datetime("us")})
    rules = pl.DataFrame(
        [(name, policy.severity(name), policy.refuses(name)) for name in RULES],
        schema={"rule": pl.Utf8, "severity": pl.Utf8, "refuses": pl.Boolean}, orient="row",
    )
    terms = pl.DataFrame(
        [(version, sorted(t.purposes), t.valid_from, t.valid_until, bool(t.deficiencies), t.business)
         for version, t in notices.items()],
        schema={"n_version": pl.Utf8, "n_purposes": pl.List(pl.Utf8), "n_valid_from": pl.Datetime("us"),
                "n_valid_until": pl.Datetime("us"), "n_deficient": pl.Boolean, "n_business": pl.Utf8},
        orient="row",
    )
    for table, frame in (("sql_policy", settings), ("sql_rules", rules), ("sql_notices", terms)):
        con.register(f"{table}_frame", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {table}_frame")
        con.unregister(f"{table}_frame")


def quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def decide_touched(
    con: duckdb.DuckDBPyConnection, policy: Policy, as_of: datetime, notices: Mapping[str, NoticeTerms],
    ranges: Callable[[], Sequence[tuple[str, str, int]]] = lambda: [(None, None, 0)],
) -> int:
    """Decide in SQL the contacts of `touched_history` it can decide exactly, write their statuses,
    history and violations (and the incremental run's `stg_decided_*` copies), and take them out of
    `touched_history`, which the state machine then decides. One range of contacts at a time
    (`ranges()`: first and last contact key, inclusive; None: unbounded): what SQL holds at once is
    bounded by a range's events, not the night's (deciding 5M events' contacts at once ran out of
    memory under the 1GB default). The number of contacts decided here."""
    if not applies(policy, notices):
        return 0
    _register_policy(con, policy, as_of, notices)
    decided = 0
    try:
        for low, high, _ in ranges():
            bounds = [f"contact_key {op} {quoted(key)}" for op, key in ((">=", low), ("<=", high)) if key is not None]
            con.execute("CREATE OR REPLACE TEMP VIEW sql_history AS SELECT * FROM touched_history "
                        f"WHERE {' AND '.join(bounds) or 'true'}")  # a view takes no parameters
            sql.run(con, "sql_decidable")
            sql.run(con, "sql_decisions")
            for table, rows, kept in OUTPUTS:
                con.execute(f"INSERT INTO {table.name} BY NAME SELECT * FROM {rows}")
                if table_exists(con, kept):  # an incremental run keeps what it decided
                    con.execute(f"INSERT INTO {kept} BY NAME SELECT * FROM {rows}")
            con.execute("DELETE FROM touched_history WHERE contact_key IN (SELECT contact_key FROM sql_contacts)")
            decided += con.execute("SELECT count(*) FROM sql_contacts").fetchone()[0]
        return decided
    finally:
        drop_temporary(con, "sql_contacts", "sql_events", "sql_moves", "sql_policy", "sql_rules", "sql_notices",
                       *(rows for _, rows, _ in OUTPUTS))
        drop_temporary(con, "sql_history", view=True)
