"""Fuzz targets for the CSV and webhook adapters (hypothesis).

`make test` runs them briefly; `make fuzz` runs them long
(FUZZ_EXAMPLES=20000). Whatever the bytes, an adapter must not raise, and
every row it reports must end as an event, a quarantine row or a skipped item,
and the column-wise CSV builder must give exactly what the row-by-row
reference gives.
"""

import json
import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.reading.channels.base import FileRead
from consent.reading.channels.csv_export import read_csv, read_csv_parts
from consent.reading.channels.whatsapp_webhook import WholeFile, read_webhook_parts, read_webhooks
from consent.reading.columnar import build_file, phone_pairs
from consent.domain.events import FileContext, build_events, phone_key, phone_keys
from consent.domain.phones import PhoneBook, normalise
from consent.domain.policy import ChannelConfig, Policy

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = [p.read_bytes() for p in sorted((FIXTURES / "exports").rglob("*.*"))] + [
    p.read_bytes() for p in sorted((FIXTURES / "bad_exports").rglob("*.*")) if p.stat().st_size < 5000
]
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw):
    """A seed export with bytes flipped, inserted, deleted or truncated, or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from([b'"', b",", b"\n", b"\r\n", b"\x00", b"{", b"]", b";", b"\xff\xfe", "é".encode()]))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            del data[at:]
    return bytes(data)


def conserved(rows, ctx) -> None:
    phones = {phone_key(r, ctx): normalise(*phone_key(r, ctx)) for r in rows if r.needs_phone}
    built = build_events(rows, ctx, phones, ["marketing", "utility"], datetime(2026, 11, 10), "fuzz")
    assert built.events.height + built.quarantine.height + built.skipped.height == len(rows)


def same_as_row_by_row(read, ctx) -> None:
    """The column-wise build of a CSV read equals the row-by-row reference, column for column."""
    phones = PhoneBook.of_pairs(phone_pairs(read, ctx))
    fast = build_file(read, ctx, phones, ["marketing", "utility"], datetime(2026, 11, 10), "fuzz")
    reference = build_events(read.all_rows(), ctx, phones.lookup(), ["marketing", "utility"], datetime(2026, 11, 10), "fuzz")
    for name in ("events", "quarantine", "skipped", "sends"):
        got, want = getattr(fast, name), getattr(reference, name)
        assert got.schema == want.schema, name
        assert got.to_dicts() == want.to_dicts(), name
    assert fast.events.height + fast.quarantine.height == read.row_count


def _row(r):
    return (r.line, r.raw_text, r.identity, r.fields, r.pointer, r.error, r.skip_reason)


def same_in_parts(data, ctx, config, whole: FileRead) -> None:
    """Read in parts of a few characters (cut between rows), by either splitter, a CSV file gives
    exactly the whole read's rows and notes, and its parts built one by one give the whole build."""
    phones = PhoneBook.of_pairs(phone_pairs(whole, ctx))
    want = build_file(whole, ctx, phones, ["marketing", "utility"], datetime(2026, 11, 10), "fuzz")
    for plain_path in (True, False):
        for size in (1, 40):
            parts = list(read_csv_parts(data, ctx, config, part_chars=size, plain_path=plain_path))
            assert parts
            assert [n for p in parts for n in p.notes] == whole.notes
            assert [_row(r) for p in parts for r in p.all_rows()] == [_row(r) for r in whole.all_rows()]
            built = [build_file(p, ctx, phones, ["marketing", "utility"], datetime(2026, 11, 10), "fuzz") for p in parts]
            for name in ("events", "quarantine", "skipped", "sends"):
                got = pl.concat([getattr(b, name) for b in built], how="vertical")
                assert got.to_dicts() == getattr(want, name).to_dicts(), name


def same_as_csv_module(data, ctx, config) -> FileRead:
    """The Polars split of a plain file reads exactly what the csv module reads."""
    read = read_csv(data, ctx, config)
    reference = read_csv(data, ctx, config, plain_path=False)
    assert read.notes == reference.notes
    assert [_row(r) for r in read.all_rows()] == [_row(r) for r in reference.all_rows()]
    return read


@FUZZ
@given(mutated())
def test_fuzz_csv_adapter_never_raises_conserves_rows_and_matches_the_reference(data):
    ctx = FileContext(channel="web_form", source_file="web_form/fuzz.csv", file_hash="f")
    read = same_as_csv_module(data, ctx, ChannelConfig())
    conserved(read.all_rows(), ctx)
    same_as_row_by_row(read, ctx)
    same_in_parts(data, ctx, ChannelConfig(), read)


def test_plain_files_split_by_polars_read_like_the_csv_module():
    """Blank and whitespace-only lines, CRLF, ragged rows, an over-long field, a missing final newline, tabs."""
    long_cell = "x" * 5000
    cases = [
        b"phone,event_type\n+4915112345678,opt_out\n\n  \n,\n+447400123456,opt_in\n",
        b"phone,event_type\r\n+4915112345678,opt_out\r\n+4915112345678\r\n+1,2,3\r\n",
        f"phone,event_type,evidence_ref\n+4915112345678,opt_out,{long_cell}\n+4915112345678,opt_out,ok".encode(),
        "phone,event_type,evidence_ref\n+4915112345678,opt_out,\u00a0M\u00fcller\u2028x\u0085\n".encode(),
    ]
    ctx = FileContext(channel="web_form", source_file="web_form/plain.csv", file_hash="p")
    for data in cases:
        read = same_as_csv_module(data, ctx, ChannelConfig())
        assert read.table is not None and read.table.height >= 1
        same_as_row_by_row(read, ctx)
        same_in_parts(data, ctx, ChannelConfig(), read)
    tabbed = b"phone\tevent_type\n+4915112345678\topt_out\n\t\n"
    read = same_as_csv_module(tabbed, ctx, ChannelConfig(delimiter="\t"))
    assert read.row_count == 1


@FUZZ
@given(mutated(), st.sampled_from([".json", ".jsonl"]))
def test_fuzz_webhook_adapter_never_raises_and_conserves_rows(data, suffix):
    ctx = FileContext(channel="whatsapp", source_file="whatsapp/fuzz" + suffix, file_hash="f")
    whole = read_webhooks(data, ctx, Policy(), suffix)
    conserved(whole.rows, ctx)
    # The items counted in the payloads (rows read) are the rows the reader made, on any input.
    assert whole.row_count == len(whole.rows)
    # Read in parts of one or two payloads (a JSON array decoded element by element), with ordinary
    # items in columns or not, the file gives exactly the same rows, or the streaming reader hands
    # back the whole read; and the column-wise build of its parts equals the row-by-row reference.
    for size in (1, 2, 10_000):
        for columnar in (True, False):
            assert [_webhook_row(r) for r in streamed(data, ctx, suffix, size, columnar)] == [
                _webhook_row(r) for r in whole.rows]
    # The text decoded a few bytes at a time: chunks that cut values, lines and UTF-8 characters
    for chunk in (1, 3, 7):
        with decoded_in_chunks(chunk):
            assert [_webhook_row(r) for r in streamed(data, ctx, suffix, 2)] == [_webhook_row(r) for r in whole.rows]
    for business in (None, {"106540352242922": "acme"}):
        ctx.number_businesses = business
        same_webhook_build(data, ctx, suffix, whole)


def _webhook_row(r):
    return (*_row(r), r.occurred_at, r.send, r.links, r.phone_number_id)


@contextmanager
def decoded_in_chunks(size: int):
    """A streamed webhook file's bytes decoded `size` at a time (8 MB in a run)."""
    from consent.reading.channels import whatsapp_webhook

    kept = whatsapp_webhook._DECODE_BYTES
    whatsapp_webhook._DECODE_BYTES = size
    try:
        yield
    finally:
        whatsapp_webhook._DECODE_BYTES = kept


def streamed(data: bytes, ctx: FileContext, suffix: str, size: int, columnar: bool = True) -> list:
    rows = []
    try:
        for part in read_webhook_parts(data, ctx, Policy(), suffix, part_payloads=size, columnar=columnar):
            rows.extend(part.all_rows())
            assert part.row_count == len(part.all_rows())  # each part's items counted = its rows
    except WholeFile as whole:
        return whole.read.rows
    return rows


WEBHOOK_PURPOSES = (["marketing", "utility"], ["utility"])  # the second: Policy's marketing purpose unknown


def same_webhook_build(data: bytes, ctx: FileContext, suffix: str, whole: FileRead) -> None:
    """Parts read with ordinary items in columns, built column-wise, equal the whole file's rows
    built one by one: events, quarantine, skipped items, sends and links, row for row, in order."""
    try:
        parts = list(read_webhook_parts(data, ctx, Policy(), suffix, part_payloads=3))
    except WholeFile as whole_file:
        parts = [whole_file.read]
    pairs = {key for r in whole.rows for key in phone_keys(r, ctx)}
    phones = PhoneBook.of_pairs(pairs | {key for p in parts for key in phone_pairs(p, ctx)})
    for purposes in WEBHOOK_PURPOSES:
        want = build_events(whole.rows, ctx, phones.lookup(), purposes, datetime(2026, 11, 10), "fuzz")
        built = [build_file(p, ctx, phones, purposes, datetime(2026, 11, 10), "fuzz") for p in parts]
        for name in ("events", "quarantine", "skipped", "sends", "links"):
            got = pl.concat([getattr(b, name) for b in built], how="vertical")
            assert got.schema == getattr(want, name).schema, name
            assert got.to_dicts() == getattr(want, name).to_dicts(), name


def _parses(line: str) -> bool:
    import json

    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def test_webhook_files_read_in_parts_equal_the_whole_read():
    """Every fixture and sample webhook file, as JSONL and as a JSON array, cut into parts of one payload."""
    files = sorted((FIXTURES / "exports").rglob("*.json*")) + sorted(Path("sample_exports").rglob("*.json*"))
    assert files
    for path in files:
        data = path.read_bytes()
        ctx = FileContext(channel="whatsapp", source_file=path.name, file_hash="f")
        whole = read_webhooks(data, ctx, Policy(), path.suffix)
        assert [_webhook_row(r) for r in streamed(data, ctx, path.suffix, 1)] == [_webhook_row(r) for r in whole.rows], path
        for chunk in (5, 64):  # decoded a few bytes at a time
            with decoded_in_chunks(chunk):
                assert [_webhook_row(r) for r in streamed(data, ctx, path.suffix, 3)] == [
                    _webhook_row(r) for r in whole.rows], (path, chunk)
        for business in (None, {"106540352242922": "acme"}):
            ctx.number_businesses = business
            same_webhook_build(data, ctx, path.suffix, whole)
        if path.suffix == ".jsonl":  # its well-formed payloads as one JSON array
            lines = [l for l in data.decode("utf-8-sig").splitlines() if l.strip() and _parses(l)]
            array = ("[\n" + ",\n".join(lines) + "\n]").encode()
            whole = read_webhooks(array, ctx, Policy(), ".json")
            assert whole.rows and [_row(r) for r in streamed(array, ctx, ".json", 1)] == [_row(r) for r in whole.rows]


def test_column_wise_build_matches_the_reference_on_every_sample_export():
    """All bundled CSV exports, with their channel mappings (value maps, defaults, date formats, time zones)."""
    from consent.domain.policy import load_channels

    root = Path(__file__).parent.parent / "sample_exports"
    channels = load_channels(root)
    files = sorted(root.glob("*/*.csv")) + sorted((FIXTURES / "exports").glob("*/*.csv")) + sorted((FIXTURES / "bad_exports").rglob("*.csv"))
    assert len(files) > 10
    for path in files:
        config = channels.for_channel(path.parent.name)
        ctx = FileContext(channel=path.parent.name, source_file=path.name, file_hash="s", timezone=config.timezone,
                          default_region=config.default_region, date_format=config.date_format)
        read = same_as_csv_module(path.read_bytes(), ctx, config)
        same_as_row_by_row(read, ctx)
        same_in_parts(path.read_bytes(), ctx, config, read)


def test_python_whitespace_constant_is_what_str_strip_removes():
    import sys

    from consent.reading.channels.csv_export import PY_WHITESPACE

    assert PY_WHITESPACE == "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


# Webhook items as Meta posts them, ordinary and not: what the column reader must route right.
_NUMBERS = ["4915112345678", "447400123456", "12", "+4915112345678", " 4915112345678 ", "", None, 4915112345678]
_IDS = ["wamid.A1", "wamid.B2", " wamid.C3 ", "  ", "", None, 7]
_TIMES = ["1762300800", 1762300860, "", None, "yesterday", " 1762300920 "]
_USERS = [None, "US.13491208655302741918", "bad user id"]


@st.composite
def webhook_item(draw):
    """A message or status item, from mostly ordinary to odd (wrong types, no id, BSUIDs, 131050)."""
    maybe = lambda key, values: {key: draw(st.sampled_from(values))} if draw(st.booleans()) else {}  # noqa: E731
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["text", "button", "interactive", "image", "system", None]))
        item = {"type": kind, **maybe("from", _NUMBERS), **maybe("id", _IDS), **maybe("timestamp", _TIMES)}
        item.update(maybe("from_user_id", _USERS))
        if kind == "text":
            item["text"] = draw(st.sampled_from([{"body": "STOP"}, {"body": " start "}, {"body": "Hi"}, {}, "STOP"]))
        elif kind == "button":
            item["button"] = draw(st.sampled_from([{"text": "Stop promotions"}, {"payload": "STOP"}, {"text": "More"}]))
        elif kind == "interactive":
            item["interactive"] = {"button_reply": {"id": "x", "title": draw(st.sampled_from(["Stop promotions", "Yes"]))}}
        elif kind == "system":
            item["system"] = draw(st.sampled_from([
                {"type": "user_changed_number", "wa_id": "447400123456"},
                {"type": "user_preference_changed", "value": "stop"},
            ]))
        return "messages", item
    item = {"status": draw(st.sampled_from(["sent", "delivered", "read", "failed", None])),
            **maybe("recipient_id", _NUMBERS), **maybe("id", _IDS), **maybe("timestamp", _TIMES)}
    item.update(maybe("recipient_user_id", _USERS))
    item.update(maybe("errors", [[{"code": 131050}], [{"code": "131050"}], [{"code": 131049}], ["x"]]))
    item.update(maybe("pricing", [{"category": "marketing"}, {}, "marketing"]))
    return "statuses", item


@st.composite
def webhook_file(draw):
    payloads = []
    for _ in range(draw(st.integers(1, 4))):
        changes = []
        for _ in range(draw(st.integers(1, 3))):
            value = {"messaging_product": "whatsapp"}
            number_id = draw(st.sampled_from(["106540352242922", "999", None, 5]))
            if number_id is not None:
                value["metadata"] = {"phone_number_id": number_id}
            if draw(st.booleans()):
                value["contacts"] = [{"wa_id": draw(st.sampled_from(_NUMBERS[:2])),
                                      **({"user_id": _USERS[1]} if draw(st.booleans()) else {})}]
            for key, item in draw(st.lists(webhook_item(), max_size=5)):
                value.setdefault(key, []).append(item)
            changes.append({"field": "messages", "value": value})
        payloads.append({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": changes}]})
    if draw(st.booleans()):
        return "\n".join(json.dumps(p) for p in payloads).encode(), ".jsonl"
    return json.dumps(payloads).encode(), ".json"


@FUZZ
@given(webhook_file(), st.sampled_from([None, {"106540352242922": "acme"}]), st.sampled_from([None, "de"]))
def test_fuzz_webhook_items_read_in_columns_build_like_the_row_reader(file, businesses, region):
    """Generated webhook files (ordinary items among odd ones, several changes and entries): the column
    reader gives the row reader's rows, and its build the row-by-row build, row for row and in order."""
    data, suffix = file
    ctx = FileContext(channel="whatsapp", source_file="whatsapp/gen" + suffix, file_hash="g",
                      default_region=region, number_businesses=businesses)
    whole = read_webhooks(data, ctx, Policy(), suffix)
    for size in (1, 10_000):
        assert [_webhook_row(r) for r in streamed(data, ctx, suffix, size)] == [_webhook_row(r) for r in whole.rows]
    same_webhook_build(data, ctx, suffix, whole)


def test_webhook_files_decoded_a_few_bytes_at_a_time_read_like_the_whole_text():
    """Edge cases of the chunked decoding of a streamed webhook file: numbers a chunk cuts (`2` of
    `23`), a byte order mark and characters cut between chunks, whitespace across chunks, a file
    that is not an array, malformed ends, lines ending in \\r\\n cut between \\r and \\n."""
    ctx = FileContext(channel="whatsapp", source_file="whatsapp/edge.json", file_hash="f")
    cases = [
        (b"[1, 23, 456,\n 7890]", ".json"),
        ('\ufeff[{"entry": "\u00e9t\u00e9 \u20ac"}, 12345 , {"object": "x"}]\n'.encode(), ".json"),
        (b'   \n\t [ \n ]  \n', ".json"), (b" \n ", ".json"), (b'{"object": "whatsapp_business_account"}', ".json"),
        (b"[1, 2", ".json"), (b"[1] x", ".json"), (b"[1 2]", ".json"), (b"[]", ".json"),
        (b'{"a": 1}\r\n\r\n{"b": 22}\r\nnot json\r\n\xc3\xa9\n', ".jsonl"), (b"\xff[1]", ".json"),
    ]
    assert len(read_webhooks(cases[0][0], ctx, Policy(), ".json").rows) == 4  # a row for each payload
    for data, suffix in cases:
        whole = [_webhook_row(r) for r in read_webhooks(data, ctx, Policy(), suffix).rows]
        for chunk in (1, 2, 3, 5):
            with decoded_in_chunks(chunk):
                assert [_webhook_row(r) for r in streamed(data, ctx, suffix, 1)] == whole, (data, chunk)
                if suffix == ".json" and _parses(data.decode("utf-8-sig", "replace")):
                    # a well-formed array is streamed, not handed back whole as malformed
                    assert all(read_webhook_parts(data, ctx, Policy(), suffix, part_payloads=1)), (data, chunk)
