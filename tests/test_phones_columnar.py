"""The column-wise fast path against phonenumbers (`consent.domain.phones.normalise`), the reference.

Every region's example numbers of every type, spelled the ways exports spell them (E.164, `00`,
international with spaces, dots, dashes and brackets, `(0)` after the calling code, national with
and without the national prefix, extensions, letters, too long, too short, a wrong hint, no hint),
must give the same E.164, region, type and refusal with the fast path as without it and as
`normalise` on each pair. `FUZZ_EXAMPLES` raises the number of generated examples (`make fuzz`).
"""

import os

import phonenumbers
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODES_FOR_NON_GEO_REGIONS, SUPPORTED_REGIONS

from consent.domain import phones
from consent.domain.phones import normalise, normalise_frame, parse_key
from consent.domain.phones.columnar import decide

REGIONS = sorted(SUPPORTED_REGIONS)
TYPES = [v for k, v in vars(PhoneNumberType).items() if k.isupper() and isinstance(v, int) and v != PhoneNumberType.UNKNOWN]
EXAMPLES = sorted(
    {
        (region, phonenumbers.format_number(n, PhoneNumberFormat.E164))
        for region in REGIONS
        for kind in TYPES
        if (n := phonenumbers.example_number_for_type(region, kind)) is not None
    }
    | {
        ("001", phonenumbers.format_number(n, PhoneNumberFormat.E164))
        for cc in COUNTRY_CODES_FOR_NON_GEO_REGIONS
        if (n := phonenumbers.example_number_for_non_geo_entity(cc)) is not None
    }
)
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def frames(pairs):
    """normalise_frame with and without the fast path, restoring the switch."""
    saved = phones.COLUMNAR_FAST_PATH
    try:
        phones.COLUMNAR_FAST_PATH = True
        fast = normalise_frame(pairs)
        phones.COLUMNAR_FAST_PATH = False
        slow = normalise_frame(pairs)
    finally:
        phones.COLUMNAR_FAST_PATH = saved
    return fast, slow


def assert_same_as_phonenumbers(pairs):
    fast, slow = frames(pairs)
    differs = pl.DataFrame([fast[c].ne_missing(slow[c]) for c in fast.columns]).select(pl.any_horizontal(pl.all())).to_series()
    assert fast.height == len(pairs) and not differs.any(), (fast.filter(differs), slow.filter(differs))
    for (raw, hint), row in zip(pairs, fast.iter_rows(named=True)):
        # What normalise_frame reads of a spelling: its parse key (whitespace and punctuation
        # dropped), or the spelling whole.
        key = parse_key(raw, hint)
        ref = normalise(*key) if key is not None else normalise(raw, hint)
        got = (row["phone_e164"], row["phone_region"], row["phone_type"], row["invalid_reason"])
        assert got == (ref.phone_e164, ref.phone_region, ref.phone_type, ref.invalid_reason), (raw, hint, got, ref)


def spellings(region: str, e164: str, other_region: str) -> list[tuple[str, str | None]]:
    """The fixed set of spellings of one example number."""
    number = phonenumbers.parse(e164)
    cc, nsn = str(number.country_code), phonenumbers.national_significant_number(number)
    intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    hint = None if region == "001" else region
    return [
        (e164, None), (intl, None), (intl.replace(" ", "."), None), (intl.replace(" ", "-"), ""),
        ("00" + e164[1:], None), (f"00 {cc} {nsn}", "de"), (f"+{cc} (0) {nsn}", None), (f"+{cc} ({nsn[:3]}) {nsn[3:]}", None),
        (national, hint), (national.replace(" ", "-"), (hint or "").lower()), (f"  {national} ", f" {hint or ''} "),
        (nsn, hint), ("0" + nsn, hint), (national, other_region), (nsn, other_region), (national, None),
        (e164 + "9", None), (e164[:-1], None), (e164[:-3], None), (nsn + "12", hint), (nsn[:-2], hint),
        (e164 + " ext. 12", None), (f"{intl} x12", None), (e164[:4] + "O" + e164[5:], None), (f"{cc}{nsn}", hint),
        (f"+{cc}{cc}{nsn}", None), ("+" + nsn, None), (f"1{nsn}", hint),
        # A dot after a leading zero: the compact spelling starts with "00" and is read as "+".
        (f"0.0{cc} {nsn}", hint), (f"0.0{cc}{nsn}", None), (f"0.00{cc}{nsn}", hint),
    ]


def test_every_example_number_in_every_fixed_spelling_matches_phonenumbers():
    pairs = [
        pair
        for i, (region, e164) in enumerate(EXAMPLES)
        for pair in spellings(region, e164, REGIONS[(i * 7) % len(REGIONS)])
    ]
    assert len(EXAMPLES) > 1000 and len(pairs) > 25_000
    assert_same_as_phonenumbers(pairs)


def test_the_fast_path_decides_the_plain_spellings_itself():
    """Not a fallback in disguise: E.164, 00 and national-with-hint spellings of the examples of
    the regions exports name most are decided in columns, valid ones included."""
    keys = []
    for region, e164 in EXAMPLES:
        if region in {"DE", "GB", "FR", "ES", "IT", "BR", "IN", "US", "MX", "ZA", "CA", "NL"}:
            number = phonenumbers.parse(e164)
            keys += [(e164, ""), (phonenumbers.national_significant_number(number), region)]
    decided, rest = decide(pl.DataFrame(keys, schema={"key_raw": pl.Utf8, "key_hint": pl.Utf8}, orient="row"))
    assert decided.height + rest.height == len(keys)
    assert decided.height >= 0.95 * len(keys), rest
    assert decided["phone_e164"].is_not_null().sum() >= 0.9 * len(keys)


DIGITS = "0123456789"


@st.composite
def mutated_pairs(draw):
    """A few example numbers, each spelled and mutated at random."""
    out = []
    for _ in range(draw(st.integers(1, 40))):
        region, e164 = draw(st.sampled_from(EXAMPLES))
        raw, hint = draw(st.sampled_from(spellings(region, e164, draw(st.sampled_from(REGIONS)))))
        for _ in range(draw(st.integers(0, 2))):
            at = draw(st.integers(0, len(raw)))
            action = draw(st.sampled_from(["digit", "insert", "delete", "separator", "unicode"]))
            if action == "digit" and at < len(raw):
                raw = raw[:at] + draw(st.sampled_from(DIGITS)) + raw[at + 1 :]
            elif action == "insert":
                raw = raw[:at] + draw(st.sampled_from([*DIGITS, "0", "00", "+", "(", ")", " ", "-", ".", "/", "a", "#"])) + raw[at:]
            elif action == "delete":
                raw = raw[:at] + raw[at + 1 :]
            elif action == "separator":
                raw = raw[:at] + draw(st.sampled_from([" ", "  ", "-", ".", "(", ")", "\t", "\u00a0"])) + raw[at:]
            else:
                raw = raw[:at] + draw(st.sampled_from(["\uff11", "\u0663", "\u2007", "\u00e9"])) + raw[at:]
        hint = draw(st.sampled_from([hint, hint, None, "", "XX", "001", region.lower(), draw(st.sampled_from(REGIONS))]))
        out.append((raw, hint))
    return out


@FUZZ
@given(mutated_pairs())
def test_generated_spellings_match_phonenumbers(pairs):
    assert_same_as_phonenumbers(pairs)


@pytest.mark.parametrize(
    "raw, hint",
    [("", None), ("   ", "DE"), ("4.47911E+11", None), ("447911123456.0", "GB"), ("not a number", None),
     ("0151 1234", None), ("+999 123 456", None), ("12345", "DE"), ("+49", None), ("+", None), ("00", "DE")],
)
def test_refusals_keep_normalise_texts(raw, hint):
    assert_same_as_phonenumbers([(raw, hint)])
