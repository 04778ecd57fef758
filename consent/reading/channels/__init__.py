"""Channel adapters: one module per input format, all producing `SourceRow`s.

A channel is a folder of the exports directory; the file's suffix picks the
adapter. Adding a format means adding one module and one line to `ADAPTERS`.
An adapter yields a file's reads in parts, in file order (memory holds one
part of a large file); an adapter that reads a file whole yields one read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from consent.reading.channels.base import FileRead
from consent.reading.channels import csv_export, whatsapp_webhook
from consent.domain.events import FileContext
from consent.domain.policy import ChannelConfig, Policy

Adapter = Callable[[bytes, FileContext, ChannelConfig, Policy], Iterable[FileRead]]

# (Part sizes are read at each call, so a test can make every file many parts.)
ADAPTERS: dict[str, Adapter] = {
    ".csv": lambda data, ctx, config, policy: csv_export.read_csv_parts(data, ctx, config, csv_export.PART_CHARS),
    ".json": lambda data, ctx, config, policy: whatsapp_webhook.read_webhook_parts(
        data, ctx, policy, ".json", whatsapp_webhook.PART_PAYLOADS),
    ".jsonl": lambda data, ctx, config, policy: whatsapp_webhook.read_webhook_parts(
        data, ctx, policy, ".jsonl", whatsapp_webhook.PART_PAYLOADS),
}


def adapter_for(path: Path) -> Adapter | None:
    return ADAPTERS.get(path.suffix.lower())


__all__ = ["ADAPTERS", "FileRead", "adapter_for"]
