"""Canonical CSV exports (and any CSV mapped onto them by channels.yaml).

Reads bytes, never guesses a number: ragged or oversized rows are quarantined
with the reason, a file without a required column is refused with the column
named (its rows are quarantined, so they are still counted), and unknown
columns are ignored and reported. Well-formed rows go into a `CsvTable`, which
builds the ordinary ones with Polars (every distinct date, purpose list or flag
parsed once, numbers joined from the phone book, ids hashed as the row path
hashes them) and leaves every other row (unknown type, bad number, unreadable
field, a WhatsApp user ID, non-ASCII text whose case mapping could differ) to
`build_events` unchanged.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl

from consent.reading.channels.base import FileRead, Pair
from consent.reading.columnar import batch, event_columns, event_ids, join_parsed, join_phones
from consent.domain.events import (
    CANONICAL_CSV_COLUMNS,
    EVENT_SCHEMA,
    EVENT_TYPES,
    IDENTIFIER_CSV_COLUMNS,
    REQUIRED_CSV_COLUMNS,
    BuiltBatch,
    FileContext,
    SourceRow,
    _acquisition_source,
    parse_bool,
    parse_purposes,
    parse_timestamp,
    raw_json,
)
from consent.domain.phones import PhoneBook
from consent.domain.policy import ChannelConfig, Policy

SUFFIXES = (".csv",)

MAX_FIELD_CHARS = 4096
csv.field_size_limit(64 * 1024 * 1024)


def decode(data: bytes) -> tuple[str, str | None]:
    """Text of the file and a note when it was not plain UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "decoded as UTF-16 (byte-order mark)"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        # Phone numbers and dates are ASCII; Latin-1 can only garble free text.
        return data.decode("latin-1"), "not UTF-8: decoded as Latin-1"


def _guess_delimiter(header_line: str, expected: str) -> str | None:
    for candidate in (";", "\t", "|"):
        if candidate != expected and header_line.count(candidate) >= 1 and header_line.count(expected) == 0:
            return candidate
    return None


# A header cell that is a number or a user ID, not a column name: the first row is data. Names
# (spelt as the reader sees them) are quoted in notes only after their digit runs are masked.
_NUMBER_CELL = re.compile(r"\+?[\d\s().\-/]+")
_USER_ID_CELL = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]*\d[A-Za-z0-9]*")
_DIGIT_RUN = re.compile(r"\d(?:[\s().\-/]*\d){4,}")


def _data_cell(cell: str) -> bool:
    return bool(_NUMBER_CELL.fullmatch(cell) and sum(c.isdigit() for c in cell) >= 5) or bool(_USER_ID_CELL.fullmatch(cell))


def _header_refusal(header: list[str], canonical_of: list[str | None]) -> tuple[str | None, bool]:
    """Why the first row cannot be read as a header (the file is refused whole), or None, and
    whether that row is data. Never guessed: a column named twice (after strip, case, BOM and the
    channel's mapping), a first row holding a number-like cell or no known column name. The reason
    names positions, never cells."""
    keys = [canonical or name.lower() for name, canonical in zip(header, canonical_of)]
    for i, key in enumerate(keys):
        if key and key in keys[:i]:
            first = keys.index(key) + 1
            named = repr(canonical_of[i]) if canonical_of[i] else "a column"
            return (f"file refused: {named} is named twice in the header (columns {first} and {i + 1}); "
                    "which one counts is not guessed"), False
    for i, name in enumerate(header):
        if canonical_of[i] is None and _data_cell(name):
            return (f"file refused: the first row looks like data, not a header (column {i + 1} holds a "
                    "number or user ID)"), True
    return None, False


# A file larger than this is read in parts of about this many characters, cut between rows
# (`consent.reading.ingest` streams it): memory holds one part's rows and frames, not the whole file's.
PART_CHARS = 16 * 1024 * 1024


def read(data: bytes, ctx: FileContext, config: ChannelConfig, policy: Policy) -> Iterator[FileRead]:
    """The adapter: the file in parts of PART_CHARS (read at each call, so a test can make every file many parts)."""
    return read_csv_parts(data, ctx, config, PART_CHARS)


def read_csv(data: bytes, ctx: FileContext, config: ChannelConfig, plain_path: bool = True) -> FileRead:
    """Every row of a CSV export, as one read. A file without quotes, NULs or lone carriage
    returns is split by Polars (`_read_plain`), any other by the csv module;
    both give the same rows (a fuzz test compares them; `plain_path=False`
    forces the csv module)."""
    (read,) = read_csv_parts(data, ctx, config, part_chars=None, plain_path=plain_path)
    return read


def read_csv_parts(
    data: bytes, ctx: FileContext, config: ChannelConfig, part_chars: int | None = PART_CHARS, plain_path: bool = True
) -> Iterator[FileRead]:
    """`read_csv` in parts of about `part_chars` characters of text (None: one part), cut between
    rows, in file order: together exactly `read_csv`'s rows and notes (a fuzz test holds them equal).
    At least one part; the file-level notes come with the first."""
    notes: list[str] = []
    try:
        text, note = decode(data)
    except UnicodeDecodeError as exc:
        yield FileRead(rows=[SourceRow(line=1, raw="", identity="", error=f"undecodable file: {exc.reason}")], notes=notes)
        return
    del data  # from here on the text is read (a part at a time), not the bytes
    if note:
        notes.append(note)
    if not text or text.isspace():
        notes.append("empty file")
        yield FileRead(rows=[], notes=notes)
        return

    plain = plain_path and _is_plain(text, config.delimiter)
    # A plain file's header is its first line; any other is read by the csv module from the start.
    first_line = text[: text.find("\n") + 1] if plain and "\n" in text else text
    reader = csv.reader(io.StringIO(first_line, newline=""), delimiter=config.delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        yield FileRead(rows=[SourceRow(line=1, raw=text[:200], identity="", error=f"malformed CSV header: {exc}")], notes=notes)
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    canonical_of, refusal, first_is_data = _read_header(header, text, config, notes)
    if plain and refusal is None:
        yield from _plain_parts(text, header, canonical_of, config, notes, part_chars)
        return
    if first_line is not text:  # a plain file refused: its rows are read (and refused) by the csv module
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=config.delimiter, strict=True)
        next(reader)
    # A first row that is data is a row of the file: quarantined with the others (rows read = quarantined).
    first = [SourceRow(line=1, raw=raw_json(header), identity="", error=refusal)] if first_is_data else []
    yield from _module_parts(text, reader, header, canonical_of, config, notes, refusal, part_chars, first)


def _read_header(header: list[str], text: str, config: ChannelConfig,
                 notes: list[str]) -> tuple[list[str | None], str | None, bool]:
    """The canonical column of each header cell, why the file is refused (None: it is read) and
    whether its first row is data; notes the unknown columns and the refusal."""
    renamed = {export: canonical for canonical, export in config.columns.items()}
    canonical_of: list[str | None] = []
    unknown: list[str] = []
    for name in header:
        canonical = renamed.get(name) or (name.lower() if name.lower() in CANONICAL_CSV_COLUMNS else None)
        canonical_of.append(canonical)
        if canonical is None and name:
            unknown.append(name)
    refusal, first_is_data = _header_refusal(header, canonical_of)
    # Unknown names are listed only under a header that names a known column (else they may be cells).
    if unknown and refusal is None and any(canonical_of):
        notes.append("unknown columns ignored: " + ", ".join(_DIGIT_RUN.sub("#", n) for n in sorted(unknown)[:10]))
    present = {c for c in canonical_of if c}
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in present and c not in config.defaults]
    if not any(c in present for c in IDENTIFIER_CSV_COLUMNS):
        missing.insert(0, IDENTIFIER_CSV_COLUMNS[0])
    if missing and refusal is None:
        refusal = f"file refused: missing required column {missing[0]!r}"
        guessed = _guess_delimiter(text.splitlines()[0], config.delimiter)
        if guessed:
            refusal += f" (the header looks {guessed!r}-delimited)"
        elif not any(canonical_of):  # no column name at all: the first row is taken for data, not skipped
            refusal, first_is_data = "file refused: the first row names no known column (a header is required)", True
    if refusal:
        notes.append(refusal)
    return canonical_of, refusal, first_is_data


def _module_parts(text: str, reader, header: list[str], canonical_of: list[str | None], config: ChannelConfig,
                  notes: list[str], refusal: str | None, part_chars: int | None,
                  first: list[SourceRow] | None = None) -> Iterator[FileRead]:
    """The rows after the header (after `first`, rows already read), as the csv module reads them, in parts."""
    rows: list[SourceRow] = list(first or [])
    records: list[list[str]] = []
    lines: list[int] = []
    size = 0
    any_row = False
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rest = text.splitlines()[start - 1 :]
            rows.append(
                SourceRow(line=start, raw="\n".join(rest)[:MAX_FIELD_CHARS], identity="", error=f"malformed CSV from this line on: {exc}")
            )
            notes.append(f"malformed CSV at line {start}: rest of the file quarantined as one row")
            break
        previous_end = reader.line_num
        if not record or all(not v.strip() for v in record):
            continue  # blank lines are not rows
        size += sum(map(len, record)) + len(record)
        rejected = _rejected(start, header, record, refusal)
        if rejected is not None:
            rows.append(rejected)
        else:
            records.append(record)
            lines.append(start)
        if part_chars is not None and size >= part_chars:
            yield FileRead(rows=rows, notes=notes, table=CsvTable.of_records(header, canonical_of, config, records, lines))
            rows, records, lines, size, notes, any_row = [], [], [], 0, [], True
    if not any_row and not rows and not records and not refusal:
        notes.append("header only")
    yield FileRead(rows=rows, notes=notes, table=CsvTable.of_records(header, canonical_of, config, records, lines))


# The characters Python's str.strip() removes (more than Rust's notion of whitespace);
# a test checks this against str.isspace over all of Unicode.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _rejected(line: int, header: list[str], record: list[str], refusal: str | None = None) -> SourceRow | None:
    """The quarantine row of a record that cannot be read (refused file, ragged row, over-long field), else None."""
    if refusal or len(record) != len(header):
        keyed = len(record) == len(header) and len(set(header)) == len(header)  # a dict would drop a cell
        raw = raw_json(dict(zip(header, record)) if keyed else record)
        reason = refusal or f"ragged row: {len(record)} fields, header has {len(header)}"
        return SourceRow(line=line, raw=raw, identity="", error=reason)
    if max(map(len, record), default=0) > MAX_FIELD_CHARS:
        raw = raw_json(dict(zip(header, record)))[:MAX_FIELD_CHARS]
        return SourceRow(line=line, raw=raw, identity="", error=f"field longer than {MAX_FIELD_CHARS} characters")
    return None


def _is_plain(text: str, delimiter: str) -> bool:
    """No quoting, no NUL, line ends only \n or \r\n: each line is one row and
    each row is its line split at the delimiter, exactly as the csv module reads it."""
    return (
        delimiter not in ("\r", "\n", '"')
        and '"' not in text
        and "\x00" not in text
        and text.count("\r") == text.count("\r\n")
    )


def _plain_parts(text: str, header: list[str], canonical_of: list[str | None], config: ChannelConfig,
                 notes: list[str], part_chars: int | None) -> Iterator[FileRead]:
    """A plain file's rows in parts cut after a line end (line numbers counted across them)."""
    text = text.replace("\r\n", "\n")
    start = text.find("\n") + 1 or len(text)  # the header is line 1
    line = 2
    any_row = False
    while True:
        end = len(text) if part_chars is None else text.find("\n", start + part_chars) + 1 or len(text)
        body = text[start:end]
        read = _read_plain(body, line, header, canonical_of, config, notes)
        any_row = any_row or read.row_count > 0
        if end >= len(text):
            if not any_row:
                read.notes.append("header only")
            yield read
            return
        yield read
        start, line, notes = end, line + body.count("\n"), []


def _read_plain(body: str, first_line: int, header: list[str], canonical_of: list[str | None], config: ChannelConfig,
                notes: list[str]) -> FileRead:
    """Rows of a plain file's lines (`body`, its first line numbered `first_line`), column-wise: no
    Python object per cell."""
    delimiter = config.delimiter
    lines = pl.Series("text", [body]).str.split("\n").explode()
    frame = pl.DataFrame({"text": lines}).with_row_index("line", offset=first_line)
    # Blank lines (and rows of blank cells) are not rows.
    frame = frame.filter(pl.col("text").str.replace_all(delimiter, "", literal=True).str.strip_chars(PY_WHITESPACE) != "")
    frame = frame.with_columns(
        pl.col("line").cast(pl.Int64),
        cells=pl.col("text").str.split(delimiter),
    )
    # Only a ragged line, or one long enough to hold an over-long cell, can be rejected.
    suspects = frame.filter(
        (pl.col("cells").list.len() != len(header)) | (pl.col("text").str.len_chars() > MAX_FIELD_CHARS)
    )
    rows: list[SourceRow] = []
    for line, line_text in suspects.select("line", "text").iter_rows():
        rejected = _rejected(line, header, line_text.split(delimiter))
        if rejected is not None:
            rows.append(rejected)
    good = frame.filter(~pl.col("line").is_in([r.line for r in rows]))
    cells = good.select(
        *[pl.col("cells").list.get(i).alias(f"c{i}") for i in range(len(header))],
        "line",
    )
    return FileRead(rows=rows, notes=notes, table=CsvTable(header, canonical_of, config, cells))


class CsvTable:
    """The well-formed rows of a CSV file, column by column (cells as read): the format's
    `ColumnTable`. `build` builds the ordinary rows from `cells`; `source_rows` gives the same
    rows one by one, as the row path reads them."""

    def __init__(self, header: list[str], canonical_of: list[str | None], config: ChannelConfig, cells: pl.DataFrame):
        self.header = header
        self.canonical_of = canonical_of
        self.config = config
        self.cells = cells  # columns c0..cN in header order, and line

    @classmethod
    def of_records(cls, header, canonical_of, config, records: list[list[str]], lines: list[int]) -> "CsvTable":
        columns = list(zip(*records)) if records else [() for _ in header]
        cells = pl.DataFrame(
            {**{f"c{i}": pl.Series(column, dtype=pl.Utf8) for i, column in enumerate(columns)}, "line": pl.Series(lines, dtype=pl.Int64)}
        )
        return cls(header, canonical_of, config, cells)

    @property
    def height(self) -> int:
        return self.cells.height

    def row_order(self, row: SourceRow) -> tuple[int, str]:
        return (row.line, row.pointer or "")

    def in_file_order(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(["source_line", "source_pointer"], maintain_order=True)

    def phone_pairs(self, ctx: FileContext) -> set[Pair]:
        frame = _canonical(self, ctx).select("phone", "hint").unique().collect()
        return {(raw, hint or None) for raw, hint in frame.iter_rows()}

    def build(self, ctx: FileContext, phones: PhoneBook, purposes: list[str], ingested_at: datetime,
              run_id: str) -> tuple[BuiltBatch, list[int]]:
        """Events of the ordinary rows, and the positions of the rows left to `build_events`."""
        frame = _classified(self, ctx, phones, purposes)
        slow = frame.filter(~pl.col("ordinary")).get_column("position").sort().to_list()
        return batch(events=_events(frame.filter(pl.col("ordinary")), ctx, ingested_at, run_id)), slow

    def column_of(self, canonical: str) -> int | None:
        """The header position a canonical field is read from (the last one, if several map onto it)."""
        found = None
        for i, name in enumerate(self.canonical_of):
            if name == canonical:
                found = i
        return found

    def identity_order(self) -> list[int]:
        # Content, not position, identifies a row: cells joined in column-name order, so
        # re-ordered or renamed exports add nothing.
        return sorted(range(len(self.header)), key=lambda i: self.header[i])

    def source_rows(self, positions: list[int] | None = None) -> list[SourceRow]:
        """The rows (all, or those at `positions`) as `SourceRow`s."""
        frame = self.cells if positions is None else self.cells[positions]
        n = len(self.header)
        order = self.identity_order()
        names = [self.header[i] + "\x1f" for i in order]
        columns = [(i, canonical, self.config.values.get(canonical)) for i, canonical in enumerate(self.canonical_of) if canonical]
        out = []
        for values in frame.iter_rows():
            record, line = list(values[:n]), values[n]
            fields: dict[str, str | None] = {}
            for i, canonical, mapped in columns:
                value = record[i].strip()
                if mapped and value in mapped:
                    value = mapped[value]
                fields[canonical] = value
            for canonical, default in self.config.defaults.items():
                if not fields.get(canonical):
                    fields[canonical] = default
            identity = "\x1e".join(name + record[i] for name, i in zip(names, order))
            out.append(SourceRow(line=line, raw=None, identity=identity, fields=fields, header=self.header, record=record))
        return out


_ASCII = r"^[\x00-\x7f]*$"


def _strip(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars(PY_WHITESPACE)


def _canonical(table: CsvTable, ctx: FileContext, with_identity: bool = False) -> pl.LazyFrame:
    """The canonical fields as `CsvTable.source_rows` reads them: stripped, mapped, defaulted; ""
    where the file has no such column (the row path's None). With `with_identity`, also `id_text`:
    the row's identity, as `events.event_id` takes it. Lazy, so a caller that needs two columns
    computes only those."""
    exprs = []
    if with_identity:
        # The row's content in column-name order, as `CsvTable.source_rows` joins it.
        cells = [pl.concat_str([pl.lit(table.header[i] + "\x1f"), pl.col(f"c{i}")]) for i in table.identity_order()]
        exprs.append(pl.concat_str(cells, separator="\x1e").alias("id_text"))
    for canonical in CANONICAL_CSV_COLUMNS:
        position = table.column_of(canonical)
        value = pl.lit("") if position is None else _strip(pl.col(f"c{position}"))
        mapped = table.config.values.get(canonical)
        if mapped and position is not None:
            value = value.replace(mapped)
        default = table.config.defaults.get(canonical)
        if default:
            value = pl.when(value == "").then(pl.lit(default)).otherwise(value)
        exprs.append(value.alias(canonical))
    frame = table.cells.lazy().select("line", *exprs)
    # What `phone_key` computes: the stripped country cell, or the channel's default region, upper-cased.
    country = _strip(pl.col("country"))
    hint = pl.when(country != "").then(country).otherwise(pl.lit(ctx.default_region or "")).str.to_uppercase()
    return frame.with_columns(hint=hint)


def _classified(table: CsvTable, ctx: FileContext, phones: PhoneBook, purposes: list[str]) -> pl.DataFrame:
    """Each row's canonical fields, number and parsed values (each distinct value parsed once), its
    `position` in the table and whether it is `ordinary` (built here; else left to the row path)."""
    tz = ZoneInfo(ctx.timezone)
    frame = _canonical(table, ctx, with_identity=True).collect().with_row_index("position")
    frame = frame.with_columns(event_type_lower=_strip(pl.col("event_type")).str.to_lowercase())
    frame = join_phones(frame, phones)
    frame = join_parsed(frame, "occurred_at", lambda v: parse_timestamp(v, tz, ctx.date_format), pl.Datetime("us"))
    frame = join_parsed(frame, "acquisition_source", _acquisition_source, pl.Utf8)
    frame = join_parsed(frame, "purposes", lambda v: parse_purposes(v, purposes), pl.List(pl.Utf8))
    frame = join_parsed(frame, "checkbox_pre_ticked", parse_bool, pl.Boolean)
    frame = join_parsed(frame, "bundled_with_terms", parse_bool, pl.Boolean)
    ordinary = (
        pl.col("event_type_lower").is_in([t for t in EVENT_TYPES if t != "number_change"])
        & pl.col("phone_e164").is_not_null()
        # rows naming a WhatsApp user ID (validated, linked) are left to Python
        & (pl.col("whatsapp_user_id") == "")
        & pl.col("occurred_at__ok")
        & pl.col("acquisition_source__ok")
        & pl.col("purposes__ok")
        & pl.col("checkbox_pre_ticked__ok")
        & pl.col("bundled_with_terms__ok")
        # case mapping of non-ASCII text is left to Python
        & pl.col("event_type").str.contains(_ASCII)
        & pl.col("consent_method").str.contains(_ASCII)
        & pl.col("hint").str.contains(_ASCII)
    )
    return frame.with_columns(ordinary=ordinary.fill_null(False))


def _events(good: pl.DataFrame, ctx: FileContext, ingested_at: datetime, run_id: str) -> pl.DataFrame:
    """The event frame of the ordinary rows (`_classified`), as `build_events` would write it."""
    def text_or_null(column: str) -> pl.Expr:
        value = _strip(pl.col(column))
        return pl.when(value != "").then(value).otherwise(None)

    events = good.with_columns(event_ids(ctx, good.get_column("id_text").to_list())).select(event_columns(
        ctx, ingested_at, run_id,
        event_id=pl.col("event_id"),
        event_type=pl.col("event_type_lower"),
        phone_raw=pl.col("phone"),
        country_hint=pl.when(pl.col("hint") != "").then(pl.col("hint")).otherwise(None),
        phone_e164=pl.col("phone_e164"),
        phone_region=pl.col("phone_region"),
        phone_type=pl.col("phone_type"),
        purposes=pl.col("purposes__value"),
        occurred_at=pl.col("occurred_at__value"),
        consent_method=text_or_null("consent_method").str.to_lowercase(),
        notice_version=text_or_null("notice_version"),
        checkbox_pre_ticked=pl.col("checkbox_pre_ticked__value"),
        bundled_with_terms=pl.col("bundled_with_terms__value"),
        acquisition_source=pl.col("acquisition_source__value"),
        evidence_ref=text_or_null("evidence_ref"),
        source_line=pl.col("line"),
    ))
    return events.cast(EVENT_SCHEMA)
