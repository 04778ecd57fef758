"""The process gives freed memory back (consent/memory.py): glibc's trim threshold set, a deployment's own kept."""

import os
import subprocess
import sys

PROBE = "import consent.memory as m; print(m.return_freed_memory())"


def _set(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_trim_threshold_is_set_on_linux():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    assert _set(env) == ("True" if sys.platform.startswith("linux") else "False")


def test_a_deployment_setting_is_kept():
    assert _set({**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"
