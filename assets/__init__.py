"""Thin Dagster assets by layer: `staging` reads exports, `warehouse` publishes.

Each asset reads, calls the plain-Python domain in `consent/`, writes, and
reports metadata. Checks live in `checks.py`.
"""

import dagster as dg

from consent.domain.redact import redact, redact_value
from consent.storage.dictionary import TableDoc, published


def column_schema(doc: TableDoc) -> dict:
    """The table's columns as the Dagster UI shows them, from the data dictionary."""
    columns = [dg.TableColumn(c.name, c.data_type, description=c.description) for c in doc.columns]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def table_of(name: str) -> dict:
    """A published table's description and column schema (consent/domain/tables.yml)."""
    doc = published()[name]
    return {"description": doc.description, "metadata": column_schema(doc)}


def row_count(rows: int) -> dict:
    return {"dagster/row_count": dg.MetadataValue.int(int(rows))}


def redacted(metadata: dict) -> dict:
    """Metadata as the UI and the event log will show it: every text in it (text, Markdown, JSON,
    plain strings) with numbers and BSUIDs masked; counts, floats and paths as they are."""
    out = {}
    for key, value in metadata.items():
        if isinstance(value, dg.TextMetadataValue):
            value = dg.MetadataValue.text(redact(value.value))
        elif isinstance(value, dg.MarkdownMetadataValue):
            value = dg.MetadataValue.md(redact(value.value))
        elif isinstance(value, dg.JsonMetadataValue):
            value = dg.MetadataValue.json(redact_value(value.value))
        elif isinstance(value, (str, dict, list)):
            value = redact_value(value)
        out[redact(key)] = value
    return out
