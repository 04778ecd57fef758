"""Compliance marts: one SQL file per mart, named after the table it builds.

Each file starts with `-- <name>: <what one row is>` and reads top-down as
named CTEs. Marts never hold a raw number: counts, or `salted_hash(...)`
(the macro of consent/sql/macros.sql). `build` replaces the table in one statement.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

from consent.policy import Policy
from consent.sql import use_salt

FOLDER = Path(__file__).parent
MARTS: dict[str, str] = {path.stem: path.read_text(encoding="utf-8") for path in sorted(FOLDER.glob("*.sql"))}


def purpose_of(name: str) -> str:
    first = MARTS[name].splitlines()[0]
    return first.split(":", 1)[1].strip() if ":" in first else first.lstrip("- ")


def build(con: duckdb.DuckDBPyConnection, name: str, salt: str, policy: Policy | None = None) -> int:
    """(Re)build one mart table; returns its row count."""
    use_salt(con, salt)
    prepare(con, policy or Policy())
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {MARTS[name]}")
    return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


def prepare(con: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    """What the policy says that marts read, as temporary tables of this connection:
    `business_calendar` (day, business_day_number: weekends and the holiday calendar's days do not
    count), `consent_validity` (purpose, region or null for any, days), and variables
    `opt_out_deadline_business_days`, `renewal_notice_days`."""
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


def _validity_rows(policy: Policy, purpose: str) -> list[tuple[str | None, float]]:
    v = policy.consent_validity_days
    per = v.get(purpose, v.get("default")) if isinstance(v, dict) else v
    if per is None:
        return []
    if isinstance(per, dict):
        return [(None if region == "default" else region, days) for region, days in per.items()]
    return [(None, per)]


def _holidays(calendar: str | None, years: range) -> set[date]:
    if not calendar:
        return set()
    import holidays

    return set(holidays.country_holidays(calendar, years=years))
