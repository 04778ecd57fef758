"""Progress of long steps: Dagster log lines, and a live display in the CLI.

Assets hand `ProgressReporter(context.log)` to the domain code as its
`progress(step, done, total)` callback. The CLI registers a console with
`set_console` (cli/progress.py: a live display on a terminal, plain lines
otherwise); the Dagster UI sees the same counts in the run's logs.
"""

from __future__ import annotations

import time
from typing import Protocol


class Console(Protocol):
    def advance(self, counter: str, done: int, total: int) -> None:
        """`done` of `total` items of `counter` (e.g. "reading files") are through; called on every count."""


_console: Console | None = None


def set_console(console: Console | None) -> None:
    global _console
    _console = console


def progress_line(counter: str, done: int, total: int, elapsed: float) -> str:
    """`reading files: 3/5 (183/s)`: the count, and the rate once time has passed."""
    line = f"{counter}: {done:,}/{total:,}"
    if elapsed > 0:
        line += f" ({done / elapsed:,.0f}/s)"
    return line


def seconds_left(done: int, total: int, elapsed: float) -> float | None:
    """At the rate so far, the seconds until `total`; None before the first item is through."""
    if done <= 0 or elapsed <= 0 or done >= total:
        return None
    return (total - done) * elapsed / done


class ProgressReporter:
    def __init__(self, log, every_seconds: float = 2.0):
        self.log = log
        self.every = every_seconds
        self.started: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(step, now)
        if _console is not None:
            _console.advance(step, done, total)
        if done < total and now - self.last.get(step, 0.0) < self.every:
            return
        self.last[step] = now
        self.log.info(progress_line(step, done, total, now - start))
