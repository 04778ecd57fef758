"""Progress of long steps: Dagster log lines, and a live line in the CLI.

Assets hand `ProgressReporter(context.log)` to the domain code as its
`progress(step, done, total)` callback. The CLI registers a printer with
`set_console`; the Dagster UI sees the same lines in the run's logs.
"""

from __future__ import annotations

import time
from typing import Callable

_console: Callable[[str], None] | None = None


def set_console(printer: Callable[[str], None] | None) -> None:
    global _console
    _console = printer


class ProgressReporter:
    def __init__(self, log, every_seconds: float = 2.0):
        self.log = log
        self.every = every_seconds
        self.started: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(step, now)
        if done < total and now - self.last.get(step, 0.0) < self.every:
            return
        self.last[step] = now
        line = f"{step}: {done:,}/{total:,}"
        if now > start:
            line += f" ({done / (now - start):,.0f}/s)"
        self.log.info(line)
        if _console is not None:
            _console(line)
