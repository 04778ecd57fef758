"""Compliance marts: one SQL file and one YAML file per mart, named after the table it builds.

The SQL (`<name>.sql`) reads top-down as named CTEs. Its last statement gives
the mart's rows; statements before it, if any, each create a temporary table
that the later ones read (the planner knows a table's size, not a CTE's:
opt_out_timeliness.sql says why it needs this), dropped once the mart is
built. Marts never hold a raw number: counts, or `salted_hash(...)` (the macro
of consent/storage/sql/macros.sql).

The YAML (`<name>.yml`, as dbt's model files) says what the mart is: its
description and grain, its keys (checked not null and unique after every
build), every column with its type and description (the table's comments, the
Dagster column schema, docs/tables.md), and how it is rebuilt after an
incremental run (`incremental.strategy`):

- `whole`: always rebuilt whole;
- `delete_insert`: the rows `incremental.rows` selects (the days from the
  earliest one touched, the messages or contacts touched; consent/storage/sql/
  mart_scope.sql says which) are deleted and built again in one transaction,
  with the same SQL restricted by the same condition, so both ways give the
  same table (a test builds both and compares);
- `by_difference`: the same, and the SQL adds to the rows it held
  (`<name>_before`: those `incremental.before` selects, typed from the YAML's
  columns) the touched contacts' history rows, statuses or violations the run
  wrote, less those it replaced (their cost follows what changed, not the
  history; a property test compares consent_daily with a whole build over
  generated histories).

A mart is built whole when it has no `mart_builds` row for the previous
published run with the same fingerprint (its SQL and YAML, mart_scope.sql and
send_macros.sql, the policy, the purposes present, a salted hash standing for the salt): a new warehouse,
a `--full` run, a changed policy, an erasure or a retention purge in between.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import polars as pl
import yaml

from consent.storage import sql
from consent.storage.db import drop_temporary, table_exists, transaction, upsert
from consent.storage.ducklake import is_lake_connection
from consent.storage.dictionary import Column, TableDoc, set_comments
from consent.domain.policy import Policy

FOLDER = Path(__file__).parent
MARTS: dict[str, str] = {path.stem: path.read_text(encoding="utf-8") for path in sorted(FOLDER.glob("*.sql"))}
YAMLS: dict[str, str] = {path.stem: path.read_text(encoding="utf-8") for path in sorted(FOLDER.glob("*.yml"))}


@cache
def statements(name: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """A mart's statements: (temporary table, the statement creating it) for each before the last,
    and the query of its rows."""
    *before, rows = sql.split(MARTS[name])
    tables = []
    for statement in before:
        created = _TEMP_TABLE.match(statement)
        if not created:
            raise ValueError(f"consent/marts/{name}.sql: a statement before the last must create a temporary "
                             f"table: {statement.splitlines()[0]!r}")
        tables.append((created.group(1), statement))
    return tuple(tables), rows


_TEMP_TABLE = re.compile(r"(?:--[^\n]*\n\s*)*CREATE OR REPLACE TEMP TABLE (\w+) AS\b", re.IGNORECASE)


def purpose_of(name: str) -> str:
    if name in SPECS:
        return SPECS[name].doc.description
    first = MARTS[name].splitlines()[0]
    return first.split(":", 1)[1].strip() if ":" in first else first.lstrip("- ")


# What each mart's YAML says (consent/marts/<name>.yml): its grain, keys, columns and how it is
# rebuilt after an incremental run (`whole`; `delete_insert`: the rows `rows` selects are deleted
# and built again; `by_difference`: the same, starting from the rows `before` selects as they were).
STRATEGIES = ("whole", "delete_insert", "by_difference")


@dataclass(frozen=True)
class Mart:
    doc: TableDoc
    strategy: str
    rows: str | None = None
    before: str | None = None
    # key columns where null is a value (the YAML's `nullable: true`)
    nullable_keys: tuple[str, ...] = ()


def _load(path: Path, text: str) -> Mart:
    spec = yaml.safe_load(text)
    columns = tuple(Column(c["name"], c["data_type"], " ".join(c["description"].split())) for c in spec["columns"])
    doc = TableDoc(spec["name"], " ".join(spec["description"].split()), columns, spec["grain"], tuple(spec["keys"]))
    incremental = spec["incremental"]
    nullable = tuple(c["name"] for c in spec["columns"] if c.get("nullable") and c["name"] in doc.keys)
    mart = Mart(doc, incremental["strategy"], incremental.get("rows"), incremental.get("before"), nullable)
    problems = _problems(mart, path.stem)
    if problems:
        raise ValueError(f"consent/marts/{path.name}: " + "; ".join(problems))
    return mart


def _problems(mart: Mart, stem: str) -> list[str]:
    names = {c.name for c in mart.doc.columns}
    checks = {
        f"name {mart.doc.name!r} is not the file's": mart.doc.name != stem,
        f"strategy {mart.strategy!r} is not one of {STRATEGIES}": mart.strategy not in STRATEGIES,
        "`rows` is needed unless the strategy is whole": (mart.strategy != "whole") != bool(mart.rows),
        "`before` is needed by (and only by) by_difference": (mart.strategy == "by_difference") != bool(mart.before),
        f"keys {sorted(set(mart.doc.keys) - names)} are not columns": bool(set(mart.doc.keys) - names),
        "no keys": not mart.doc.keys,
    }
    return [problem for problem, found in checks.items() if found]


SPECS: dict[str, Mart] = {name: _load(FOLDER / f"{name}.yml", text) for name, text in YAMLS.items()}

# The rows an incremental build replaces: the same condition deletes them and restricts the rebuild.
INCREMENTAL: dict[str, str] = {name: m.rows for name, m in SPECS.items() if m.strategy != "whole"}

# The marts built by difference: the columns of the rows each starts from (`<mart>_before`, a
# temporary table: the mart's rows before the build deletes them; none on a whole build), and which
# of its rows those are.
BEFORE: dict[str, tuple[str, str]] = {
    name: (", ".join(f"{c.name} {c.data_type}" for c in m.doc.columns), m.before)
    for name, m in SPECS.items() if m.strategy == "by_difference"
}


def key_problems(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, int]:
    """Rows whose key (the YAML's `keys`) has a null where the YAML does not allow one, and keys
    held by more than one row: both 0 when the mart's grain holds."""
    mart = SPECS[name]
    keys = ", ".join(mart.doc.keys)
    not_null = [k for k in mart.doc.keys if k not in mart.nullable_keys]
    null = " OR ".join(f"{k} IS NULL" for k in not_null) or "false"
    rows, held_twice = con.execute(
        f"SELECT (SELECT count(*) FROM {name} WHERE {null}), "
        f"(SELECT count(*) FROM (SELECT {keys} FROM {name} GROUP BY ALL HAVING count(*) > 1))"
    ).fetchone()
    return {"rows_with_a_null_key": int(rows), "keys_held_by_more_than_one_row": int(held_twice)}


def build(
    con: duckdb.DuckDBPyConnection,
    name: str,
    policy: Policy | None = None,
    *,
    run_id: str | None = None,
    full: bool = True,
    prepared: bool = False,
) -> int:
    """(Re)build one mart table; returns its row count.

    With `run_id` (the run that just published) and `full=False`, rebuilds only what that run
    changed when it can (see the module's docstring); `last_mode(con, name)` tells which way.
    `prepared`: the caller has already called `prepare(con, policy)` on this connection (a run
    builds every mart on one connection, and prepares it once). Contacts are hashed by the
    connection's `salted_hash` (defined where it was opened: consent/storage/access.py)."""
    policy = policy or Policy()
    if prepared:
        _reset_scope(con)
    else:
        prepare(con, policy)
    fingerprint = _fingerprint(con, name, policy)
    before, rows = statements(name)
    incremental = not full and run_id is not None and name in INCREMENTAL and _can_increment(con, name, run_id, fingerprint)
    # The temporary tables are made outside the transaction that writes the mart: a temporary
    # table made inside a transaction stays in memory until it commits, where DuckDB cannot
    # spill it. At 10M events opt_out_timeliness's two (180 MB) left its last statement too
    # little of the 1GB default, and it ran out of memory; made before it, it fits.
    try:
        if incremental:
            _scope(con, run_id, name)
            con.execute("SET VARIABLE mart_scoped = true")
        for _, statement in before:
            con.execute(statement)
        with transaction(con):
            if incremental:
                condition = INCREMENTAL[name]
                con.execute(f"DELETE FROM {name} WHERE {condition}")
                con.execute(f"INSERT INTO {name} SELECT * FROM ({rows}) WHERE {condition}")
            else:
                con.execute(f"CREATE OR REPLACE TABLE {name} AS {rows}")
                if name in SPECS:  # a table replaced loses its comments
                    set_comments(con, [SPECS[name].doc])
            if run_id is not None and table_exists(con, "mart_builds"):
                built_at = datetime.now(timezone.utc).replace(tzinfo=None)
                upsert(con, "mart_builds", {"mart": name, "run_id": run_id, "fingerprint": fingerprint,
                                            "mode": "incremental" if incremental else "full", "built_at": built_at})
    finally:
        # the temporary tables go with the build, built or not
        if incremental:
            con.execute("SET VARIABLE mart_scoped = false")
        drop_temporary(con, *(f"temp.main.{table}" for table, _ in before))
    return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


def fold_writes(con: duckdb.DuckDBPyConnection) -> None:
    """Write into the file what was committed on this DuckDB instance (a checkpoint), before the
    next mart: until then the blocks it wrote stay in memory. At 10M events, without it, the first
    mart built whole after the incremental ones ran out of the 1GB default. Nothing on DuckLake,
    where CHECKPOINT is the catalog's maintenance."""
    if not is_lake_connection(con):
        con.execute("CHECKPOINT")


def _scope(con: duckdb.DuckDBPyConnection, run_id: str, name: str) -> None:
    """What the run changed (consent/storage/sql/mart_scope.sql), computed once per run, as what the marts
    read: the temporary views `mart_messages`, `mart_contacts`, `mart_history` (their history),
    `mart_sends` (the messages sent to them), `mart_history_delta`, `mart_status_delta`,
    `mart_violations_delta`, `mart_decided_status` and `mart_replaced_status` (the touched contacts'
    statuses as written and as replaced), the variables `mart_since` (the first day to rebuild: a
    constant the optimiser can push below joins, a subquery it cannot) and `mart_previous_day`; and,
    for a mart built by difference (`name`, `BEFORE`), its rows before the build deletes them."""
    if not (table_exists(con, "staging.stg_mart_scope")
            and con.execute("SELECT run_id FROM staging.stg_mart_scope").fetchone() == (run_id,)):
        with transaction(con):  # its last table names the run: all of it, or none
            sql.run(con, "mart_scope", {"run_id": run_id})
    for view in ("messages", "contacts", "history", "sends"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_{view} AS SELECT * FROM staging.stg_mart_{view}")
    for delta in ("history", "status", "violations"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_{delta}_delta AS SELECT * FROM staging.stg_mart_{delta}_delta")
    con.execute("SET VARIABLE mart_since = (SELECT day FROM staging.stg_mart_since)")
    con.execute("SET VARIABLE mart_previous_day = (SELECT previous_day FROM staging.stg_mart_since)")
    for copy in ("decided", "replaced"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_{copy}_status AS SELECT * FROM staging.stg_{copy}_status")
    if name in BEFORE:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name}_before AS SELECT * FROM {name} WHERE {BEFORE[name][1]}")


def last_mode(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """How the mart was last built by a run: 'full' or 'incremental' (None: never by a run)."""
    row = con.execute("SELECT mode FROM mart_builds WHERE mart = ?", [name]).fetchone()
    return row[0] if row else None


def forget_builds(con: duckdb.DuckDBPyConnection) -> None:
    """Rows changed outside a run (erasure, retention): the next build of every mart is whole."""
    if table_exists(con, "mart_builds"):
        con.execute("DELETE FROM mart_builds")


def _fingerprint(con: duckdb.DuckDBPyConnection, name: str, policy: Policy) -> str:
    # A salted hash of a constant stands for the salt: a new salt changes every hash a mart holds,
    # so it rebuilds them all, and the salt itself is never read here.
    purposes, salted = con.execute(
        "SELECT list(DISTINCT purpose ORDER BY purpose), salted_hash('mart fingerprint') FROM consent_status"
    ).fetchone()
    parts = [MARTS[name], YAMLS.get(name, ""), *("\n".join(sql.statements(f)) for f in ("mart_scope", "send_macros")), policy.model_dump_json(),
             repr(purposes), salted]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _can_increment(con: duckdb.DuckDBPyConnection, name: str, run_id: str, fingerprint: str) -> bool:
    """The mart reflects the run published just before `run_id`, with the same fingerprint, and
    `run_id` is the incremental run whose staging tables are still there."""
    scratch = ("stg_run", "stg_touched", "stg_replaced_status", "stg_replaced_history", "stg_replaced_violations",
               "stg_decided_status", "stg_decided_history", "stg_decided_violations")
    if not all(table_exists(con, t) for t in (name, "mart_builds", *(f"staging.{s}" for s in scratch))):
        return False
    built = con.execute("SELECT run_id, fingerprint FROM mart_builds WHERE mart = ?", [name]).fetchone()
    staged = con.execute("SELECT run_id, mode FROM staging.stg_run").fetchone()
    previous = con.execute(
        "SELECT run_id FROM runs WHERE published_at IS NOT NULL AND run_id <> ? ORDER BY published_at DESC LIMIT 1",
        [run_id],
    ).fetchone()
    published = con.execute("SELECT count(*) FROM runs WHERE run_id = ? AND published_at IS NOT NULL", [run_id]).fetchone()[0]
    return (
        built is not None and built[1] == fingerprint and staged == (run_id, "incremental")
        and previous is not None and built[0] == previous[0] and published == 1
    )


def prepare(con: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    """What the policy says that marts read, as temporary tables of this connection:
    `business_calendar` (day, business_day_number: weekends and the holiday calendar's days do not
    count), `consent_validity` (purpose, region or null for any, days), and variables
    `opt_out_deadline_business_days`, `renewal_notice_days`; and nothing in scope (`_reset_scope`)."""
    _reset_scope(con)
    con.execute("SET VARIABLE opt_out_deadline_business_days = ?", [policy.opt_out_deadline_business_days])
    con.execute("SET VARIABLE renewal_notice_days = ?", [policy.renewal_notice_days])
    first, last = con.execute(
        "SELECT least(min(coalesce(occurred_at, ingested_at)), min(r.as_of))::DATE, "
        "greatest(max(coalesce(occurred_at, ingested_at)), max(r.as_of))::DATE "
        "FROM consent_events, (SELECT min(as_of) AS as_of FROM runs UNION ALL SELECT max(as_of) FROM runs) AS r"
    ).fetchone()
    first, last = first or date.today(), last or date.today()
    first, last = min(first, date.today()) - timedelta(days=366), max(last, date.today()) + timedelta(days=366)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    holidays = _holidays(policy.holiday_calendar, range(first.year, last.year + 1))
    numbers, count = [], 0
    for day in days:
        count += day.weekday() < 5 and day not in holidays
        numbers.append(count)
    calendar = pl.DataFrame({"day": days, "business_day_number": numbers, "holiday": [d in holidays for d in days]})
    con.register("calendar_frame", calendar)
    con.execute("CREATE OR REPLACE TEMP TABLE business_calendar AS SELECT * FROM calendar_frame")
    con.unregister("calendar_frame")
    validity = [
        (purpose, region, float(days))
        for purpose in policy.purposes
        for region, days in _validity_rows(policy, purpose)
    ]
    frame = pl.DataFrame(validity, schema={"purpose": pl.Utf8, "region": pl.Utf8, "days": pl.Float64}, orient="row")
    con.register("validity_frame", frame)
    con.execute("CREATE OR REPLACE TEMP TABLE consent_validity AS SELECT * FROM validity_frame")
    con.unregister("validity_frame")


def _reset_scope(con: duckdb.DuckDBPyConnection) -> None:
    """Nothing in scope until an incremental build says otherwise (the marts' SQL names these views)."""
    con.execute("SET VARIABLE mart_scoped = false")
    con.execute("CREATE OR REPLACE TEMP VIEW mart_messages AS SELECT NULL::VARCHAR AS message_id WHERE false")
    con.execute("CREATE OR REPLACE TEMP VIEW mart_contacts AS "
                "SELECT NULL::VARCHAR AS business, NULL::VARCHAR AS contact_id WHERE false")
    # whole tables: every contact's history, every message sent
    con.execute("CREATE OR REPLACE TEMP VIEW mart_history AS SELECT * FROM consent_status_history")
    con.execute("CREATE OR REPLACE TEMP VIEW mart_sends AS SELECT * FROM business_sends()")
    con.execute("SET VARIABLE mart_since = NULL::DATE")
    con.execute("SET VARIABLE mart_previous_day = NULL::DATE")
    for delta, table in (("history", "consent_status_history"), ("status", "consent_status"),
                         ("violations", "consent_violations")):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_{delta}_delta AS SELECT NULL::INTEGER AS sign, * FROM {table} WHERE false")
    for copy in ("decided", "replaced"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_{copy}_status AS SELECT * FROM consent_status WHERE false")
    for name, (columns, _) in BEFORE.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name}_before ({columns})")


def _validity_rows(policy: Policy, purpose: str) -> list[tuple[str | None, float]]:
    v = policy.consent_validity_days
    per = v.get(purpose, v.get("default")) if isinstance(v, dict) else v
    if per is None:
        return []
    if isinstance(per, dict):
        return [(None if region == "default" else region, days) for region, days in per.items()]
    return [(None, per)]


@lru_cache(maxsize=8)
def _holidays(calendar: str | None, years: range) -> frozenset[date]:
    """The calendar's public holidays (once per process: every mart of a run asks)."""
    if not calendar:
        return frozenset()
    import holidays

    return frozenset(holidays.country_holidays(calendar, years=years))
