"""Phone number normalisation: every spelling of a number becomes one E.164 key.

Plain Python on top of `phonenumbers`. The pipeline normalises each distinct
(raw string, region hint) pair once, so the per-row cost of a nightly run is a
join, not a parse; `normalise_many` can spread the distinct pairs over worker
processes (parsing is CPU-bound Python, threads do not help).
"""

from __future__ import annotations

import gc
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import phonenumbers
import polars as pl
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

# Without the pattern cache a global mix of numbers parses ~10x slower.
phonenumbers.enable_pattern_cache()

METADATA_VERSION: str = phonenumbers.__version__

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}
_POSSIBILITY_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "invalid length",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short (local number only)",
}
# Spreadsheets turn long digit strings into floats: 4.47911E+11 or 447911123456.0.
# The trailing digits are lost, so such a value is refused, never guessed.
_SPREADSHEET_FLOAT = re.compile(r"^\s*[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+\s*$|^\s*\+?\d{6,}\.\d+\s*$")
_ALLOWED = re.compile(r"^[\d\s\-().+/]+$")

@dataclass(frozen=True, slots=True)
class NormalisedPhone:
    """The outcome of normalising one (raw, region hint) pair."""

    phone_raw: str
    country_hint: str | None
    phone_e164: str | None
    phone_region: str | None
    phone_type: str | None
    invalid_reason: str | None

    @property
    def is_valid(self) -> bool:
        return self.phone_e164 is not None


def _invalid(raw: str, hint: str | None, reason: str) -> NormalisedPhone:
    return NormalisedPhone(raw, hint, None, None, None, reason)


def normalise(raw: str | None, country_hint: str | None = None) -> NormalisedPhone:
    """Normalise one number to E.164.

    `country_hint` is an ISO 3166 region (e.g. "DE") used for national
    spellings; "+" and "00" spellings need none. WhatsApp ids (digits without
    "+") go through `wa_id_to_raw` first.
    """
    raw_text = "" if raw is None else str(raw)
    hint = (country_hint or "").strip().upper() or None
    text = raw_text.strip()
    if not text:
        return _invalid(raw_text, hint, "missing phone number")
    if _SPREADSHEET_FLOAT.match(text):
        return _invalid(raw_text, hint, "phone number mangled by a spreadsheet (float or scientific notation)")
    if not _ALLOWED.match(text):
        return _invalid(raw_text, hint, "phone number contains letters or symbols")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+") and hint is None:
        return _invalid(raw_text, hint, "national number without a country hint")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else hint)
    except NumberParseException as exc:
        return _invalid(raw_text, hint, f"unparseable phone number ({_parse_error_name(exc)})")
    possibility = phonenumbers.is_possible_number_with_reason(parsed)
    if possibility != ValidationResult.IS_POSSIBLE:
        return _invalid(raw_text, hint, f"impossible phone number ({_POSSIBILITY_REASONS.get(possibility, 'invalid')})")
    # number_type is UNKNOWN exactly when is_valid_number is false; asking once halves the pattern matching.
    kind = phonenumbers.number_type(parsed)
    if kind == PhoneNumberType.UNKNOWN:
        return _invalid(raw_text, hint, "invalid phone number for its region")
    return NormalisedPhone(
        phone_raw=raw_text,
        country_hint=hint,
        phone_e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        phone_region=phonenumbers.region_code_for_number(parsed),
        phone_type=_TYPE_NAMES.get(kind, "unknown"),
        invalid_reason=None,
    )


def _parse_error_name(exc: NumberParseException) -> str:
    names = {
        NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
        NumberParseException.NOT_A_NUMBER: "not a number",
        NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        NumberParseException.TOO_SHORT_NSN: "too short",
        NumberParseException.TOO_LONG: "too long",
    }
    return names.get(exc.error_type, "not a number")


def wa_id_to_raw(wa_id: str | None) -> str:
    """WhatsApp ids (`wa_id`, `from`, `recipient_id`) are E.164 digits without "+"."""
    text = "" if wa_id is None else str(wa_id).strip()
    if text and text.isdigit():
        return "+" + text
    return text


_PUNCTUATION = re.compile(r"[\s\-().\/]")


def parse_key(raw: str, hint: str | None) -> tuple[str, str | None] | None:
    """What `phonenumbers` actually reads of a spelling: "+49 151 1234 5678",
    "0049-151-12345678" and "+4915112345678" share one key, so each number is
    parsed once however many ways it is written. None: normalise on its own."""
    text = raw.strip()
    if not text or _SPREADSHEET_FLOAT.match(text) or not _ALLOWED.match(text):
        return None
    if text.startswith("00"):  # as `normalise` reads it
        text = "+" + text[2:]
    compact = _PUNCTUATION.sub("", text)
    if text.startswith("+"):
        return (compact, None)  # an international spelling ignores the hint
    if compact.startswith("+"):
        return None  # "(+49) ..." is read differently with and without a hint: keep it whole
    return (compact, (hint or "").strip().upper() or None)


def _normalise_chunk(pairs: Sequence[tuple[str, str | None]]) -> list[NormalisedPhone]:
    return [normalise(raw, hint) for raw, hint in pairs]


def normalise_frame_reference(
    pairs: Iterable[tuple[str, str | None]],
    workers: int = 1,
    parallel_threshold: int = 20_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> pl.DataFrame:
    """Every pair parsed by `phonenumbers` (the reference), as a frame (PHONE_BOOK_SCHEMA, in the order of `pairs`).

    Spellings with one parse key are parsed once; each pair then takes its
    key's result by a join, not a Python loop.
    """
    pairs = list(pairs)
    keys: list[tuple[str, str]] = []
    distinct: dict[tuple[str, str | None], None] = {}
    single: list[tuple[str, NormalisedPhone]] = []
    for n, (raw, hint) in enumerate(pairs):
        key = parse_key(raw, hint)
        if key is None:
            # Read on its own; a NUL-prefixed key cannot collide with a parse key.
            own = f"\x00{n}"
            single.append((own, normalise(raw, hint)))
            keys.append((own, ""))
        else:
            distinct[key] = None
            keys.append((key[0], key[1] or ""))
    unique = sorted(distinct, key=lambda k: (k[0], k[1] or ""))
    parsed = _normalise_distinct(unique, workers, parallel_threshold, progress)
    by_key = pl.DataFrame(
        {
            "key_raw": [k[0] for k in unique] + [own for own, _ in single],
            "key_hint": [k[1] or "" for k in unique] + [""] * len(single),
            "phone_e164": [r.phone_e164 for r in parsed] + [r.phone_e164 for _, r in single],
            "phone_region": [r.phone_region for r in parsed] + [r.phone_region for _, r in single],
            "phone_type": [r.phone_type for r in parsed] + [r.phone_type for _, r in single],
            "invalid_reason": [None if r.is_valid else (r.invalid_reason or "invalid phone number") for r in parsed]
            + [r.invalid_reason for _, r in single],
        },
        schema={"key_raw": pl.Utf8, "key_hint": pl.Utf8, **{c: pl.Utf8 for c in list(PHONE_BOOK_SCHEMA)[2:]}},
    )
    wanted = pl.DataFrame(
        {
            "phone_raw": [raw for raw, _ in pairs],
            "country_hint": [(hint or "").strip().upper() for _, hint in pairs],
            "key_raw": [k[0] for k in keys],
            "key_hint": [k[1] for k in keys],
        },
        schema={"phone_raw": pl.Utf8, "country_hint": pl.Utf8, "key_raw": pl.Utf8, "key_hint": pl.Utf8},
    )
    return wanted.join(by_key, on=["key_raw", "key_hint"], how="left", maintain_order="left").select(list(PHONE_BOOK_SCHEMA))


def _normalise_distinct(
    pairs: list[tuple[str, str | None]],
    workers: int,
    parallel_threshold: int,
    progress: Callable[[str, int, int], None] | None,
) -> list[NormalisedPhone]:
    chunk_size = 20_000 if workers <= 1 else max(1_000, -(-len(pairs) // (workers * 8)))
    chunks = [pairs[i : i + chunk_size] for i in range(0, len(pairs), chunk_size)]
    out: list[NormalisedPhone] = []
    if workers <= 1 or len(pairs) < parallel_threshold:
        results = map(_normalise_chunk, chunks)
        pool = None
    else:
        # Forked workers inherit the caller's heap (a large run holds millions of
        # objects); frozen, the workers' garbage collector does not walk (and copy) it.
        gc.freeze()
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_normalise_chunk, chunks)
    try:
        for part in results:
            out.extend(part)
            if progress:
                progress("normalising numbers", len(out), len(pairs))
    finally:
        if pool is not None:
            pool.shutdown()
            gc.unfreeze()
    return out


PHONE_BOOK_SCHEMA: dict[str, pl.DataType] = {
    "phone_raw": pl.Utf8,
    "country_hint": pl.Utf8,  # "" when there is no hint, so the pair is a plain join key
    "phone_e164": pl.Utf8,
    "phone_region": pl.Utf8,
    "phone_type": pl.Utf8,
    "invalid_reason": pl.Utf8,
}


