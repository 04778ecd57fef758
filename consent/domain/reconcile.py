"""The consent state machine: events of one contact in, status per purpose out.

Implements sections 3 to 6 of consent-rules.md. Plain Python, no Dagster, no
DuckDB: `reconcile` takes the full event history of a set of contacts (from
the ledger) and returns their `consent_status` and `consent_violations` rows.

Ordering (section 5): events are applied by effective time (`occurred_at`, or
the ingestion time for an undated opt-out), then opt-ins before resumes and
messages before opt-outs, so that at equal instants the opt-out is applied
last and wins, then by `event_id`. Nothing depends on arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import count, groupby
from typing import Callable, Iterator, Mapping

import phonenumbers
import polars as pl

from consent.domain.notices import NoticeTerms
from consent.domain.policy import Policy
from consent.domain.rules import ASSESSED
from consent.domain.schema import HISTORY_SCHEMA, STATUS_SCHEMA, VIOLATION_SCHEMA

STATUSES = ("opted_in", "opted_out", "pending", "expired", "no_consent")
_APPLY_RANK = {
    "opt_in": 0, "opt_in_request": 0, "opt_in_confirm": 0, "resume": 1, "inbound_message": 1, "opt_out": 2,
    "number_change": 2,
}

# Columns the state machine reads from the ledger, in this order. `contact_key` (business and
# contact id) groups a contact's events; `inherited` marks events that reach the contact from
# another (the old number of a number change; an all-businesses opt-out): they apply, but their
# violations belong to the contact that gave them.
CONTACT_COLUMNS = ("contact_key", "business", "contact_id", "inherited", "whatsapp_user_id", "changed_to")
LEDGER_COLUMNS = (
    "phone_e164", "event_id", "channel", "event_type", "purposes", "occurred_at",
    "ingested_at", "consent_method", "notice_version", "checkbox_pre_ticked",
    "bundled_with_terms", "acquisition_source", "source_file", "source_line",
)
INPUT_COLUMNS = CONTACT_COLUMNS + LEDGER_COLUMNS

@dataclass(slots=True)
class Event:
    contact_key: str
    business: str
    contact_id: str
    inherited: bool
    whatsapp_user_id: str | None
    changed_to: str | None
    phone_e164: str | None
    event_id: str
    channel: str
    event_type: str
    purposes: list[str]
    occurred_at: datetime | None
    ingested_at: datetime
    consent_method: str | None
    notice_version: str | None
    checkbox_pre_ticked: bool | None
    bundled_with_terms: bool | None
    acquisition_source: str | None
    source_file: str
    source_line: int

    @property
    def effective_at(self) -> datetime:
        # Rule 4: an undated opt-out applies at ingestion time.
        return self.occurred_at or self.ingested_at

    def sort_key(self) -> tuple:
        return (self.effective_at, _APPLY_RANK.get(self.event_type, 1), self.event_id)


@dataclass(slots=True)
class Evidence:
    """Proof of one consent: what `opted_in` rows carry."""

    event_id: str
    channel: str
    consent_method: str | None
    consent_at: datetime
    notice_version: str | None
    source_file: str
    source_line: int


_KEEP = object()


@dataclass(slots=True)
class PurposeState:
    status: str = "no_consent"
    since: datetime | None = None
    decided_by: Event | None = None
    evidence: Evidence | None = None
    last_valid_consent: Evidence | None = None
    opted_out_at: datetime | None = None
    opt_out_event: Event | None = None
    pending_request: Event | None = None
    # (status, since, deciding event, consent evidence) at every change, in time order.
    history: list[tuple] = field(default_factory=list)

    def move(self, status: str, since: datetime, decided_by: Event | None = None, evidence=_KEEP) -> None:
        self.status, self.since = status, since
        if decided_by is not None:
            self.decided_by = decided_by
        if evidence is not _KEEP:
            self.evidence = evidence
        self.history.append((status, since, self.decided_by, self.evidence))


@dataclass
class Violation:
    event: Event
    rule: str
    severity: str
    refused: bool


@dataclass
class ContactResult:
    states: dict[str, PurposeState]
    violations: list[Violation] = field(default_factory=list)
    # How long a consent stays valid, per purpose, for this contact's number.
    validity: dict[str, timedelta | None] = field(default_factory=dict)


def _days(days: float | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


@lru_cache(maxsize=65536)
def region_of(contact_id: str) -> str | None:
    """The ISO region of an E.164 number (None for a BSUID)."""
    if not contact_id.startswith("+"):
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(contact_id, None))
    except phonenumbers.NumberParseException:
        return None


class ConsentStateMachine:
    """Applies one contact's events in time order, per purpose."""

    def __init__(self, policy: Policy, as_of: datetime, notices: Mapping[str, NoticeTerms] | None = None):
        self.policy = policy
        self.as_of = as_of
        # The notices registry; empty means no registry is kept and notice rules do not apply.
        self.notices = notices or {}
        self.window = timedelta(days=policy.confirmation_window_days)
        # Consent validity per purpose (and per country of the number when the policy says so).
        self.validity = {p: _days(policy.validity_days(p)) for p in policy.purposes}
        self.future_limit = as_of + timedelta(minutes=policy.clock_skew_minutes)
        self.doi_channels = set(policy.double_opt_in_channels)
        self.active_methods = set(policy.active_consent_methods)

    # -- what counts as consent (section 3): the rule registry -------------
    def assess(self, event: Event, double_opt_in: bool) -> list[tuple[str, bool]]:
        """(rule, refuses consent) for each registered rule the opt-in event breaks."""
        return [
            (rule.name, self.policy.refuses(rule.name))
            for rule in ASSESSED
            if getattr(self, f"_breaks_{rule.name}")(event, double_opt_in)
        ]

    def _breaks_missing_consent_date(self, event: Event, double_opt_in: bool) -> bool:
        return event.occurred_at is None

    def _breaks_future_date(self, event: Event, double_opt_in: bool) -> bool:
        return event.occurred_at is not None and event.occurred_at > self.future_limit

    def _breaks_missing_consent_method(self, event: Event, double_opt_in: bool) -> bool:
        # In a double opt-in the method is the confirmation link itself.
        return not double_opt_in and not event.consent_method

    def _breaks_method_not_active(self, event: Event, double_opt_in: bool) -> bool:
        return not double_opt_in and bool(event.consent_method) and event.consent_method not in self.active_methods

    def _breaks_pre_ticked_checkbox(self, event: Event, double_opt_in: bool) -> bool:
        return bool(event.checkbox_pre_ticked)

    def _breaks_bundled_with_terms(self, event: Event, double_opt_in: bool) -> bool:
        return bool(event.bundled_with_terms)

    def _breaks_non_organic_source(self, event: Event, double_opt_in: bool) -> bool:
        return (event.acquisition_source or "organic") != "organic"

    def _breaks_missing_purposes(self, event: Event, double_opt_in: bool) -> bool:
        return not event.purposes and event.event_type != "opt_in_confirm"

    def _breaks_missing_notice_version(self, event: Event, double_opt_in: bool) -> bool:
        return not event.notice_version

    def _notice(self, event: Event) -> NoticeTerms | None:
        return self.notices.get(event.notice_version) if event.notice_version else None

    def _breaks_notice_unknown(self, event: Event, double_opt_in: bool) -> bool:
        # Without a registry, notice rules do not apply.
        return bool(event.notice_version and self.notices) and self._notice(event) is None

    def _breaks_notice_not_valid_at_opt_in(self, event: Event, double_opt_in: bool) -> bool:
        notice = self._notice(event)
        return notice is not None and event.occurred_at is not None and not notice.valid_at(event.occurred_at)

    def _breaks_notice_deficient(self, event: Event, double_opt_in: bool) -> bool:
        notice = self._notice(event)
        return notice is not None and bool(notice.deficiencies)

    def _breaks_notice_names_other_business(self, event: Event, double_opt_in: bool) -> bool:
        notice = self._notice(event)
        return notice is not None and notice.business is not None and notice.business != event.business

    def _covered(self, result: ContactResult, event: Event, purposes: list[str], notice_version: str | None) -> list[str]:
        """The purposes the notice shown actually asks for: consent is granted for those only."""
        notice = self.notices.get(notice_version or "")
        if notice is None:
            return purposes
        uncovered = [p for p in purposes if p not in notice.purposes]
        if uncovered:
            self._violate(result, event, "notice_does_not_cover_purpose")
        return [p for p in purposes if p in notice.purposes]

    def _violate(self, result: ContactResult, event: Event, rule: str) -> None:
        if event.inherited:  # recorded once, on the contact that gave the event
            return
        result.violations.append(Violation(event, rule, self.policy.severity(rule), self.policy.refuses(rule)))

    def run(self, events: list[Event]) -> ContactResult:
        result = ContactResult(states={p: PurposeState() for p in self.policy.purposes})
        if self.policy.validity_by_country:
            region = region_of(events[0].contact_id)
            result.validity = {p: _days(self.policy.validity_days(p, region)) for p in self.policy.purposes}
        else:
            result.validity = self.validity
        for event in sorted(events, key=Event.sort_key):
            handler = getattr(self, f"_on_{event.event_type}", None)
            if handler is not None:
                self._advance(result, event.effective_at)
                handler(result, event)
        self._advance(result, self.as_of)
        return result

    def _targets(self, result: ContactResult, event: Event) -> list[str]:
        if not event.purposes:  # opt-outs and resumes without purposes mean all purposes
            return list(result.states)
        return [p for p in event.purposes if p in result.states]

    def _passes(self, result: ContactResult, event: Event, double_opt_in: bool) -> bool:
        ok = True
        for rule, refuses in self.assess(event, double_opt_in):
            self._violate(result, event, rule)
            ok = ok and not refuses
        return ok

    def _grant(self, state: PurposeState, event: Event, evidence: Evidence) -> None:
        state.move("opted_in", event.effective_at, event, evidence)
        state.last_valid_consent = evidence
        state.pending_request = None

    # -- event handlers ---------------------------------------------------
    def _on_opt_in(self, result: ContactResult, event: Event) -> None:
        if event.channel in self.doi_channels:
            # Rule 7: on email/SMS links a click is only a request.
            self._on_opt_in_request(result, event)
            return
        if not self._passes(result, event, double_opt_in=False):
            return
        evidence = Evidence(
            event.event_id, event.channel, event.consent_method, event.occurred_at,
            event.notice_version, event.source_file, event.source_line,
        )
        for purpose in self._covered(result, event, self._targets(result, event), event.notice_version):
            self._grant(result.states[purpose], event, evidence)

    def _on_opt_in_request(self, result: ContactResult, event: Event) -> None:
        if not self._passes(result, event, double_opt_in=True):
            return
        for purpose in self._targets(result, event):
            state = result.states[purpose]
            state.pending_request = event
            if state.status != "opted_in":
                state.move("pending", event.effective_at, event, None)

    def _on_opt_in_confirm(self, result: ContactResult, event: Event) -> None:
        if event.channel not in self.doi_channels:
            self._on_opt_in(result, event)
            return
        if not self._passes(result, event, double_opt_in=True):
            return
        purposes = event.purposes or [
            p for p, s in result.states.items() if s.pending_request is not None
        ]
        matched = False
        for purpose in purposes:
            state = result.states.get(purpose)
            request = state.pending_request if state else None
            if request is None:
                continue
            matched = True
            if event.effective_at - request.effective_at > self.window:
                self._violate(result, event, "confirmation_outside_window")
                state.pending_request = None
                if state.status not in ("opted_in", "expired"):
                    state.move("expired", request.effective_at + self.window, request)
                continue
            notice_version = event.notice_version or request.notice_version
            if not self._covered(result, event, [purpose], notice_version):
                continue
            evidence = Evidence(
                event.event_id, event.channel, "double_opt_in", event.occurred_at,
                notice_version, event.source_file, event.source_line,
            )
            self._grant(state, event, evidence)
        if not matched:
            self._violate(result, event, "confirmation_without_request")

    def _on_opt_out(self, result: ContactResult, event: Event) -> None:
        for purpose in self._targets(result, event):
            state = result.states[purpose]
            state.move("opted_out", event.effective_at, event, None)
            state.opted_out_at, state.opt_out_event = event.effective_at, event
            state.pending_request = None

    def _on_resume(self, result: ContactResult, event: Event) -> None:
        for purpose in self._targets(result, event):
            state = result.states[purpose]
            prior = state.last_valid_consent
            # START / resume restore only a valid opt-in given before the opt-out.
            if state.status == "opted_out" and prior is not None and prior.consent_at <= state.opted_out_at:
                state.move("opted_in", event.effective_at, event, prior)

    def _on_number_change(self, result: ContactResult, event: Event) -> None:
        """Rules, section 9: the old number's consents end at the change (it may be reassigned);
        the new number keeps the opt-outs, and the consents only with `number_change: carry`
        (then with their original evidence, decided by the change). An opt-out stays an opt-out."""
        carry = event.contact_id == event.changed_to and self.policy.number_change == "carry"
        for state in result.states.values():
            if carry:
                if state.status == "opted_in":
                    state.move("opted_in", event.effective_at, event)
                continue
            # Nothing given before the change can be restored by a later START.
            state.last_valid_consent = None
            state.pending_request = None
            if state.status in ("opted_in", "pending", "expired"):
                state.move("no_consent", event.effective_at, event, None)

    def _advance(self, result: ContactResult, moment: datetime) -> None:
        """Apply what time alone changes up to `moment`: unconfirmed requests and old consents expire."""
        for purpose, state in result.states.items():
            validity = result.validity.get(purpose)
            if state.status == "pending" and moment - state.pending_request.effective_at > self.window:
                state.move("expired", max(state.since, state.pending_request.effective_at + self.window))
            elif (
                state.status == "opted_in"
                and validity is not None
                and moment - state.evidence.consent_at > validity
            ):
                state.move("expired", max(state.since, state.evidence.consent_at + validity))


def _events(frame: pl.DataFrame) -> Iterator[Event]:
    # Column lists zipped into rows: cheaper than iter_rows on a wide frame.
    return map(Event, *(frame.get_column(c).to_list() for c in INPUT_COLUMNS))


def with_contacts(events: pl.DataFrame) -> pl.DataFrame:
    """Ledger rows as the state machine reads them. Rows read straight from the ledger (not through
    the `contact_events` view) are their own contact: business `default` unless given, the number
    (else the BSUID) as contact id, nothing inherited."""
    if "contact_key" in events.columns:
        return events
    missing = {
        "business": pl.lit("default"), "whatsapp_user_id": pl.lit(None, pl.Utf8), "changed_to": pl.lit(None, pl.Utf8),
        "parent_user_id": pl.lit(None, pl.Utf8),
    }
    events = events.with_columns(**{k: v for k, v in missing.items() if k not in events.columns})
    contact = pl.coalesce("phone_e164", "whatsapp_user_id", "parent_user_id")
    return events.with_columns(
        contact_id=contact, inherited=pl.lit(False),
        contact_key=pl.concat_str([pl.col("business"), contact], separator="\x1f"),
    )


def decide_range(
    events: pl.DataFrame, policy: Policy, as_of: datetime, notices: Mapping[str, NoticeTerms] | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`reconcile` for one contact range, in a worker process (which imports only the domain)."""
    return reconcile(events, policy, as_of, notices=notices)


def reconcile(
    events: pl.DataFrame,
    policy: Policy,
    as_of: datetime,
    progress: Callable[[str, int, int], None] | None = None,
    notices: Mapping[str, NoticeTerms] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """consent_status, consent_violations and consent_status_history rows for every contact in `events`.

    `events` holds the complete history of each contact it mentions. (The
    warehouse bounds memory by calling this on ranges of contacts.)
    """
    machine = ConsentStateMachine(policy, as_of, notices)
    ordered = with_contacts(events).select(INPUT_COLUMNS).sort("contact_key", maintain_order=True)
    contacts = ordered["contact_key"].n_unique() if progress else 0
    return _reconcile_sorted(ordered, machine, progress, contacts, count(1))


def _reconcile_sorted(
    ordered: pl.DataFrame,
    machine: "ConsentStateMachine",
    progress: Callable[[str, int, int], None] | None,
    contacts: int,
    counter: Iterator[int],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    statuses: list[tuple] = []
    violations: list[tuple] = []
    history: list[tuple] = []
    for _, group in groupby(_events(ordered), key=lambda e: e.contact_key):
        done = next(counter)
        if progress and (done % 10_000 == 0 or done == contacts):
            progress("reconciling contacts", done, contacts)
        events = list(group)
        business, contact = events[0].business, events[0].contact_id
        # A contact is its number (E.164), or its BSUID while no number is linked to it.
        phone = contact if contact.startswith("+") else None
        user = contact if phone is None else max(
            ((e.effective_at, e.whatsapp_user_id) for e in events if e.whatsapp_user_id and not e.inherited),
            default=(None, None),
        )[1]
        result = machine.run(events)
        for purpose, s in result.states.items():
            statuses.append(_status_row(s, phone, purpose, business, contact, user))
            history.extend(_history_rows(s, phone, purpose, business, contact))
        for v in result.violations:
            e = v.event
            violations.append(
                (e.event_id, v.rule, v.severity, v.refused, phone, e.channel, e.event_type,
                 e.purposes, e.occurred_at, e.source_file, e.source_line, business, contact)
            )
    status_df = pl.DataFrame(statuses, schema=STATUS_SCHEMA, orient="row")
    violation_df = pl.DataFrame(violations, schema=VIOLATION_SCHEMA, orient="row").unique(
        subset=["event_id", "rule"], keep="first", maintain_order=True
    )
    history_df = pl.DataFrame(history, schema=HISTORY_SCHEMA, orient="row")
    return status_df, violation_df, history_df


def _status_row(s, phone, purpose, business, contact, user) -> tuple:
    """One row of `consent_status` (STATUS_SCHEMA's order) for a contact's state for one purpose."""
    ev, out, by = s.evidence, s.opt_out_event, s.decided_by
    opted_out = s.status == "opted_out"
    return (
        phone, purpose, s.status, s.status == "opted_in", s.since,
        ev.consent_method if ev else None,
        ev.consent_at if ev else None,
        ev.channel if ev else (by.channel if by else None),
        ev.notice_version if ev else None,
        ev.event_id if ev else (by.event_id if by else None),
        ev.source_file if ev else (by.source_file if by else None),
        ev.source_line if ev else (by.source_line if by else None),
        s.opted_out_at if opted_out else None,
        out.channel if opted_out and out else None,
        out.event_id if opted_out and out else None,
        by.event_id if by else None,
        business, contact, user,
    )


def _history_rows(s, phone, purpose, business, contact) -> list[tuple]:
    """The rows of `consent_history` (HISTORY_SCHEMA's order): each status a state held, until the next."""
    rows = []
    for n, (status, since, decided_by, evidence) in enumerate(s.history):
        until = s.history[n + 1][1] if n + 1 < len(s.history) else None
        rows.append(
            (phone, purpose, status, since, until, decided_by.event_id if decided_by else None,
             evidence.event_id if evidence else None, evidence.consent_method if evidence else None,
             evidence.consent_at if evidence else None, business, contact,
             decided_by.channel if decided_by else None, evidence.channel if evidence else None)
        )
    return rows
