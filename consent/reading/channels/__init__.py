"""Channel adapters: one module per file format, one line per format in `FORMATS`.

A channel is a folder of the exports directory; a file's suffix picks the format whose
`SUFFIXES` hold it. An adapter (the contract: `base.Adapter`) yields a file's reads in parts, in
file order (memory holds one part of a large file); one that reads a file whole yields one read.
Nothing outside this package names a format: adding one is a module here and a line below
(docs/adding-a-format.md).
"""

from __future__ import annotations

from pathlib import Path

from consent.reading.channels import csv_export, whatsapp_webhook
from consent.reading.channels.base import Adapter, FileRead, WholeFile

# name -> the module that reads it (looked up at each call, so a test can register a format).
FORMATS: dict[str, Adapter] = {
    "csv_export": csv_export,
    "whatsapp_webhook": whatsapp_webhook,
}


def adapter_for(path: Path) -> Adapter | None:
    """The format that reads `path` (by its suffix, any case), or None: the file is not read."""
    suffix = path.suffix.lower()
    for adapter in FORMATS.values():
        if suffix in adapter.SUFFIXES:
            return adapter
    return None


__all__ = ["FORMATS", "Adapter", "FileRead", "WholeFile", "adapter_for"]
