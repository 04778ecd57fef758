import pytest

from consent.domain.phones import normalise, normalise_many, wa_id_to_raw


@pytest.mark.parametrize(
    ("raw", "hint", "e164"),
    [
        ("+4915112345678", None, "+4915112345678"),  # E.164
        ("+49 151 1234 5678", None, "+4915112345678"),  # international with spaces
        ("0151 12345678", "DE", "+4915112345678"),  # national with hint
        ("(0151) 123-45678", "de", "+4915112345678"),  # brackets, dashes, lower-case hint
        ("004915112345678", None, "+4915112345678"),  # 00 prefix
        ("07400 123456", "GB", "+447400123456"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("+55 11 96123-4567", None, "+5511961234567"),
        ("+91 81234 56789", None, "+918123456789"),
        ("+4915112345678", "FR", "+4915112345678"),  # a "+" number ignores the hint
    ],
)
def test_spellings_of_one_number_become_one_e164_key(raw, hint, e164):
    result = normalise(raw, hint)
    assert result.phone_e164 == e164
    assert result.invalid_reason is None


def test_wa_id_without_plus_is_the_same_contact_as_its_e164_spelling():
    assert normalise(wa_id_to_raw("4915112345678")).phone_e164 == normalise("0151 12345678", "DE").phone_e164


def test_region_and_type_are_derived():
    result = normalise("+447400123456")
    assert (result.phone_region, result.phone_type) == ("GB", "mobile")


@pytest.mark.parametrize(
    ("raw", "hint", "reason"),
    [
        ("", None, "missing phone number"),
        ("   ", "DE", "missing phone number"),
        ("+4912", None, "too short"),
        ("12345", "DE", "invalid phone number"),
        ("4.47911E+11", None, "spreadsheet"),
        ("447911123456.0", None, "spreadsheet"),
        ("call me", None, "letters"),
        ("0151 12345678", None, "without a country hint"),
        ("+999 123 456", None, "invalid country code"),
        ("+49 151 1234 5678 9999 9999", None, "too long"),
    ],
)
def test_invalid_numbers_are_refused_with_a_reason(raw, hint, reason):
    result = normalise(raw, hint)
    assert result.phone_e164 is None
    assert reason in result.invalid_reason


def test_parallel_normalisation_gives_the_same_results_as_serial():
    pairs = [(f"+49151{n:08d}", None) for n in range(200)] + [("0151 12345678", "DE"), ("bad", None)]
    assert normalise_many(pairs, workers=2, parallel_threshold=10) == normalise_many(pairs, workers=1)


def test_batch_normalisation_equals_one_by_one_on_generated_exports(tmp_path):
    """Spellings sharing a parse key are parsed once: the results must not change."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(repo / "bench" / "generate.py"), str(tmp_path), "--events", "3000", "--seed", "5"],
                   check=True, capture_output=True)
    pairs = set()
    for path in tmp_path.glob("*/*.csv"):
        for row in csv.DictReader(path.open(encoding="utf-8")):
            phone = row.get("phone") or row.get("WhatsApp number") or ""
            pairs.add((phone, (row.get("country") or row.get("Country") or None)))
    extra = [("(+49) 151 1234 5678", None), ("(+49) 151 1234 5678", "DE"), ("0 049 151 12345678", "DE"),
             ("+49 (0)151 1234 5678", None), (" 0049151 12345678 ", "fr"), ("0151/1234-5678", "de")]
    pairs = sorted(pairs | set(extra), key=lambda p: (p[0], p[1] or ""))
    assert len(pairs) > 500
    results = normalise_many(pairs)
    assert results == [normalise(raw, hint) for raw, hint in pairs]
    # normalise asks number_type instead of is_valid_number: the same verdict, checked here.
    import phonenumbers

    for (raw, hint), result in zip(pairs, results):
        if result.phone_e164:
            assert phonenumbers.is_valid_number(phonenumbers.parse(result.phone_e164))
        elif "invalid phone number for its region" in (result.invalid_reason or ""):
            text = raw.strip()
            text = "+" + text[2:] if text.startswith("00") else text
            assert not phonenumbers.is_valid_number(phonenumbers.parse(text, None if text.startswith("+") else hint))
