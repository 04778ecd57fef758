"""The pre-send gate: may each contact of an audience be messaged for a purpose, and why.

Plain Python over a DuckDB connection. An audience is a CSV someone else
built (a CRM segment, an upload): a `phone` column (any spelling, with a
`country` column or a default region) and/or a `whatsapp_user_id` column;
other columns are kept as they are. Each row gets a decision (`send` or
`block`) and the reason, from the status the warehouse held at the moment
asked (`consent_status_history`), so a past send can be re-checked as of its
time, with what time alone changes applied at that moment (a closed double
opt-in window, a lapsed consent). A row naming a number and a BSUID not linked
to it is blocked if either contact is (consent-rules.md section 11). The decision is one DuckDB join over the audience, not a Python loop;
only spellings the warehouse has never seen are parsed by `phonenumbers`.
Every check is logged (`send_checks`, `send_check_rows`, recipients as
salted hashes only).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import polars as pl

from consent.storage import sql
from consent.domain.events import BSUID, PARENT_BSUID
from consent.domain.csv_safe import safe_csv_text
from consent.domain.phones import METADATA_VERSION, normalise_frame
from consent.domain.policy import Policy

SEND_REASONS = ("opted_in", "consent_renewal_due")
REASONS = (
    "opted_in", "consent_renewal_due", "opted_out", "no_consent", "pending", "expired", "erased",
    "unknown_contact", "invalid_number", "invalid_user_id",
)
DECISION_COLUMNS = ("decision", "reason", "status_since", "evidence_event_id")


class AudienceError(ValueError):
    """The audience file cannot be checked (CLI exit 2)."""


@dataclass
class Audience:
    frame: pl.DataFrame  # every column as text, as in the file
    phone: str | None  # the column names found (case-insensitive)
    country: str | None
    user_id: str | None
    file_hash: str
    name: str


def read_audience(path: Path) -> Audience:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudienceError(f"cannot read the audience {path}: {exc.strerror}") from exc
    try:
        frame = pl.read_csv(data, infer_schema=False, truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise AudienceError(f"{path.name}: not a readable CSV ({str(exc).splitlines()[0][:120]})") from exc
    named = {c.strip().lstrip("\ufeff").lower(): c for c in frame.columns}
    phone, country, user = named.get("phone"), named.get("country"), named.get("whatsapp_user_id")
    if phone is None and user is None:
        raise AudienceError(f"{path.name}: the audience needs a `phone` or a `whatsapp_user_id` column")
    for reserved in DECISION_COLUMNS:
        if reserved in named:
            raise AudienceError(f"{path.name}: the audience already has a `{reserved}` column")
    return Audience(frame, phone, country, user, hashlib.sha256(data).hexdigest(), path.name)


def _identifiers(con: duckdb.DuckDBPyConnection, audience: Audience, default_region: str | None,
                 workers: int) -> pl.DataFrame:
    """Per row: the E.164 number (or why the phone is invalid) and the BSUID given."""
    frame = audience.frame

    def text(column: str | None) -> pl.Expr:
        return pl.col(column).fill_null("").str.strip_chars() if column else pl.lit("")

    rows = frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
        text(audience.phone).alias("phone_raw"),
        text(audience.country).str.to_uppercase().alias("hint"),
        text(audience.user_id).alias("user_raw"),
    ).with_columns(
        hint=pl.when(pl.col("hint") != "").then(pl.col("hint")).otherwise(pl.lit(default_region or "").str.to_uppercase())
    )
    pairs = rows.filter(pl.col("phone_raw") != "").select("phone_raw", "hint").unique()
    # A number already in canonical form that the warehouse knows needs no parsing.
    con.register("audience_pairs", pairs)
    try:
        known = sql.run(con, "audience_known", {"version": METADATA_VERSION}).pl()
    finally:
        con.unregister("audience_pairs")
    known = known.cast({"phone_e164": pl.Utf8, "invalid_reason": pl.Utf8}).unique(["phone_raw", "hint"])
    missing = pairs.join(known, on=["phone_raw", "hint"], how="anti")
    fresh = normalise_frame([(r, h or None) for r, h in missing.iter_rows()], workers=workers)
    fresh = fresh.select(
        "phone_raw", pl.col("country_hint").fill_null("").alias("hint"), "phone_e164", "invalid_reason"
    )
    book = pl.concat([known.select(fresh.columns), fresh], how="vertical")
    valid_user = pl.col("user_raw").str.contains(f"^(?:{BSUID.pattern}|{PARENT_BSUID.pattern})$")
    return rows.join(book, on=["phone_raw", "hint"], how="left", maintain_order="left").select(
        "row_number",
        (pl.col("phone_raw") != "").alias("phone_given"),
        "phone_raw",
        "phone_e164",
        pl.when(valid_user).then(pl.col("user_raw")).alias("user_id"),
        ((pl.col("user_raw") != "") & ~valid_user).alias("user_invalid"),
    )


def decide(con: duckdb.DuckDBPyConnection, audience: Audience, *, purpose: str, business: str, at: datetime,
           policy: Policy, default_region: str | None = None, workers: int = 1) -> pl.DataFrame:
    """The audience's rows with `decision`, `reason`, `status_since`, `evidence_event_id` (and, for
    the log, `row_number` and the identifier to hash), in the audience's order."""
    ids = _identifiers(con, audience, default_region, workers)
    con.register("audience", ids)
    try:
        found = sql.run(con, "audience_decisions", {"business": business, "purpose": purpose, "at": at}).pl()
    finally:
        con.unregister("audience")
    found = found.sort("row_number")
    number, user = contact_reason(found, policy, purpose, at, ""), contact_reason(found, policy, purpose, at, "u_")
    invalid = (
        pl.when(pl.col("phone_given") & pl.col("phone_e164").is_null()).then(pl.lit("invalid_number"))
        .when(pl.col("user_invalid")).then(pl.lit("invalid_user_id"))
        .when(pl.col("erased")).then(pl.lit("erased"))
        .when(pl.col("user_own_status") == "opted_out").then(pl.lit("opted_out"))
    )
    # A row naming a number and a BSUID not linked to it is blocked if either is; the reason is that one's.
    sends = list(SEND_REASONS)
    by_user = pl.col("u_named") & pl.col("reason").is_in(sends) & ~pl.col("u_reason").is_in(sends)
    decided = found.with_columns(number + user).with_columns(
        reason=pl.coalesce(invalid, pl.when(by_user).then(pl.col("u_reason")).otherwise(pl.col("reason"))),
        status_since=pl.when(by_user).then(pl.col("u_since")).otherwise(pl.col("since")),
        evidence_event_id=pl.when(by_user).then(pl.col("u_evidence_event_id")).otherwise(pl.col("evidence_event_id")),
    ).with_columns(
        decision=pl.when(pl.col("reason").is_in(sends)).then(pl.lit("send")).otherwise(pl.lit("block")),
    )
    out = pl.concat(
        [audience.frame, decided.select("decision", "reason", "status_since", "evidence_event_id")], how="horizontal"
    )
    return out.with_columns(
        __row=decided["row_number"], __identifier=pl.coalesce(decided["phone_e164"], decided["user_id"], decided["phone_raw"]),
    )


def contact_reason(found: pl.DataFrame, policy: Policy, purpose: str, at: datetime, prefix: str) -> list[pl.Expr]:
    """`<prefix>reason` and `<prefix>since` of one contact of each row, as of `at`: its status then, with
    every time-dependent rule applied at `at` (a closed double opt-in window or a lapsed consent
    reads `expired` from the moment it closed, whatever the last run saw)."""
    col = lambda name: pl.col(prefix + name)  # noqa: E731
    regions = found.get_column(prefix + "phone_region").unique().to_list()
    validity = col("phone_region").replace_strict(
        {r: policy.validity_days(purpose, r) for r in regions}, default=policy.validity_days(purpose), return_dtype=pl.Float64)
    expires = col("consent_at") + pl.duration(days=validity)
    window_closes = col("status_since") + pl.duration(days=policy.confirmation_window_days)
    lapsed = (col("status") == "opted_in") & validity.is_not_null() & (expires <= pl.lit(at))
    closed = (col("status") == "pending") & (window_closes <= pl.lit(at))
    # an opt-in whose evidence event is not known is no consent (the reconciler never writes one)
    unproven = (col("status") == "opted_in") & col("consent_event_id").is_null()
    reason = (
        pl.when(col("status").is_null() & ~col("known")).then(pl.lit("unknown_contact"))
        .when(col("status").is_null() | unproven).then(pl.lit("no_consent"))
        .when(lapsed | closed).then(pl.lit("expired"))
        .when((col("status") == "opted_in") & validity.is_not_null()
              & (expires - pl.duration(days=policy.renewal_notice_days) <= pl.lit(at)))
        .then(pl.lit("consent_renewal_due"))
        .otherwise(col("status"))
    )
    since = (
        pl.when(col("status").is_null()).then(pl.lit(None, pl.Datetime("us")))
        .when(lapsed).then(expires).when(closed).then(window_closes)
        .otherwise(col("status_since"))
    )
    return [reason.alias(prefix + "reason"), since.alias(prefix + "since")]


RENEWAL_COLUMNS = ("phone_e164", "whatsapp_user_id", "consent_at", "channel", "consent_method", "expires_at")
# The contacts opted in at $at, per business and purpose (consent/storage/sql/opted_in_at.sql).
OPTED_IN_AT = sql.statements("opted_in_at")[0]


def renewals_due(rows: list[tuple], policy: Policy, purpose: str, at: datetime) -> list[tuple]:
    """Of the contacts opted in at `at` (rows of `OPTED_IN_AT`), those whose consent lapses within the
    renewal notice, as of `at`: one that has lapsed by then is expired, no longer renewable."""
    due = []
    for phone, user, consent_at, channel, method, region in rows:
        days = policy.validity_days(purpose, region)
        if days is None or consent_at is None:
            continue
        expires = consent_at + timedelta(days=days)
        if expires - timedelta(days=policy.renewal_notice_days) <= at < expires:
            due.append((phone, user, consent_at, channel, method, expires))
    return due


def summary(decided: pl.DataFrame) -> dict[str, int]:
    counts = decided.group_by("reason").len().sort("reason")
    return {reason: int(n) for reason, n in counts.iter_rows()}


def record_check(con: duckdb.DuckDBPyConnection, decided: pl.DataFrame, audience: Audience, *, purpose: str,
                 business: str, at: datetime, run_id: str | None = None) -> str:
    """Append the check to `send_checks` and its rows to `send_check_rows` (salted hashes only, by the
    connection's `salted_hash`)."""
    check_id = uuid.uuid4().hex
    counts = summary(decided)
    sendable = int((decided["decision"] == "send").sum())
    con.execute("BEGIN")
    try:
        con.execute(
            "INSERT INTO send_checks BY NAME SELECT $check_id AS check_id, $file AS audience_file, $hash AS audience_hash, "
            "$purpose AS purpose, $business AS business, $at AS status_at, $now AS checked_at, $rows AS rows_checked, "
            "$sendable AS sendable, $blocked AS blocked, $reasons AS reasons, $run_id AS run_id",
            {"check_id": check_id, "file": audience.name, "hash": audience.file_hash, "purpose": purpose,
             "business": business, "at": at, "now": datetime.now(timezone.utc).replace(tzinfo=None),
             "rows": decided.height, "sendable": sendable, "blocked": decided.height - sendable,
             "reasons": json.dumps(counts), "run_id": run_id},
        )
        con.register("checked_rows", decided.select("__row", "__identifier", "decision", "reason"))
        con.execute(
            "INSERT INTO send_check_rows BY NAME SELECT $check_id AS check_id, __row AS row_number, "
            "CASE WHEN __identifier IS NOT NULL AND __identifier <> '' THEN salted_hash(__identifier) END AS recipient_hash, "
            "decision, reason FROM checked_rows",
            {"check_id": check_id},
        )
        con.unregister("checked_rows")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return check_id


def write_decisions(decided: pl.DataFrame, out, fmt: str) -> None:
    """The audience with its decisions, as CSV or JSON (file path or text stream)."""
    public = decided.drop("__row", "__identifier")
    if fmt == "json":
        text = json.dumps(public.with_columns(pl.col("status_since").cast(pl.Utf8)).to_dicts(), indent=1, default=str)
        if isinstance(out, (str, Path)):
            Path(out).write_text(text + "\n", encoding="utf-8")
        else:
            out.write(text + "\n")
        return
    # Audience columns are the sender's own text: a would-be formula is escaped like every CSV cell.
    text = safe_csv_text(public.write_csv())
    if isinstance(out, (str, Path)):
        Path(out).write_text(text, encoding="utf-8")
    else:
        out.write(text)


def sendable_rows(decided: pl.DataFrame, audience: Audience) -> pl.DataFrame:
    """The audience's own columns, only the rows that may be sent to."""
    return decided.filter(pl.col("decision") == "send").select(audience.frame.columns)


__all__ = ["Audience", "AudienceError", "REASONS", "decide", "read_audience", "record_check", "renewals_due", "summary",
           "write_decisions", "sendable_rows"]
