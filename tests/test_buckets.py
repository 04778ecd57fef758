"""Contact buckets: one person's identifiers always share a bucket, whatever the bucket count."""

from __future__ import annotations

import duckdb
import pytest

from consent.domain.schema import CONSENT_EVENTS, IDENTIFIER_LINKS
from consent.run.buckets import BucketError, assign_buckets, bucket_sizes
from consent.run import buckets as buckets_module

A, A2, B, C = "+4915112345678", "+4915112345679", "+447911123456", "+14155550123"
UA, UB, PARENT = "DE.1111111111111111111", "GB.2222222222222222222", "ENT.3333333333333333333"


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute(CONSENT_EVENTS.ddl())
    con.execute(IDENTIFIER_LINKS.ddl())
    return con


def event(con, n, phone=None, user=None, parent=None, kind="opt_in", changed_to=None):
    con.execute(
        "INSERT INTO consent_events (event_id, channel, event_type, phone_e164, whatsapp_user_id, parent_user_id, "
        "changed_to, source_file, source_line, file_hash, ingested_at, run_id, business) "
        "VALUES (?, 'web_form', ?, ?, ?, ?, ?, 'f.csv', ?, 'h', now(), 'r', 'acme')",
        [f"e{n}", kind, phone, user, parent, changed_to, n],
    )


def link(con, n, phone=None, user=None, parent=None, previous=None):
    con.execute(
        "INSERT INTO identifier_links (link_id, business, phone_e164, whatsapp_user_id, parent_user_id, "
        "previous_user_id, linked_at, channel, source_file, ingested_at, run_id) "
        "VALUES (?, 'acme', ?, ?, ?, ?, now(), 'webhook', 'w.json', now(), 'r')",
        [f"l{n}", phone, user, parent, previous],
    )


def buckets_of(con) -> dict[str, tuple[str, int]]:
    return {i: (p, b) for i, p, b in con.execute("SELECT identifier, person, bucket FROM person_buckets").fetchall()}


def test_a_number_its_bsuid_its_parent_and_its_new_number_are_one_person_in_one_bucket(con):
    event(con, 1, phone=A)
    event(con, 2, user=UA, kind="opt_out")  # a BSUID-only opt-out
    link(con, 1, phone=A, user=UA, parent=PARENT)
    event(con, 3, phone=A, kind="number_change", changed_to=A2)
    event(con, 4, phone=B)
    event(con, 5, phone=C)
    for count in (1, 2, 7, 64):
        assign_buckets(con, count)
        found = buckets_of(con)
        assert {found[i] for i in (A, A2, UA, PARENT)} == {(min(A, A2, UA, PARENT), found[A][1])}
        assert found[B][0] == B and found[C][0] == C
        assert all(0 <= b < count for _, b in found.values())
    assert bucket_sizes(con) == {b: n for b, n in con.execute(
        "SELECT bucket, count(DISTINCT person) FROM person_buckets GROUP BY ALL").fetchall()}


def test_a_late_link_joining_two_persons_moves_one_into_the_others_bucket(con):
    event(con, 1, phone=A)
    event(con, 2, user=UB)
    link(con, 1, user=UB, previous=UA)  # UA replaced by UB, neither tied to A yet
    assign_buckets(con, 1024)
    before = buckets_of(con)
    assert before[A][0] == A and before[UB][0] == before[UA][0] == min(UA, UB)
    link(con, 2, phone=A, user=UA)  # learnt later: A's BSUID was UA
    assign_buckets(con, 1024)
    after = buckets_of(con)
    person = min(A, UA, UB)
    assert {after[i] for i in (A, UA, UB)} == {(person, after[A][1])}
    moved = [i for i in (A, UA, UB) if before[i] != after[i]]
    assert moved and all(after[i][1] == after[person][1] for i in moved)


def test_buckets_are_stable_across_connections_and_orders(con):
    for n, phone in enumerate([A, B, C, A2]):
        event(con, n, phone=phone)
    assign_buckets(con, 16)
    first = buckets_of(con)
    other = duckdb.connect()
    other.execute(CONSENT_EVENTS.ddl())
    other.execute(IDENTIFIER_LINKS.ddl())
    for n, phone in enumerate([A2, C, B, A]):
        event(other, n, phone=phone)
    assign_buckets(other, 16)
    assert buckets_of(other) == first


def test_a_chain_longer_than_the_rounds_allowed_is_refused_not_split(con, monkeypatch):
    monkeypatch.setattr(buckets_module, "MAX_ROUNDS", 2)
    phones = [f"+49151100000{n:02d}" for n in range(6)]
    for n in range(5):
        event(con, n, phone=phones[n], kind="number_change", changed_to=phones[n + 1])
    with pytest.raises(BucketError, match="after 2 rounds"):
        assign_buckets(con, 4)


def test_a_bucket_count_below_one_is_refused(con):
    with pytest.raises(ValueError, match="at least 1"):
        assign_buckets(con, 0)


def test_persons_spread_over_every_bucket(con):
    """md5 modulo the count, computed exactly: 400 persons over 4 buckets fill each of them."""
    con.execute("INSERT INTO consent_events (event_id, channel, event_type, phone_e164, source_file, source_line, "
                "file_hash, ingested_at, run_id, business) SELECT 'e' || i, 'web_form', 'opt_in', "
                "'+49151' || lpad(i::VARCHAR, 8, '0'), 'f.csv', i, 'h', now(), 'r', 'acme' FROM range(400) AS r(i)")
    assign_buckets(con, 4)
    sizes = bucket_sizes(con)
    assert set(sizes) == {0, 1, 2, 3} and min(sizes.values()) >= 60
    expected = dict(con.execute("SELECT person, CAST(md5_number(person) % 4 AS INTEGER) FROM person_buckets").fetchall())
    assert {p: b for _, (p, b) in buckets_of(con).items()} == expected
