"""The process gives freed memory back (consent/memory.py): set before Polars loads, a deployment's own value kept."""

import os
import subprocess
import sys

from consent.memory import JEMALLOC_CONF

PROBE = "import pipelines.cli, os, polars; print(os.environ.get('_RJEM_MALLOC_CONF', ''))"


def _conf(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_polars_allocator_returns_freed_memory_at_once():
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    # Polars puts its own defaults first; jemalloc takes the last value of an option: ours.
    assert _conf(env).endswith(JEMALLOC_CONF)


def test_a_deployment_allocator_setting_is_kept():
    env = {**os.environ, "_RJEM_MALLOC_CONF": "narenas:2"}
    conf = _conf(env)
    assert conf.endswith("narenas:2") and JEMALLOC_CONF not in conf
