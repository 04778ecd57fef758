"""Consent policy and channel configuration: one typed object each, file plus defaults.

`policy.yaml` (optional, in the exports folder or given with `--policy`) says
what the business counts as consent; `channels.yaml` (optional, in the exports
folder) says how each channel's export maps onto the canonical columns. Both
are validated with pydantic, so a typo fails the run with a clear message
before anything is read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consent.domain.rules import RULES, Severity, default_severities

DEFAULT_OPT_OUT_KEYWORDS = [
    "STOP", "STOP ALL", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
    "REVOKE", "OPTOUT", "OPT OUT", "OPT-OUT", "REMOVE",
]
DEFAULT_RESUME_KEYWORDS = ["START", "UNSTOP"]
DEFAULT_ACTIVE_METHODS = [
    "checkbox", "typed_form", "confirmation_link", "in_app_prompt",
    "whatsapp_button", "keyword_reply", "verbal_recorded", "double_opt_in",
]


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid (CLI exit 2)."""


class Policy(BaseModel):
    """What counts as consent. Every field has the default of consent-rules.md."""

    model_config = ConfigDict(extra="forbid")

    purposes: list[str] = Field(default_factory=lambda: ["marketing", "utility"])
    opt_out_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_OUT_KEYWORDS))
    opt_out_keyword_translations: list[str] = Field(default_factory=lambda: ["ARRET", "ARRÊT", "BAJA", "PARAR"])
    resume_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_RESUME_KEYWORDS))
    stop_promotions_buttons: list[str] = Field(default_factory=lambda: ["Stop promotions"])
    active_consent_methods: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTIVE_METHODS))
    double_opt_in_channels: list[str] = Field(default_factory=lambda: ["email_link", "sms_link"])
    confirmation_window_days: float = 7
    # Consent expires this many days after it was given: one number for every purpose, or a map
    # per purpose whose value is a number or a map per country of the number (ISO code, and
    # `default`), e.g. {marketing: {FR: 1095, default: 730}, utility: 1825}. null: never.
    consent_validity_days: float | dict[str, float | dict[str, float]] | None = None
    # `consent check` / `consent export --renewal-due`: re-ask this many days before a consent lapses.
    renewal_notice_days: float = 30
    # Opt-out timeliness (mart `opt_out_timeliness`): an opt-out must be published within this many
    # business days of the request (US FCC: 10), weekends and the calendar's holidays excluded
    # (`holidays` package country code; null: weekends only).
    opt_out_deadline_business_days: int = 10
    holiday_calendar: str | None = "US"
    clock_skew_minutes: float = 5
    # WhatsApp's own controls (user_preferences, "Stop promotions", error
    # 131050) cover this purpose only.
    whatsapp_marketing_purpose: str = "marketing"
    # Severity of each rule of the registry (consent/domain/rules.py) when violated.
    # "error" fails the run (CLI exit 1); "warn" is reported only. Either way a
    # refused opt-in never grants consent. Rules not named keep their default.
    rule_severity: dict[str, Severity] = Field(default_factory=default_severities)
    # Rules, section 9: on a number change the new number keeps the opt-outs; its consents end
    # too (`end`) unless `carry` (then they move with their original evidence).
    number_change: Literal["end", "carry"] = "end"
    # Rules, section 10: a STOP ends the consent given to that business (`business`) or to every
    # business of the warehouse (`all_businesses`).
    opt_out_scope: Literal["business", "all_businesses"] = "business"
    # Missing notice is a warning only; set true to refuse such opt-ins.
    require_notice_version: bool = False
    # Retention (rules, section 8): raw export rows, and evidence after consent ends.
    raw_retention_days: float = 90
    evidence_retention_years: float = 5

    @field_validator("holiday_calendar")
    @classmethod
    def _known_calendar(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value not in _supported_calendars():
            raise ValueError(f"unknown holiday calendar {value!r} (a country code of the `holidays` package, or null)")
        return value

    @field_validator("purposes")
    @classmethod
    def _purposes_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one purpose is required")
        return value

    @field_validator("rule_severity")
    @classmethod
    def _known_rules(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))}; known rules: {', '.join(RULES)}")
        return {**default_severities(), **value}

    @property
    def all_opt_out_keywords(self) -> frozenset[str]:
        return frozenset(_keyword_key(k) for k in self.opt_out_keywords + self.opt_out_keyword_translations)

    @property
    def all_resume_keywords(self) -> frozenset[str]:
        return frozenset(_keyword_key(k) for k in self.resume_keywords)

    @property
    def consent_expires(self) -> bool:
        return self.consent_validity_days is not None

    @property
    def shortest_validity_days(self) -> float | None:
        """The shortest validity any consent can have, whatever its purpose or country (None: no
        consent expires): a consent given less than this long ago cannot have expired yet."""
        v = self.consent_validity_days
        values = v.values() if isinstance(v, dict) else [v]
        days = [x for per in values for x in (per.values() if isinstance(per, dict) else [per]) if x is not None]
        return min(days) if days else None

    @property
    def validity_by_country(self) -> bool:
        v = self.consent_validity_days
        return isinstance(v, dict) and any(isinstance(x, dict) for x in v.values())

    def validity_days(self, purpose: str, region: str | None = None) -> float | None:
        """Days a consent for `purpose` given by a number of `region` stays valid (None: forever)."""
        v = self.consent_validity_days
        if not isinstance(v, dict):
            return v
        per = v.get(purpose, v.get("default"))
        if isinstance(per, dict):
            return per.get(region or "", per.get("default"))
        return per

    def severity(self, rule: str) -> Severity:
        return self.rule_severity[rule]

    def refuses(self, rule: str) -> bool:
        """Whether breaking the rule refuses consent (the registry, or the policy where it decides)."""
        refuses = RULES[rule].refuses
        return self.require_notice_version if refuses is None else refuses


def _keyword_key(text: str) -> str:
    return " ".join(text.upper().replace("-", " ").split())


def keyword_key(message: str) -> str:
    """Whole message, case-insensitive, surrounding spaces and punctuation ignored.

    "OPT-OUT", "opt out" and "OPT OUT" compare equal; "STOPALL" stays distinct
    from "STOP ALL" (both are listed).
    """
    stripped = message.strip().strip(".,;:!?¡¿'\"()[]{}*_~ \t\r\n")
    return _keyword_key(stripped)


class ChannelConfig(BaseModel):
    """How one channel's CSV export maps onto canonical columns."""

    model_config = ConfigDict(extra="forbid")

    # canonical column -> the export's column name
    columns: dict[str, str] = Field(default_factory=dict)
    # canonical column -> {export value -> canonical value}
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    # canonical column -> value used when the column is absent or empty
    defaults: dict[str, str] = Field(default_factory=dict)
    timezone: str = "UTC"
    default_region: str | None = None
    # strptime format for exports that do not write ISO 8601
    date_format: str | None = None
    delimiter: str = ","

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class BusinessConfig(BaseModel):
    """One business of businesses.yaml: its channel folders and its WhatsApp phone number ids."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(default_factory=list)
    whatsapp_phone_number_ids: list[str] = Field(default_factory=list)


DEFAULT_BUSINESS = "default"


class ChannelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    # From businesses.yaml (consent-rules.md section 10); empty: one business, `default`.
    businesses: dict[str, BusinessConfig] = Field(default_factory=dict)

    def for_channel(self, name: str) -> ChannelConfig:
        return self.channels.get(name, ChannelConfig())

    def business_of(self, channel: str) -> str:
        for name, business in self.businesses.items():
            if channel in business.channels:
                return name
        return DEFAULT_BUSINESS

    def number_businesses(self) -> dict[str, str] | None:
        """WhatsApp phone_number_id -> business; None without businesses.yaml (everything is `default`)."""
        if not self.businesses:
            return None
        return {str(n): name for name, b in self.businesses.items() for n in b.whatsapp_phone_number_ids}

    def business_names(self) -> list[str]:
        return sorted(self.businesses) or [DEFAULT_BUSINESS]


@lru_cache(maxsize=1)
def _supported_calendars() -> frozenset[str]:
    """The `holidays` package's country codes (listed once per process: every step loads the policy)."""
    import holidays

    return frozenset(holidays.list_supported_countries())


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _validated(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc


def load_policy(path: Path | None) -> Policy:
    """The policy file when given and present, else the defaults."""
    if path is None or not path.exists():
        return Policy()
    return _validated(Policy, _load_yaml(path), path)


def load_channels(exports_dir: Path) -> ChannelsFile:
    """channels.yaml and businesses.yaml of the exports folder (each optional)."""
    path = exports_dir / "channels.yaml"
    channels = _validated(ChannelsFile, _load_yaml(path), path) if path.exists() else ChannelsFile()
    if channels.businesses:
        raise ConfigError(f"{path}: businesses belong in businesses.yaml, not channels.yaml")
    channels.businesses = load_businesses(exports_dir)
    return channels


class _BusinessesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    businesses: dict[str, BusinessConfig]


def load_businesses(exports_dir: Path) -> dict[str, BusinessConfig]:
    """businesses.yaml: who each channel folder and WhatsApp number belongs to. A folder or number
    claimed twice, or a channel folder no business claims, is a configuration error: never a guess."""
    path = exports_dir / "businesses.yaml"
    if not path.exists():
        return {}
    businesses = _validated(_BusinessesFile, _load_yaml(path), path).businesses
    if not businesses:
        raise ConfigError(f"{path}: no business is named")
    for kind, claims in (("channel folder", "channels"), ("phone_number_id", "whatsapp_phone_number_ids")):
        owner: dict[str, str] = {}
        for name, business in businesses.items():
            for item in getattr(business, claims):
                if str(item) in owner and owner[str(item)] != name:
                    raise ConfigError(f"{path}: {kind} {item!r} is claimed by both {owner[str(item)]!r} and {name!r}")
                owner[str(item)] = name
    claimed = {c for b in businesses.values() for c in b.channels}
    folders = sorted(p.name for p in exports_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "notices")
    unclaimed = [f for f in folders if f not in claimed]
    if unclaimed:
        raise ConfigError(f"{path}: channel folder {unclaimed[0]!r} is not claimed by any business")
    return businesses
