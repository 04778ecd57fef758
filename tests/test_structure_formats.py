"""A file format is one module and one registry line: the pipeline names no format, every format
module is registered once, and a format written outside the package is read end to end."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from tests.conftest import query, run_cli, statuses

REPO = Path(__file__).resolve().parent.parent
CHANNELS = REPO / "consent" / "reading" / "channels"
# The contract and the registry; every other module of the package is a format.
NOT_FORMATS = {"__init__", "base"}
PIPELINE = ("consent", "resources", "assets", "pipelines", "cli", "expectations")


def _format_modules() -> set[str]:
    return {p.stem for p in CHANNELS.glob("*.py") if p.stem not in NOT_FORMATS}


def _pipeline_files() -> list[Path]:
    return [p for folder in PIPELINE for p in sorted((REPO / folder).rglob("*.py"))
            if not p.is_relative_to(CHANNELS)]


def test_nothing_outside_the_channels_package_names_a_format():
    formats = _format_modules()
    assert formats >= {"csv_export", "whatsapp_webhook"}
    format_names = {f"consent.reading.channels.{m}" for m in formats}
    tables = {node.name for m in formats for node in ast.parse((CHANNELS / f"{m}.py").read_text()).body
              if isinstance(node, ast.ClassDef) and node.name.endswith("Table")}
    assert {"CsvTable", "WebhookTable"} <= tables
    words = re.compile(r"\b(" + "|".join(sorted(formats | tables)) + r")\b")
    hits = []
    for path in _pipeline_files():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            hits += [f"{path.relative_to(REPO)} imports {n}" for n in sorted(names & format_names)]
        hits += [f"{path.relative_to(REPO)} names {w}" for w in sorted(set(words.findall(text)))]
    assert hits == []


def test_every_format_module_is_registered_once_and_claims_its_own_suffixes():
    from consent.reading import channels

    registered = {name: adapter.__name__.rpartition(".")[2] for name, adapter in channels.FORMATS.items()}
    assert sorted(registered.values()) == sorted(_format_modules())
    assert all(name == module for name, module in registered.items())
    suffixes = [s for adapter in channels.FORMATS.values() for s in adapter.SUFFIXES]
    assert len(suffixes) == len(set(suffixes))
    assert all(s.startswith(".") and s == s.lower() for s in suffixes)
    assert all(callable(adapter.read) for adapter in channels.FORMATS.values())
    assert channels.adapter_for(Path("x/Y.CSV")) is channels.FORMATS["csv_export"]
    assert channels.adapter_for(Path("x/y.jsonl")) is channels.FORMATS["whatsapp_webhook"]
    assert channels.adapter_for(Path("x/y.xlsx")) is None


def test_a_file_read_carries_one_generic_table_not_a_field_per_format():
    import dataclasses

    from consent.reading.channels.base import FileRead

    assert [f.name for f in dataclasses.fields(FileRead)] == ["rows", "notes", "table", "items"]


def test_no_function_of_the_readers_is_over_60_lines():
    files = [*CHANNELS.glob("*.py"), REPO / "consent" / "reading" / "columnar.py", REPO / "consent" / "domain" / "events.py"]
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert long == []


# A small format written by a user: a form tool's JSON-lines export, one object per line, its own
# field names. Rows only (no column table): the reference build makes their events.
NDJSON_FORMAT = '''
"""A form tool's JSON-lines export: {"number", "action", "at", "topics", "method", "notice"} per line."""
import json

from consent.domain.events import SourceRow, raw_json
from consent.reading.channels.base import FileRead

SUFFIXES = (".ndjson",)
ACTIONS = {"subscribe": "opt_in", "unsubscribe": "opt_out"}


def read(data, ctx, config, policy):
    rows = []
    for line, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            rows.append(SourceRow(line=line, raw=text, identity="", error=f"malformed JSON line: {exc.msg}"))
            continue
        rows.append(SourceRow(line=line, raw=raw_json(item), identity=raw_json(item), fields={
            "phone": item.get("number"),
            "event_type": ACTIONS.get(item.get("action"), item.get("action")),
            "purposes": ";".join(item.get("topics", [])),
            "occurred_at": item.get("at"),
            "consent_method": item.get("method"),
            "notice_version": item.get("notice"),
        }))
    yield FileRead(rows=rows)
'''

NDJSON_EXPORT = (
    # a national number: the channel's default_region (channels.yaml) reads it; a time without offset
    # is in the channel's time zone
    '{"number": "0151 2345 6701", "action": "subscribe", "at": "2026-11-02T09:00:00", "topics": ["marketing"], '
    '"method": "checkbox", "notice": "news-v1"}\n'
    '{"number": "+4915123456702", "action": "subscribe", "at": "2026-11-02T10:00:00Z", '
    '"topics": ["marketing", "utility"], "method": "checkbox", "notice": "news-v1"}\n'
    '\n'
    '{"number": "+4915123456702", "action": "unsubscribe", "at": "2026-11-03T08:00:00Z", "topics": ["marketing"]}\n'
    '{"number": "+4915123456703", "action": "subscribe", "at": "2026-11-0\n'
)


def _new_format(tmp_path: Path, monkeypatch, exports: Path):
    """The format module in a temporary folder, a channel folder of its files and the channel's
    configuration; returns the imported module (not yet registered)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ndjson_export.py").write_text(NDJSON_FORMAT)
    monkeypatch.syspath_prepend(str(plugins))
    module = importlib.import_module("ndjson_export")
    (exports / "newsletter_tool").mkdir()
    (exports / "newsletter_tool" / "signups_2026-11.ndjson").write_text(NDJSON_EXPORT)
    (exports / "channels.yaml").write_text(
        "channels:\n  newsletter_tool:\n    timezone: Europe/Berlin\n    default_region: DE\n")
    return module


def test_a_format_written_in_a_temporary_folder_is_read_end_to_end(tmp_path, monkeypatch, exports, warehouse_path):
    from consent.reading import channels

    module = _new_format(tmp_path, monkeypatch, exports)
    monkeypatch.setitem(channels.FORMATS, "ndjson_export", module)  # the one registry line
    assert run_cli(exports, warehouse_path) == 0

    events = query(warehouse_path, """
        SELECT phone_e164, event_type, list_sort(purposes), occurred_at, consent_method, notice_version, source_line
        FROM consent_events WHERE source_file = 'newsletter_tool/signups_2026-11.ndjson' ORDER BY source_line""")
    assert [(e[0], e[1], e[2], str(e[3]), e[4], e[5], e[6]) for e in events] == [
        ("+4915123456701", "opt_in", ["marketing"], "2026-11-02 08:00:00", "checkbox", "news-v1", 1),
        ("+4915123456702", "opt_in", ["marketing", "utility"], "2026-11-02 10:00:00", "checkbox", "news-v1", 2),
        ("+4915123456702", "opt_out", ["marketing"], "2026-11-03 08:00:00", None, None, 4),
    ]
    now = statuses(warehouse_path)
    assert now[("+4915123456701", "marketing")] == "opted_in"
    assert now[("+4915123456702", "marketing")] == "opted_out"
    assert now[("+4915123456702", "utility")] == "opted_in"
    quarantined = query(warehouse_path, "SELECT source_line, reason FROM quarantine "
                                        "WHERE source_file = 'newsletter_tool/signups_2026-11.ndjson'")
    assert [(line, reason.split(":")[0]) for line, reason in quarantined] == [(5, "malformed JSON line")]
    assert query(warehouse_path, "SELECT channel, rows_read, events, quarantined, skipped FROM source_files "
                                 "WHERE source_file = 'newsletter_tool/signups_2026-11.ndjson'") == [
        ("newsletter_tool", 4, 3, 1, 0)]
    # A second night reads nothing again: the file's hash is registered as any other format's.
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT count(*) FROM consent_events "
                                 "WHERE source_file = 'newsletter_tool/signups_2026-11.ndjson'") == [(3,)]


def test_without_its_registry_line_the_format_is_not_read(tmp_path, monkeypatch, exports, warehouse_path, capsys):
    _new_format(tmp_path, monkeypatch, exports)
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT count(*) FROM consent_events WHERE channel = 'newsletter_tool'") == [(0,)]
    assert query(warehouse_path, "SELECT count(*) FROM source_files WHERE channel = 'newsletter_tool'") == [(0,)]
    assert "unsupported file type .ndjson" in capsys.readouterr().out
