"""docs/tables.md, written from the data dictionary: the published tables and the marts.

`python -m consent.reports.dictionary` writes it (`--check`: exit 1 when the file differs from
what it would write). The texts are those the warehouse carries as comments and the Dagster
assets as their column schema (consent/domain/tables.yml, consent/marts/<name>.yml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consent import marts
from consent.domain.schema import TABLES
from consent.storage.dictionary import TableDoc, published

TEMPLATE = Path(__file__).with_name("templates") / "tables.md"
DOC = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
REBUILT = {
    "whole": "always rebuilt whole",
    "delete_insert": "the rows where `{rows}`, deleted and built again",
    "by_difference": "by difference: the rows where `{rows}`, from those it held where `{before}` and the changes",
}


def render() -> str:
    """The page, as `python -m consent.reports.dictionary` writes it."""
    tables = "\n\n".join(_published_section(doc) for doc in published().values())
    mart_sections = "\n\n".join(_mart_section(spec) for spec in marts.SPECS.values())
    page = TEMPLATE.read_text(encoding="utf-8")
    return page.replace("{{ published }}", tables).replace("{{ marts }}", mart_sections)


def _published_section(doc: TableDoc) -> str:
    table = next((t for t in TABLES if t.name == doc.name), None)
    not_null = set(table.not_null) if table else {"version", "description", "applied_at"}
    facts = [f"Primary key: {_names(table.primary_key)}." if table and table.primary_key else ""]
    return _section(doc, lambda c: c.data_type + (" NOT NULL" if c.name in not_null else ""), facts)


def _mart_section(spec: marts.Mart) -> str:
    doc = spec.doc
    rebuilt = REBUILT[spec.strategy].format(rows=spec.rows, before=spec.before)
    facts = [f"Grain: {doc.grain}. Key: {_names(doc.keys)}.", f"Rebuilt after an incremental run: {rebuilt}."]
    return _section(doc, lambda c: c.data_type, facts)


def _section(doc: TableDoc, type_of, facts: list[str]) -> str:
    rows = [f"| `{c.name}` | {type_of(c)} | {_cell(c.description)} |" for c in doc.columns]
    table = "\n".join(["| column | type | meaning |", "|---|---|---|", *rows])
    return "\n\n".join([f"### `{doc.name}`", doc.description, *(f for f in facts if f), table])


def _names(columns: tuple[str, ...]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consent.reports.dictionary", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC, help=f"the file to write (default: {DOC})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is not up to date")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != page:
            print(f"{args.out} is not up to date: run python -m consent.reports.dictionary", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
