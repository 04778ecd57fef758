"""CSV cells that a spreadsheet opens as text, never as a formula.

A value that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as
a formula by Excel, LibreOffice and Google Sheets (`=HYPERLINK(...)` from a web
form's `evidence_ref`, say). As OWASP's CSV-injection guidance recommends, such
a cell is prefixed with a single quote and written quoted. Numbers are left as
they are: an E.164 number (`+4915112345678`) and a negative number (`-3.5`)
start with `+`/`-` but are no formula.

Every CSV the CLI writes (`sql`, `audit`, `export`, `check`) goes through
`write_csv` (or `safe_csv_text` for text another writer formatted).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Iterable, TextIO

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A plain number, signed or not (E.164, negative amounts, decimals, exponents): no formula.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def is_formula(text: str) -> bool:
    """True when a spreadsheet would evaluate `text` rather than show it."""
    if not text or not text.startswith(FORMULA_START):
        return False
    return not (text[0] in "+-" and _NUMBER.fullmatch(text))


def safe_cell(value):
    """`value` as a spreadsheet shows it: a would-be formula gets a leading single quote."""
    return "'" + value if isinstance(value, str) and is_formula(value) else value


def _field(value, alone: bool) -> str:
    """One cell as the csv module's QUOTE_MINIMAL writes it; a would-be formula escaped and always quoted."""
    text = "" if value is None else (repr(value) if isinstance(value, float) else str(value))
    if is_formula(text):
        return '"' + ("'" + text).replace('"', '""') + '"'
    if _NEEDS_QUOTES.search(text) or (alone and text == ""):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(out: TextIO, columns: Iterable[str] | None, rows: Iterable[Iterable], lineterminator: str = "\r\n") -> None:
    """Header (if any) and rows as CSV, every cell safe to open in a spreadsheet."""
    if columns is not None:
        rows = [list(columns), *rows]
    for row in rows:
        row = list(row)
        out.write(",".join(_field(v, len(row) == 1) for v in row) + lineterminator)


def safe_csv_text(text: str, lineterminator: str = "\n") -> str:
    """CSV text another writer formatted (Polars), with every would-be formula escaped."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not any(is_formula(cell) for row in rows for cell in row):
        return text  # nothing to escape: the writer's bytes, unchanged
    out = io.StringIO()
    write_csv(out, None, rows, lineterminator)
    return out.getvalue()


__all__ = ["FORMULA_START", "is_formula", "safe_cell", "safe_csv_text", "write_csv"]
