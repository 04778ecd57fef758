"""Channel adapters: one module per input format, all producing `SourceRow`s.

A channel is a folder of the exports directory; the file's suffix picks the
adapter. Adding a format means adding one module and one line to `ADAPTERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from consent.channels.base import FileRead
from consent.channels.csv_export import read_csv
from consent.channels.whatsapp_webhook import read_webhooks
from consent.events import FileContext
from consent.policy import ChannelConfig, Policy

Adapter = Callable[[bytes, FileContext, ChannelConfig, Policy], FileRead]

ADAPTERS: dict[str, Adapter] = {
    ".csv": lambda data, ctx, config, policy: read_csv(data, ctx, config),
    ".json": lambda data, ctx, config, policy: read_webhooks(data, ctx, policy, ".json"),
    ".jsonl": lambda data, ctx, config, policy: read_webhooks(data, ctx, policy, ".jsonl"),
}


def adapter_for(path: Path) -> Adapter | None:
    return ADAPTERS.get(path.suffix.lower())


__all__ = ["ADAPTERS", "FileRead", "adapter_for"]
