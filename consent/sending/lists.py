"""The sendable list and the suppression list as they stood at a moment (`consent export --at`).

Both are read from `consent_status_history`: the status each contact had at that moment, as the
warehouse knows it today (an event imported late, or a rule changed since, is in it). The sendable
list keeps the contacts the pre-send gate would let through at that moment (`consent check --at`):
opted in with the evidence of the consent, with the policy's validity applied at that moment (a
consent lapsed by then is not sendable, one due for renewal still is). Erased contacts have no
history left. What the warehouse itself said at that moment is a DuckLake snapshot
(docs/ducklake.md), not this.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from consent.domain.policy import Policy
from consent.sending.gate import SEND_REASONS, contact_reason
from consent.storage import sql

# The status of each contact of $business for $purpose at $at (consent/storage/sql/status_at.sql).
STATUS_AT = sql.statements("status_at")[0]
# The suppression list at $at (consent/storage/sql/suppression_at.sql).
SUPPRESSION_AT = sql.statements("suppression_at")[0]
SENDABLE_COLUMNS = ("phone_e164", "whatsapp_user_id")
_STATUS_SCHEMA = {
    "phone_e164": pl.Utf8, "whatsapp_user_id": pl.Utf8, "contact_id": pl.Utf8, "status": pl.Utf8,
    "status_since": pl.Datetime("us"), "consent_event_id": pl.Utf8, "consent_at": pl.Datetime("us"),
    "phone_region": pl.Utf8,
}


def sendable_at(columns: list[str], rows: list[tuple], policy: Policy, purpose: str, at: datetime) -> list[tuple]:
    """Of the statuses at `at` (rows of `STATUS_AT`, in contact order), the contacts that may be
    messaged for `purpose` then, by the gate's own rules: (phone_e164, whatsapp_user_id) each."""
    frame = pl.DataFrame(rows, schema={c: _STATUS_SCHEMA[c] for c in columns}, orient="row")
    if frame.is_empty():
        return []
    decided = frame.with_columns(known=pl.lit(True)).pipe(
        lambda f: f.with_columns(contact_reason(f, policy, purpose, at, "")))
    return decided.filter(pl.col("reason").is_in(list(SEND_REASONS))).select(SENDABLE_COLUMNS).rows()
