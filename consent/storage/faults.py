"""Named crash points for the crash-safety tests.

`CONSENT_CRASH_AT=<point>` makes the process kill itself (SIGKILL, no cleanup)
when it reaches that point, so tests can prove that a run dying anywhere
leaves the warehouse as before or as after the run, never half-written.
Unset (always, outside those tests), a crash point does nothing.

`is_disk_full` tells a full disk from other errors, whichever layer raised it.
"""

from __future__ import annotations

import errno
import os
import signal

POINTS = (
    "after_reading",
    "after_normalising",
    "after_staging",
    "publish_after_ledger",
    "publish_after_status",
    "after_publish",
)


def crash_point(name: str) -> None:
    if os.environ.get("CONSENT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# How a full disk shows: OSError errno 28 (Python), DuckDB's IOException text, GX's wrapped errors.
DISK_FULL_MARKERS = ("no space left on device", "[errno 28]", "enospc", "disk quota exceeded")


def is_disk_full(error) -> bool:
    """True when `error` (an exception, its causes, or an error's text) says the disk is full."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(error).lower() for marker in DISK_FULL_MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return isinstance(error, str) and any(marker in error.lower() for marker in DISK_FULL_MARKERS)
