"""A file format is one module and one registry line: the pipeline names no format, every format
module is registered once, and a format written outside the package is read end to end."""

from __future__ import annotations

import ast
import importlib
import re
import sys
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
    monkeypatch.delitem(sys.modules, "ndjson_export", raising=False)  # this test's module, not an earlier one's
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


# The same format with a column table: lines naming a number go into the table, which builds the
# rows it can with the shared helpers (`consent.reading.columnar`) and leaves the rest, by position,
# to the reference build.
NDJSON_TABLE_FORMAT = NDJSON_FORMAT.replace('''    yield FileRead(rows=rows)
''', '''    odd = [r for r in rows if r.error is not None or not r.fields.get("phone")]
    yield FileRead(rows=odd, table=Table([r for r in rows if r not in odd]))


import polars as pl
from zoneinfo import ZoneInfo

from consent.domain.events import EVENT_SCHEMA, parse_purposes, parse_timestamp
from consent.reading.columnar import batch, event_columns, event_ids, join_parsed, join_phones

FIELDS = ("phone", "event_type", "purposes", "occurred_at", "consent_method", "notice_version")
BUILT = []  # (rows built by the table, rows left to the reference), per build


class Table:
    def __init__(self, rows):
        self.frame = pl.DataFrame({"line": [r.line for r in rows], "raw": [r.raw for r in rows],
                                   **{k: [r.fields[k] for r in rows] for k in FIELDS}},
                                  schema={"line": pl.Int64, "raw": pl.Utf8, **{k: pl.Utf8 for k in FIELDS}})

    @property
    def height(self):
        return self.frame.height

    def source_rows(self, positions=None):
        frame = self.frame if positions is None else self.frame[positions]
        return [SourceRow(line=r["line"], raw=r["raw"], identity=r["raw"], fields={k: r[k] for k in FIELDS})
                for r in frame.iter_rows(named=True)]

    def row_order(self, row):
        return (row.line,)

    def in_file_order(self, frame):
        return frame.sort("source_line", maintain_order=True)

    def phone_pairs(self, ctx):
        return {(raw, _hint(ctx)) for raw in self.frame.get_column("phone").unique().to_list()}

    def build(self, ctx, phones, purposes, ingested_at, run_id):
        tz = ZoneInfo(ctx.timezone)
        frame = self.frame.with_row_index("position").with_columns(hint=pl.lit(_hint(ctx) or ""))
        frame = join_phones(frame, phones)
        frame = join_parsed(frame, "occurred_at", lambda v: parse_timestamp(v, tz), pl.Datetime("us"))
        frame = join_parsed(frame, "purposes", lambda v: parse_purposes(v, purposes), pl.List(pl.Utf8))
        plain = lambda c: pl.col(c).is_null() | (pl.col(c) == pl.col(c).str.strip_chars().str.to_lowercase())
        ordinary = (pl.col("phone_e164").is_not_null() & pl.col("occurred_at__ok") & pl.col("purposes__ok")
                    & pl.col("event_type").is_in(["opt_in", "opt_out"]) & plain("consent_method")
                    & plain("notice_version")).fill_null(False)
        good, slow = frame.filter(ordinary), frame.filter(~ordinary).get_column("position").to_list()
        events = good.with_columns(event_ids(ctx, good.get_column("raw").to_list())).select(event_columns(
            ctx, ingested_at, run_id, event_id=pl.col("event_id"), event_type=pl.col("event_type"),
            phone_raw=pl.col("phone"), country_hint=pl.lit(_hint(ctx), dtype=pl.Utf8),
            phone_e164=pl.col("phone_e164"), phone_region=pl.col("phone_region"), phone_type=pl.col("phone_type"),
            purposes=pl.col("purposes__value"), occurred_at=pl.col("occurred_at__value"),
            consent_method=pl.col("consent_method"), notice_version=pl.col("notice_version"),
            acquisition_source=pl.lit("organic"), source_line=pl.col("line")))
        BUILT.append((good.height, len(slow)))
        return batch(events=events.cast(EVENT_SCHEMA)), slow


def _hint(ctx):
    return ctx.default_region.upper() if ctx.default_region else None
''')
assert "class Table" in NDJSON_TABLE_FORMAT

EVENT_COLUMNS = ("event_id, channel, event_type, phone_raw, country_hint, phone_e164, phone_region, phone_type, "
                 "purposes, occurred_at, consent_method, notice_version, checkbox_pre_ticked, bundled_with_terms, "
                 "acquisition_source, evidence_ref, source_file, source_line, source_pointer, file_hash, warnings, "
                 "business, whatsapp_user_id, parent_user_id, changed_to")


def test_a_format_with_its_own_column_table_gives_what_its_rows_give(tmp_path, monkeypatch, exports, warehouse_path):
    """The table's build and the reference build of the same rows agree, run end to end: the
    contract is all a format's column build needs."""
    from consent.reading import channels

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ndjson_table_export.py").write_text(NDJSON_TABLE_FORMAT)
    monkeypatch.syspath_prepend(str(plugins))
    module = importlib.import_module("ndjson_table_export")
    (tmp_path / "rows").mkdir()
    _new_format(tmp_path / "rows", monkeypatch, exports)
    # one more line that the table leaves to the reference: a number that is not valid
    with (exports / "newsletter_tool" / "signups_2026-11.ndjson").open("a") as handle:
        handle.write('{"number": "+49 1", "action": "subscribe", "at": "2026-11-04T08:00:00Z", "topics": []}\n')
    results = {}
    for name, adapter in (("rows", importlib.import_module("ndjson_export")), ("table", module)):
        monkeypatch.setitem(channels.FORMATS, "ndjson_export", adapter)
        warehouse = warehouse_path.with_name(f"{name}.duckdb")
        assert run_cli(exports, warehouse) == 0
        where = "WHERE channel = 'newsletter_tool'"
        results[name] = (
            query(warehouse, f"SELECT {EVENT_COLUMNS} FROM consent_events {where} ORDER BY source_line"),
            query(warehouse, f"SELECT source_line, reason FROM quarantine {where} ORDER BY source_line"),
            query(warehouse, f"SELECT rows_read, events, quarantined, skipped FROM source_files {where}"),
        )
    assert module.BUILT == [(3, 1)]  # three rows built by the table, the invalid number left to the reference
    assert results["table"] == results["rows"]
    events, quarantined, counts = results["table"]
    assert len(events) == 3 and counts == [(5, 3, 2, 0)]
    assert [line for line, _ in quarantined] == [5, 6]
