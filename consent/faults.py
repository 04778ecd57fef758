"""Named crash points for the crash-safety tests.

`CONSENT_CRASH_AT=<point>` makes the process kill itself (SIGKILL, no cleanup)
when it reaches that point, so tests can prove that a run dying anywhere
leaves the warehouse as before or as after the run, never half-written.
Unset (always, outside those tests), a crash point does nothing.
"""

from __future__ import annotations

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
