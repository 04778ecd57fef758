"""Phone validation in columns: the common spellings decided by vectorised regexes.

`decide` takes the parse keys `normalise_frame` builds (a compact spelling:
digits with an optional leading "+", and the upper-cased region hint) and
decides, with Polars regexes built from `phonenumbers`' own metadata, every
key whose outcome it can reproduce exactly: country calling code, national
prefix, possible lengths, the type patterns in `phonenumbers`' order and the
region of a shared calling code. Whatever it cannot reproduce with certainty
(an international prefix dialled from the hint region, a national number that
starts with its own calling code, a national prefix transform rule, a pattern
the Rust regex engine rejects, unusual lengths or characters) is left to
`consent.domain.phones.normalise`, which stays the reference; a property test holds
the two to identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata, PhoneNumber, ValidationResult
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS

from consent.domain.phones.reference import (
    _ALLOWED,
    _POSSIBILITY_REASONS,
    _PUNCTUATION,
    _SPREADSHEET_FLOAT,
    PHONE_BOOK_SCHEMA,
    _normalise_distinct,
    normalise,
    parse_key,
)

OUT_SCHEMA: dict[str, pl.DataType] = {
    "key_raw": pl.Utf8,
    "key_hint": pl.Utf8,
    "phone_e164": pl.Utf8,
    "phone_region": pl.Utf8,
    "phone_type": pl.Utf8,
    "invalid_reason": pl.Utf8,
}
_NO_HINT = "national number without a country hint"
_BAD_COUNTRY = "unparseable phone number (invalid country code)"
_INVALID = "invalid phone number for its region"
# The order in which `phonenumbers` tries the types after the general pattern.
_TYPE_ORDER = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")
_MAX_DIGITS = 20  # beyond this `phonenumbers` raises "too long" paths the fast path does not reproduce
_NSN_LENGTHS = range(2, 18)  # phonenumbers' national number bounds (2..17 digits)


@dataclass(frozen=True)
class _Desc:
    pattern: str  # anchored for a full match
    lengths: tuple[int, ...]  # empty: any length


@dataclass(frozen=True)
class _Region:
    code: str
    country_code: int
    general: _Desc | None
    types: tuple[tuple[str, _Desc | None], ...]
    fixed_line: _Desc | None
    mobile: _Desc | None
    same_mobile_and_fixed: bool
    leading_digits: str | None
    national_prefix: str | None  # national_prefix_for_parsing, anchored at the start
    has_transform: bool
    international_prefix: str | None
    strip_lengths: tuple[int, ...]  # lengths at which parse keeps a number with its national prefix stripped


def _desc(desc) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None  # phonenumbers: a missing or empty pattern never matches
    return _Desc(f"^(?:{desc.national_number_pattern})$", tuple(desc.possible_length or ()))


def _region(code: str, meta) -> _Region:
    # The same length test `parse` applies to a number with its national prefix stripped.
    test_length = phonenumbers.phonenumberutil._test_number_length
    rejected = (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY, ValidationResult.INVALID_LENGTH)
    return _Region(
        code=code,
        country_code=meta.country_code,
        general=_desc(meta.general_desc),
        types=tuple((name, _desc(getattr(meta, name))) for name in _TYPE_ORDER),
        fixed_line=_desc(meta.fixed_line),
        mobile=_desc(meta.mobile),
        same_mobile_and_fixed=bool(meta.same_mobile_and_fixed_line_pattern),
        leading_digits=None if meta.leading_digits is None else f"^(?:{meta.leading_digits})",
        national_prefix=f"^({meta.national_prefix_for_parsing})" if meta.national_prefix_for_parsing else None,
        has_transform=bool(meta.national_prefix_transform_rule),
        international_prefix=f"^(?:{meta.international_prefix})" if meta.international_prefix else None,
        strip_lengths=tuple(n for n in range(0, 40) if test_length("1" * n, meta) not in rejected),
    )


@cache
def _regions(cc: int) -> tuple[_Region, ...]:
    """The regions of a calling code in phonenumbers' order (metadata is loaded on first use)."""
    found = ((code, PhoneMetadata.metadata_for_region_or_calling_code(cc, code)) for code in COUNTRY_CODE_TO_REGION_CODE.get(cc, ()))
    return tuple(_region(code, meta) for code, meta in found if meta is not None)


@cache
def _main(cc: int) -> _Region | None:
    """The metadata `parse` and the length test use for a calling code (its main region)."""
    code = phonenumbers.region_code_for_country_code(cc)
    meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, code)
    return None if meta is None or not _regions(cc) else _region(code, meta)


@cache
def _hint(code: str) -> _Region | None:
    """A region a national spelling may be hinted with (None: `parse` refuses the hint)."""
    return _region(code, PhoneMetadata.metadata_for_region(code)) if code in SUPPORTED_REGIONS else None


@cache
def _impossible(cc: int) -> dict[int, str | None]:
    """NSN length -> the refusal `normalise` gives (None: a possible length)."""
    return {n: _possibility(cc, n) for n in _NSN_LENGTHS}


@cache
def _calling_codes() -> tuple[frozenset[str], ...]:
    return tuple(frozenset(str(cc) for cc in COUNTRY_CODE_TO_REGION_CODE if len(str(cc)) == k) for k in (1, 2, 3))


def _possibility(cc: int, length: int) -> str | None:
    # The test reads only the calling code and the number's length.
    reason = phonenumbers.is_possible_number_with_reason(PhoneNumber(country_code=cc, national_number=int("1" * length)))
    if reason == ValidationResult.IS_POSSIBLE:
        return None
    return f"impossible phone number ({_POSSIBILITY_REASONS.get(reason, 'invalid')})"


def _full(n: pl.Expr, desc: _Desc | None) -> pl.Expr:
    """phonenumbers' `_match_national_number`: the pattern alone, matched in full."""
    return pl.lit(False) if desc is None else n.str.contains(desc.pattern)


def _matches(n: pl.Expr, desc: _Desc | None) -> pl.Expr:
    """phonenumbers' `_is_number_matching_desc`: a possible length and the full pattern."""
    if desc is None:
        return pl.lit(False)
    if not desc.lengths:
        return _full(n, desc)
    return n.str.len_bytes().is_in(desc.lengths) & _full(n, desc)


def _type_expr(n: pl.Expr, r: _Region) -> pl.Expr:
    """phonenumbers' `_number_type_helper` as one expression: the type name, null when invalid."""
    none = pl.lit(None, pl.Utf8)
    expr = pl.when(~_matches(n, r.general)).then(none)
    for name, desc in r.types:
        if desc is not None:
            expr = expr.when(_matches(n, desc)).then(pl.lit(name))
    if r.fixed_line is not None:
        both = pl.lit("fixed_line_or_mobile")
        fixed = both if r.same_mobile_and_fixed else pl.when(_matches(n, r.mobile)).then(both).otherwise(pl.lit("fixed_line"))
        expr = expr.when(_matches(n, r.fixed_line)).then(fixed)
    if not r.same_mobile_and_fixed and r.mobile is not None:
        expr = expr.when(_matches(n, r.mobile)).then(pl.lit("mobile"))
    return expr.otherwise(none)


def _strip_national_prefix(part: pl.DataFrame, r: _Region, column: str) -> pl.DataFrame:
    """`parse`'s national prefix step on `column` into `nsn`; `undecided` where a transform rule applies."""
    n = pl.col(column)
    if r.national_prefix is None:
        return part.with_columns(nsn=n, undecided=pl.lit(False))
    found = n.str.extract(r.national_prefix, 1)
    if r.has_transform:
        return part.with_columns(nsn=n, undecided=found.is_not_null())
    stripped = n.str.slice(found.str.len_bytes())
    keep_whole = _full(n, r.general) & ~_full(stripped, r.general)
    candidate = pl.when(keep_whole).then(n).otherwise(stripped)
    taken = found.is_not_null() & candidate.str.len_bytes().is_in(r.strip_lengths)
    return part.with_columns(nsn=pl.when(taken).then(candidate).otherwise(n), undecided=pl.lit(False))


def _validate(part: pl.DataFrame, cc: int) -> pl.DataFrame:
    """`is_possible_number_with_reason`, `region_code_for_number` and `number_type` on (cc, nsn)."""
    n = pl.col("nsn")
    reasons = _impossible(cc)
    part = part.with_columns(invalid_reason=n.str.len_bytes().replace_strict(reasons, default=None, return_dtype=pl.Utf8))
    out = [part.filter(pl.col("invalid_reason").is_not_null())]
    remaining = part.filter(pl.col("invalid_reason").is_null())
    regions = _regions(cc)
    for r in regions:
        kind = _type_expr(n, r)
        if len(regions) == 1:
            hit, remaining = remaining, remaining.clear()
        else:
            # Shared calling code: the first region whose leading digits, or else whose patterns, take the number.
            chosen = n.str.contains(r.leading_digits) if r.leading_digits is not None else kind.is_not_null()
            remaining = remaining.with_columns(chosen=chosen)
            hit, remaining = remaining.filter("chosen").drop("chosen"), remaining.filter(~pl.col("chosen")).drop("chosen")
        out.append(hit.with_columns(phone_region=pl.lit(r.code), phone_type=kind))
        if remaining.is_empty():
            break
    out.append(remaining)  # no region takes it: phonenumbers types it UNKNOWN
    valid = pl.col("phone_type").is_not_null()
    return pl.concat(out, how="diagonal_relaxed").with_columns(
        phone_e164=pl.when(valid).then(pl.lit(f"+{cc}") + n),
        phone_region=pl.when(valid).then(pl.col("phone_region")),
        invalid_reason=pl.when(valid).then(None).otherwise(pl.col("invalid_reason").fill_null(pl.lit(_INVALID))),
    )


def _international(part: pl.DataFrame) -> list[pl.DataFrame]:
    """"+" spellings: the calling code as `_extract_country_code` reads it (shortest known prefix)."""
    digits = pl.col("text").str.slice(1)
    codes = _calling_codes()
    cc_len = pl.when(digits.str.slice(0, 1).is_in(codes[0])).then(1)
    cc_len = cc_len.when(digits.str.slice(0, 2).is_in(codes[1])).then(2).when(digits.str.slice(0, 3).is_in(codes[2])).then(3)
    part = part.with_columns(cc_len=cc_len.otherwise(None))
    part = part.with_columns(
        cc=digits.str.slice(0, pl.col("cc_len")).cast(pl.Int64),
        rest=digits.str.slice(pl.col("cc_len")),
    )
    unknown = part.filter(pl.col("cc_len").is_null()).with_columns(invalid_reason=pl.lit(_BAD_COUNTRY))
    decided = [unknown]
    for (cc,), group in part.filter(pl.col("cc_len").is_not_null()).partition_by("cc", as_dict=True).items():
        main = _main(cc)
        if main is not None:
            decided += _checked(group, main, "rest")
    return decided


def _national(part: pl.DataFrame) -> list[pl.DataFrame]:
    """Digits with a region hint, read with the hint region's prefixes."""
    decided = []
    for (hint,), group in part.partition_by("key_hint", as_dict=True).items():
        r = _hint(hint)
        if r is None or _main(r.country_code) is None:
            continue
        n = pl.col("key_raw")
        # A number dialled with the region's international prefix, or starting with its own
        # calling code, takes paths in `parse` this module does not reproduce.
        unusual = n.str.starts_with(str(r.country_code))
        if r.international_prefix is not None:
            unusual = unusual | n.str.contains(r.international_prefix)
        decided += _checked(group.filter(~unusual), r, "key_raw")
    return decided


def _checked(group: pl.DataFrame, r: _Region, column: str) -> list[pl.DataFrame]:
    """The rows of `group` decided: the national prefix stripped with `r`, then validated under
    `r`'s calling code. A regex the Rust engine rejects leaves the whole group to phonenumbers."""
    try:
        stripped = _strip_national_prefix(group, r, column)
        length = pl.col("nsn").str.len_bytes()
        unusual = pl.col("undecided") | ~length.is_between(_NSN_LENGTHS.start, _NSN_LENGTHS.stop - 1)
        return [_validate(stripped.filter(~unusual), r.country_code)]
    except pl.exceptions.PolarsError:
        return []


def decide(keys: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split distinct parse keys (`key_raw`, `key_hint`: "" for none) into those the fast path
    decides (a frame of OUT_SCHEMA) and those left to `normalise` (in their given order)."""
    # `normalise` reads a key's leading "00" as "+" (a key such as "0.049..." compacted keeps it).
    key = pl.col("key_raw")
    text = pl.when(key.str.starts_with("00")).then(pl.lit("+") + key.str.slice(2)).otherwise(key)
    frame = keys.select("key_raw", "key_hint").with_row_index("order").with_columns(text=text)
    raw, hint = pl.col("text"), pl.col("key_hint")
    no_hint = frame.filter(raw.str.contains(r"^[0-9]+$") & (hint == "")).with_columns(invalid_reason=pl.lit(_NO_HINT))
    intl = frame.filter(raw.str.contains(rf"^\+[0-9]{{3,{_MAX_DIGITS}}}$"))
    national = frame.filter(raw.str.contains(rf"^[0-9]{{3,{_MAX_DIGITS}}}$") & (hint != ""))
    decided_i = _international(intl)
    decided_n = _national(national)
    decided = pl.concat([no_hint, *decided_i, *decided_n], how="diagonal_relaxed")
    handled = decided.get_column("order")
    decided = decided.select(pl.col(c).cast(t) if c in decided.columns else pl.lit(None, t).alias(c) for c, t in OUT_SCHEMA.items())
    rest = frame.filter(~pl.col("order").is_in(handled)).sort("order").select("key_raw", "key_hint")
    return decided, rest


_PRINTABLE = r"^[\x20-\x7e]*$"


@cache
def _refusals() -> tuple[str, str, str]:
    """`normalise`'s own texts for an empty spelling, a spreadsheet float and a foreign character."""

    return tuple(normalise(raw).invalid_reason for raw in (" ", "4.47911E+11", "x"))


def _spelling_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """`parse_key` and `normalise`'s first refusals in columns, for printable ASCII rows (where
    Python's and Polars' whitespace, digits and case agree). `key_raw` null: read on its own."""

    missing, mangled, letters = _refusals()
    text = pl.col("phone_raw").str.strip_chars(" ")
    refusal = (
        pl.when(text == "").then(pl.lit(missing))
        .when(text.str.contains(_SPREADSHEET_FLOAT.pattern)).then(pl.lit(mangled))
        .when(~text.str.contains(_ALLOWED.pattern)).then(pl.lit(letters))
    )
    text = pl.when(text.str.starts_with("00")).then(pl.lit("+") + text.str.slice(2)).otherwise(text)
    compact = text.str.replace_all(_PUNCTUATION.pattern, "")
    international = text.str.starts_with("+")
    return frame.with_columns(
        refusal=refusal.otherwise(None),
        country_hint=pl.col("hint").fill_null("").str.strip_chars(" ").str.to_uppercase(),
    ).with_columns(
        key_raw=pl.when(pl.col("refusal").is_null() & (international | ~compact.str.starts_with("+"))).then(compact),
        key_hint=pl.when(international).then(pl.lit("")).otherwise(pl.col("country_hint")),
    )


def normalise_frame_columnar(
    pairs: list[tuple[str, str | None]],
    workers: int = 1,
    parallel_threshold: int = 20_000,
    progress=None,
) -> pl.DataFrame:
    """`normalise_frame` with the keys built and the common keys decided in columns; the
    remaining keys go through `normalise` (over `workers` processes), as before."""

    frame = pl.DataFrame(
        {"phone_raw": [raw for raw, _ in pairs], "hint": [hint for _, hint in pairs]},
        schema={"phone_raw": pl.Utf8, "hint": pl.Utf8},
    ).with_row_index("n")
    printable = pl.col("phone_raw").str.contains(_PRINTABLE) & pl.col("hint").fill_null("").str.contains(_PRINTABLE)
    keyed = _spelling_keys(frame.filter(printable)).select("n", "phone_raw", "hint", "country_hint", "key_raw", "key_hint", "refusal")
    others = []
    for n, raw, hint in frame.filter(~printable).iter_rows():
        key = parse_key(raw, hint)
        others.append((n, raw, hint, (hint or "").strip().upper(), *((None, None) if key is None else (key[0], key[1] or "")), None))
    keyed = pl.concat([keyed, pl.DataFrame(others, schema=keyed.schema, orient="row")])

    decided, rest = decide(keyed.filter(pl.col("key_raw").is_not_null()).select("key_raw", "key_hint").unique())
    rest_pairs = [(raw, hint or None) for raw, hint in rest.iter_rows()]
    parsed = _normalise_distinct(rest_pairs, workers, parallel_threshold, progress)
    by_key = pl.concat([decided, _results(rest, parsed)])
    alone = keyed.filter(pl.col("key_raw").is_null() & pl.col("refusal").is_null())
    alone_results = [normalise(raw, hint) for raw, hint in alone.select("phone_raw", "hint").iter_rows()]
    return pl.concat([
        keyed.filter(pl.col("key_raw").is_not_null()).join(by_key, on=["key_raw", "key_hint"], how="left"),
        keyed.filter(pl.col("refusal").is_not_null()).with_columns(invalid_reason=pl.col("refusal")),
        pl.concat([alone.select("n", "phone_raw", "country_hint"), _results(None, alone_results)], how="horizontal"),
    ], how="diagonal_relaxed").sort("n").select(pl.col(c).cast(t) for c, t in PHONE_BOOK_SCHEMA.items())


def _results(keys: pl.DataFrame | None, results: list) -> pl.DataFrame:
    """`normalise` results as columns (beside their keys when given), as `normalise_frame` stores them."""
    columns = {
        "phone_e164": [r.phone_e164 for r in results],
        "phone_region": [r.phone_region for r in results],
        "phone_type": [r.phone_type for r in results],
        "invalid_reason": [None if r.is_valid else (r.invalid_reason or "invalid phone number") for r in results],
    }
    out = pl.DataFrame(columns, schema={c: pl.Utf8 for c in columns})
    return out if keys is None else pl.concat([keys.select("key_raw", "key_hint"), out], how="horizontal")
