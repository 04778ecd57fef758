"""Memory a run frees goes back to the system.

A full run's publishing process reads the touched contacts' histories range by range into Polars
frames, sends them to the worker processes and writes what they decide; each range's memory is
freed once it is written. Polars allocates with jemalloc, which keeps freed pages mapped for reuse
until a decay time has passed (Polars sets 0.5 s dirty, 1 s muzzy), so the process's resident
memory stayed higher while DuckDB, in the same process, filled up to its own limit.
`_RJEM_MALLOC_CONF` (read when Polars loads its library; Polars puts its defaults first and
jemalloc takes an option's last value) makes the decay immediate. It is set here, before anything
imports Polars (`consent` is imported first by the CLI and by the Dagster definitions); a value the
deployment sets itself is kept as it is.

glibc's trim threshold (64 KiB instead of its dynamic default) was measured too and saved nothing
(README, Performance, the eighth part of issue 16); it is not set.
"""

from __future__ import annotations

import os

JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"


def return_freed_memory() -> None:
    """Make Polars' allocator give freed memory back at once (call before Polars is imported)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
