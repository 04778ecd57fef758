"""Memory a run frees goes back to the system.

A full run's publishing process reads the touched contacts' histories range by range into Polars
frames, sends them to the worker processes and writes what they decide; each range's memory is
freed once it is written. Both allocators involved kept freed memory mapped for reuse, so the
process's resident memory only grew while DuckDB, in the same process, filled up to its own limit:

- Polars allocates with jemalloc, which returns freed pages after a decay time (10 s by default);
  `_RJEM_MALLOC_CONF` (read once, when Polars' library makes its first allocation) makes the decay
  immediate. It is set here, before anything imports Polars (`consent` is imported first by the
  CLI and by the Dagster definitions); a value the deployment sets itself is kept.
- glibc's malloc (Python objects, pickled ranges) gives memory back to the system only above a
  trim threshold that grows with the largest block freed; it is fixed at 64 KiB.

Measured on the 5M-event benchmark: see README, "Performance" (the eighth part of issue 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
TRIM_THRESHOLD_BYTES = 64 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter number


def return_freed_memory() -> None:
    """Set both allocators to give freed memory back (call before Polars is imported)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to set
        pass
