"""The salted phone hash in Python (twin of SQL `salted_hash`) and the digits erasure scrubs."""

from __future__ import annotations

import hashlib

import phonenumbers


def phone_hash(phone_e164: str, salt: str) -> str:
    """Salted SHA-256 of the E.164 number: the Python twin of SQL `salted_hash` (consent/storage/sql/macros.sql)."""
    return hashlib.sha256((salt + phone_e164).encode("utf-8")).hexdigest()[:32]


def number_digits(phone_e164: str) -> str:
    """The national significant number: present in every spelling's digits."""
    parsed = phonenumbers.parse(phone_e164, None)
    return phonenumbers.national_significant_number(parsed)
