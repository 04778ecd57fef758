"""What `consent run` shows while it works: every step by name with its elapsed time, and the
counts of long steps (files read, events built, numbers normalised, contacts reconciled, marts
built) with an estimate of the time left.

On a terminal: a live display (rich) on standard error. Otherwise (a log file, a pipe, cron):
plain lines, in the order things happened, each naming its step. Standard output stays the
run's report either way.
"""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from consent.run.progress import progress_line, seconds_left, set_console

# A counted step says how far it is at most this often in plain lines (and always when done).
PLAIN_EVERY_SECONDS = 2.0


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {int(value % 60):02d} s"


class PlainDisplay:
    """One line per counted stretch of work (throttled) and one per step that ends, in order."""

    def __init__(self, out: TextIO, every_seconds: float = PLAIN_EVERY_SECONDS):
        self.out, self.every = out, every_seconds
        self.step, self.step_started_at = "", time.monotonic()
        self.counters: dict[str, float] = {}
        self.said: dict[str, float] = {}
        self.run_started_at, self.steps = time.monotonic(), 0

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def step_started(self, step: str) -> None:
        self.step, self.step_started_at = step, time.monotonic()
        self.counters, self.said = {}, {}

    def advance(self, counter: str, done: int, total: int) -> None:
        now = time.monotonic()
        started = self.counters.setdefault(counter, now)
        if done < total and now - self.said.get(counter, 0.0) < self.every:
            return
        self.said[counter] = now
        line = f"{self.step}: {progress_line(counter, done, total, now - started)}, {_seconds(now - self.step_started_at)}"
        left = seconds_left(done, total, now - started)
        self._say(line + (f", about {_seconds(left)} left" if left is not None else ""))

    def step_finished(self, step: str, outcome: str) -> None:
        """`step`: the step's name (a check's: `check NAME of ASSET`); `outcome`: done, passed, failed (...), FAILED."""
        self.steps += 1
        self._say(f"{step}: {outcome} in {_seconds(time.monotonic() - self.step_started_at)}")

    def start(self) -> None:
        self.run_started_at = time.monotonic()

    def stop(self) -> None:
        self._say(f"run: {self.steps} steps in {_seconds(time.monotonic() - self.run_started_at)}")


class _OnCounters(ProgressColumn):
    """A column shown on a count's line only (a step's own line has no bar and no estimate)."""

    def __init__(self, column: ProgressColumn):
        super().__init__()
        self.column = column

    def render(self, task: Task):
        return self.column.render(task) if task.fields.get("counter") else Text("")


class _Elapsed(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(_seconds(task.elapsed or 0.0), style="progress.elapsed")


class _Left(ProgressColumn):
    def render(self, task: Task) -> Text:
        left = task.time_remaining
        return Text(f"about {_seconds(left)} left" if left and not task.finished else "", style="progress.remaining")


class LiveDisplay:
    """A rich progress display: a line per step (a spinner, then its outcome and time) and, under a
    step while it counts, a bar with the count and the time left."""

    def __init__(self, out: TextIO, force_terminal: bool | None = None):
        self.progress = Progress(
            SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), _OnCounters(BarColumn(bar_width=30)),
            TextColumn("{task.fields[count]}"), _Elapsed(), _OnCounters(_Left()),
            console=Console(file=out, force_terminal=force_terminal), refresh_per_second=8, redirect_stdout=False,
        )
        self.step_task = None
        self.counter_tasks: dict[str, int] = {}

    def step_started(self, step: str) -> None:
        self.step_task = self.progress.add_task(step, total=None, count="")

    def advance(self, counter: str, done: int, total: int) -> None:
        task = self.counter_tasks.get(counter)
        if task is None:
            task = self.counter_tasks[counter] = self.progress.add_task(f"  {counter}", total=total, count="", counter=True)
        self.progress.update(task, completed=done, total=total, count=f"{done:,}/{total:,}")

    def step_finished(self, step: str, outcome: str) -> None:
        for task in self.counter_tasks.values():
            self.progress.remove_task(task)  # the step's own line keeps its time; its counts are done
        self.counter_tasks = {}
        mark = "[red]" if outcome == "FAILED" or "ERROR" in outcome else "[yellow]" if "failed" in outcome else "[green]"
        if self.step_task is None:  # a second line for the same step: a check it ran on the way
            self.step_task = self.progress.add_task(step, total=None, count="")
        self.progress.update(self.step_task, description=f"{step}: {mark}{outcome}[/]", total=1, completed=1)
        self.progress.stop_task(self.step_task)
        self.step_task = None

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()


class StepListener:
    """Turns a run's Dagster events into step starts and ends, with each check's outcome."""

    def __init__(self, display):
        self.display = display
        self.checks: dict[str, list[tuple[str, str]]] = {}
        self.materialised: set[str] = set()

    def __call__(self, entry) -> None:
        event = entry.dagster_event
        if event is None or not event.step_key:
            return
        kind, step = event.event_type_value, event.step_key
        if kind == "STEP_START":
            self.display.step_started(step)
        elif kind == "ASSET_MATERIALIZATION":
            self.materialised.add(step)
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            label = f"check {check.check_name} of {check.asset_key.to_user_string()}"
            self.checks.setdefault(step, []).append((label, "passed" if check.passed else f"failed ({check.severity.value})"))
        elif kind == "STEP_SUCCESS":
            self._finished(step)
        elif kind == "STEP_FAILURE":
            self.display.step_finished(step, "FAILED")

    def _finished(self, step: str) -> None:
        """A check step ends with its check's line; a step that built assets (and checked some of them
        on the way, as the marts step does) ends with its own line, then its checks' lines."""
        checks = self.checks.pop(step, [])
        if step in self.materialised or not checks:
            self.display.step_finished(step, "done")
        for label, outcome in checks:
            self.display.step_finished(label, outcome)


@contextmanager
def step_progress(instance, out: TextIO | None = None) -> Iterator[str]:
    """The run id to launch the run with; while it runs, its steps and counts are shown on `out`
    (standard error): live on a terminal, plain lines otherwise."""
    out = out or sys.stderr
    display = LiveDisplay(out) if out.isatty() else PlainDisplay(out)
    run_id = str(uuid.uuid4())
    instance.add_event_listener(run_id, StepListener(display))
    set_console(display)
    display.start()
    try:
        yield run_id
    finally:
        set_console(None)
        display.stop()
