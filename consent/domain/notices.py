"""A consent notice as evidence: its content hash, what its text fails to say, and its terms."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

_OPT_OUT_WORDS = re.compile(r"\b(stop|unsubscribe|opt[\s-]?out|cancel|revoke)\b", re.IGNORECASE)


@dataclass
class Notice:
    notice_version: str
    notice_text: str
    business_name: str | None
    channels: list[str]
    purposes: list[str]
    frequency: str | None
    opt_out_instructions: str | None
    privacy_policy_url: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    source_file: str
    # The business (businesses.yaml) the notice was shown for; None: any.
    business: str | None = None
    names_business: bool = field(init=False, default=False)
    mentions_whatsapp: bool = field(init=False, default=False)
    says_how_to_opt_out: bool = field(init=False, default=False)
    content_hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        text = self.notice_text or ""
        # What WhatsApp's policy and the rules ask the text itself to say.
        self.names_business = bool(self.business_name) and self.business_name.lower() in text.lower()
        self.mentions_whatsapp = "whatsapp" in text.lower()
        self.says_how_to_opt_out = bool(_OPT_OUT_WORDS.search(text + " " + (self.opt_out_instructions or "")))
        evidence = {k: v for k, v in asdict(self).items() if k not in ("source_file", "content_hash")}
        if self.business is None:  # hashed as before business existed: old notices keep their hash
            del evidence["business"]
        self.content_hash = hashlib.sha256(json.dumps(evidence, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def deficiencies(self) -> tuple[str, ...]:
        return deficiencies(self.names_business, self.mentions_whatsapp, self.says_how_to_opt_out)


def deficiencies(names_business: bool, mentions_whatsapp: bool, says_how_to_opt_out: bool) -> tuple[str, ...]:
    return tuple(
        label for label, ok in (
            ("does not name the business", names_business),
            ("does not mention WhatsApp", mentions_whatsapp),
            ("does not say how to opt out", says_how_to_opt_out),
        ) if not ok
    )



@dataclass(frozen=True)
class NoticeTerms:
    """What the state machine needs to know of a notice."""

    purposes: frozenset[str]
    valid_from: datetime | None
    valid_until: datetime | None
    deficiencies: tuple[str, ...]
    business: str | None = None

    def valid_at(self, moment: datetime) -> bool:
        """The notice was in force at `moment` (from `valid_from`, until before `valid_until`)."""
        return (self.valid_from is None or moment >= self.valid_from) and (
            self.valid_until is None or moment < self.valid_until
        )


def terms_from_rows(rows: list[tuple]) -> dict[str, NoticeTerms]:
    """(version, purposes, valid_from, valid_until, names_business, mentions_whatsapp, says_how_to_opt_out,
    business) rows."""
    return {
        version: NoticeTerms(frozenset(purposes or []), valid_from, valid_until, deficiencies(names, whatsapp, opt_out),
                             business)
        for version, purposes, valid_from, valid_until, names, whatsapp, opt_out, business in rows
    }
