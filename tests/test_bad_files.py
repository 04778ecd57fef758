"""One bad file never stops a night: a file its reader cannot handle is quarantined whole,
and every other file of the run, with its opt-outs, is published."""

from __future__ import annotations

import pytest

from tests.conftest import query, run_cli, statuses

HEALTHY_STOP = (
    '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {'
    '"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},'
    '"contacts": [{"profile": {"name": "Ana"}, "wa_id": "4915201234567"}],'
    '"messages": [{"from": "4915201234567", "id": "wamid.HEALTHY.STOP", "timestamp": "1794200000", "type": "text",'
    '"text": {"body": "STOP"}}]}}]}]}\n'
)
NESTED = "[" * 5000 + "]" * 5000


def _with_healthy_stop(exports):
    (exports / "whatsapp" / "healthy_stop.jsonl").write_text(HEALTHY_STOP)


def _file_row(warehouse, source_file):
    return query(warehouse, "SELECT rows_read, events, quarantined, skipped, notes FROM source_files WHERE source_file = ?",
                 [source_file])[0]


def _assert_night_went_on(warehouse, source_file, reason):
    rows_read, events, quarantined, skipped, notes = _file_row(warehouse, source_file)
    assert rows_read == events + quarantined + skipped and quarantined >= 1
    reasons = [r for (r,) in query(warehouse, "SELECT reason FROM quarantine WHERE source_file = ?", [source_file])]
    assert any(reason in r for r in reasons), reasons
    # The STOP in the healthy file beside it is published; so is the rest of the night.
    got = statuses(warehouse)
    assert got[("+4915201234567", "marketing")] == "opted_out"
    assert got[("+447400123456", "marketing")] == "opted_out"
    assert query(warehouse, "SELECT status FROM runs") == [("succeeded",)]


def test_json_nested_beyond_the_parsers_limit_is_quarantined(exports, warehouse_path):
    """Tried as a new user would: 5,000 nested brackets once failed the whole night at staging."""
    _with_healthy_stop(exports)
    (exports / "whatsapp" / "nested.json").write_text(NESTED)
    assert run_cli(exports, warehouse_path) == 0
    _assert_night_went_on(warehouse_path, "whatsapp/nested.json", "nested too deeply for the JSON parser")


def test_a_jsonl_line_nested_beyond_the_limit_costs_only_that_line(exports, warehouse_path):
    _with_healthy_stop(exports)
    (exports / "whatsapp" / "mixed.jsonl").write_text(NESTED + "\n" + HEALTHY_STOP.replace("HEALTHY", "OTHER"))
    assert run_cli(exports, warehouse_path) == 0
    assert _file_row(warehouse_path, "whatsapp/mixed.jsonl")[:4] == (2, 1, 1, 0)
    _assert_night_went_on(warehouse_path, "whatsapp/mixed.jsonl", "nested too deeply")


def _failing_adapter(exc: BaseException, victim: str):
    from types import SimpleNamespace

    from consent.reading import channels

    real = channels.FORMATS["csv_export"]

    def read(data, ctx, config, policy):
        if ctx.source_file.endswith(victim):
            raise exc
        return real.read(data, ctx, config, policy)

    return SimpleNamespace(SUFFIXES=real.SUFFIXES, read=read)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (MemoryError(), "file could not be read (MemoryError)"),
        (RecursionError("maximum recursion depth exceeded"), "file could not be read (RecursionError"),
        (KeyError("column"), "file could not be read (KeyError"),
        (UnicodeError("a codec the reader did not expect"), "file could not be read (UnicodeError"),
    ],
    ids=["memory", "recursion", "adapter-bug", "codec"],
)
def test_any_failure_while_reading_one_file_quarantines_that_file(exports, warehouse_path, monkeypatch, exc, reason):
    from consent.reading import channels

    _with_healthy_stop(exports)
    (exports / "web_form" / "victim.csv").write_text("phone,event_type\n+4915201234599,opt_in\n")
    monkeypatch.setitem(channels.FORMATS, "csv_export", _failing_adapter(exc, "victim.csv"))
    assert run_cli(exports, warehouse_path) == 0
    _assert_night_went_on(warehouse_path, "web_form/victim.csv", reason)
    assert _file_row(warehouse_path, "web_form/victim.csv")[:4] == (1, 0, 1, 0)
    # The other CSV files of the same channel were read as usual.
    assert _file_row(warehouse_path, "web_form/signups_2026-11-01.csv")[:4] == (8, 5, 3, 0)


def test_a_failure_while_building_one_files_events_quarantines_its_rows(exports, warehouse_path, monkeypatch):
    import consent.reading.ingest as ingest

    _with_healthy_stop(exports)
    real = ingest.build_file

    def build_file(read, ctx, *args):
        if ctx.source_file == "web_form/signups_2026-11-01.csv" and read.table is not None:
            raise ValueError("an unexpected value in +4915201234567's row")
        return real(read, ctx, *args)

    monkeypatch.setattr(ingest, "build_file", build_file)
    assert run_cli(exports, warehouse_path) == 0
    rows_read, events, quarantined, skipped, notes = _file_row(warehouse_path, "web_form/signups_2026-11-01.csv")
    assert (rows_read, events, quarantined, skipped) == (8, 0, 8, 0)
    assert any("could not be built into events (ValueError" in n for n in notes)
    # An error message never carries a number into notes, logs or the quarantine reason.
    assert not any("4915201234567" in n for n in notes)
    got = statuses(warehouse_path)
    assert got[("+4915201234567", "marketing")] == "opted_out"  # the healthy STOP
