"""Alerting: a failed run or a failed ERROR check writes the run summary to
`<warehouse folder>/alerts/` and calls a configurable hook command with the
summary as JSON on standard input. The summary holds counts, file names,
lines and check names: never a phone number.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from consent.domain.redact import redact_value


log = logging.getLogger(__name__)
HOOK_TIMEOUT_SECONDS = 60


def is_failed_error(evaluation) -> bool:
    """A check that did not pass with ERROR severity: it fails the run."""
    return not evaluation.passed and evaluation.severity.value == "ERROR"


def failed_checks(evaluations) -> list[dict]:
    """Failed ERROR-severity checks among Dagster asset check evaluations."""
    return [
        {
            "check": f"{e.asset_key.to_user_string()}.{e.check_name}",
            "metadata": {k: v.value for k, v in e.metadata.items()},
        }
        for e in evaluations
        if is_failed_error(e)
    ]


def raise_alert(summary: dict, warehouse_path: str, command: str | None) -> Path:
    """Write the summary under alerts/ and call the hook; never raises for a failing hook."""
    folder = Path(warehouse_path).resolve().parent / "alerts"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # Whatever text reached the summary (a reason, a note, check metadata), no number leaves in it.
    body = json.dumps(redact_value(json.loads(json.dumps(summary, default=str))), indent=2)
    path = _new_file(folder, f"{stamp}-{str(summary.get('run_id', 'run'))[:8]}")
    try:
        path.write_text(body, encoding="utf-8")
    except OSError:
        path.unlink(missing_ok=True)  # no empty alert left behind (a full disk): the caller says so
        raise
    if command:
        try:
            done = subprocess.run(
                shlex.split(command), input=body, text=True, capture_output=True, timeout=HOOK_TIMEOUT_SECONDS
            )
            if done.returncode != 0:
                log.warning("alert hook exited %s", done.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("alert hook could not run: %s", exc)
    return path


def _new_file(folder: Path, stem: str) -> Path:
    """A file name not used yet: an alert never overwrites another (two in one second are two files)."""
    for n in range(1, 1000):
        path = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            path.touch(exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"too many alerts named {stem} in {folder}")
