"""The Dagster instance a `consent run` records itself in.

With `DAGSTER_HOME` set, the run goes to that instance (`DagsterInstance.get()`,
which reads `$DAGSTER_HOME/dagster.yaml`): the Dagster UI and daemon started
with the same `DAGSTER_HOME` show it on their Runs page and in the Catalog,
with its asset materialisations and checks. Without it, an ephemeral instance
that is gone when the command ends; `consent runs` keeps the history either way.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import dagster as dg

from consent.domain.policy import ConfigError

EPHEMERAL = ("dagster: DAGSTER_HOME is not set, so this run went to an ephemeral Dagster instance and is not in "
             "the Dagster UI; `consent runs` keeps every run (export DAGSTER_HOME=<folder of dagster.yaml> to record "
             "runs where the UI shows them)")


@contextmanager
def run_instance() -> Iterator[tuple[dg.DagsterInstance, str]]:
    """The instance to execute a run in, and the line that says where the run went.
    A DAGSTER_HOME that is not an absolute path to a folder, or whose dagster.yaml is not valid,
    is a configuration error (one line, exit 2), found before the run starts."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance, EPHEMERAL
        return
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterError as exc:
        raise ConfigError(f"DAGSTER_HOME: {_first_line(exc)}") from None
    with instance:
        yield instance, f"dagster: run recorded in the Dagster instance at DAGSTER_HOME={home} (UI: Runs, Catalog)"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
