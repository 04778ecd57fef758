"""Redaction of free text: no phone number or BSUID leaves the warehouse in a note, log line,
alert, Dagster metadata value or dashboard label.

One rule, applied where free text leaves: a run of 7 or more digits, allowing the separators
people type between them (spaces, dots, dashes, slashes, brackets) and a leading `+` or `00`, is
replaced by `[number]`; a BSUID-shaped token (`CC.<alnum>` or `CC.ENT.<alnum>` holding a digit)
by `[bsuid]`. What must stay readable stays: ISO dates and times, UUIDs, hex hashes of 32 to 64
characters, and counts below a million.
"""

from __future__ import annotations

import re
from typing import Any

NUMBER_MARK = "[number]"
BSUID_MARK = "[bsuid]"

# Tokens kept as they are (tried first, so their digits are not taken for a number).
_KEEP = (
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\d])"  # ISO date/time
    r"|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"  # UUID (run ids)
    r"|\b[0-9a-fA-F]{32,64}\b"  # hashes (salted hashes, file hashes)
)
# A BSUID: two capitals, a period, optionally ENT and a period, then letters and digits (with a digit).
_BSUID = r"(?<![A-Za-z0-9.])[A-Z]{2}\.(?:ENT\.)?(?=[A-Za-z0-9]*\d)[A-Za-z0-9]+"
# Digits with separators between them; counted below (7 digits at least).
_DIGIT_RUN = r"(?:\+|\b00)?\(?\d(?:[\d \t.\-/()\u00a0]*\d)?\)?"
_KEPT = re.compile(_KEEP)
_PATTERN = re.compile(f"(?P<bsuid>{_BSUID})|(?P<run>{_DIGIT_RUN})")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_MIN_DIGITS = 7


def _replace(match: re.Match) -> str:
    if match.group("bsuid"):
        return BSUID_MARK
    text = match.group(0)
    return NUMBER_MARK if sum(c.isdigit() for c in text) >= _MIN_DIGITS else text


def redact(text: str | None) -> str | None:
    """The text with every digit run that could be a phone number and every BSUID masked."""
    if not text or not any(c.isdigit() for c in text):
        return text
    # Dates, ids and hashes are set aside first, so a number run never swallows them (or they it).
    kept: list[str] = []

    def keep(match: re.Match) -> str:
        kept.append(match.group(0))
        return f"\x00{len(kept) - 1}\x00"

    masked = _PATTERN.sub(_replace, _KEPT.sub(keep, text.replace("\x00", "")))
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], masked) if kept else masked


def redact_value(value: Any) -> Any:
    """Strings anywhere in a JSON-like value (dicts, lists, tuples) redacted; numbers and other
    values kept (counts and durations are not typed text)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value

