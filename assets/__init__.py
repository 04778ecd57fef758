"""Thin Dagster assets by layer: `staging` reads exports, `warehouse` publishes.

Each asset reads, calls the plain-Python domain in `consent/`, writes, and
reports metadata. Checks live in `checks.py`.
"""

import dagster as dg

from consent.domain.redact import redact, redact_value


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
