"""Memory a run frees goes back to the system.

A full run's publishing process reads the touched contacts' histories range by range, sends each
to a worker process (pickled) and writes what comes back; every range's memory is freed once it is
written. glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to
32 MiB), so the next ranges' large buffers come from the heap instead, and freed heap memory goes
back to the system only from the top of the heap: the process's resident memory kept growing while
DuckDB, in the same process, filled up to its own limit. Setting the trim threshold explicitly
(64 KiB) turns that adjustment off: large blocks stay mmapped and are returned when freed.

Polars' own allocator (jemalloc, `_RJEM_MALLOC_CONF` decay 0) was measured too: no lower peak,
5-7% slower; not set. Measured on the benchmark: README, Performance (the eighth part of issue 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

TRIM_THRESHOLD_BYTES = 64 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter number


def return_freed_memory() -> bool:
    """Set glibc's trim threshold (Linux with glibc, unless the environment sets
    `MALLOC_TRIM_THRESHOLD_` itself); whether it was set."""
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to set
        return False
