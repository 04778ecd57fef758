"""Seconds per step of a full run, two versions side by side, in one run.

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/steps.py --baseline /tmp/baseline --sizes 1000000 5000000

For each N (exports of bench/benchmark.py, bench/data/events_N) and each version (the baseline
checkout, then this one), a full run on a fresh warehouse, in a fresh process with this `.venv`'s
Python (the version's modules imported from its own folder): `consent_job` executed in process,
as `consent run` executes it, in an ephemeral Dagster instance. It prints a table of seconds per
Dagster step (from the instance's step stats), the run's own finer timings of its first two steps
(`runs.step_seconds`: read, normalise, build, ledger, reconcile), and the whole process's wall
time. Both versions read the same files at the same clock with the same salt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
AS_OF = "2026-11-26T00:00:00Z"

CHILD = r"""
import json, sys
import dagster as dg
import duckdb
from pipelines.definitions import defs

warehouse = sys.argv[1]
config = {"resources": {"settings": {"config": {"as_of": sys.argv[2]}}},
          "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
with dg.DagsterInstance.ephemeral() as instance:
    result = defs.resolve_job_def("consent_job").execute_in_process(instance=instance, run_config=config,
                                                                      raise_on_error=False)
    steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)
             if s.end_time and s.start_time}
con = duckdb.connect(warehouse, read_only=True)
inner = json.loads(con.execute("SELECT step_seconds FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0] or "{}")
print(json.dumps({"success": result.success, "steps": steps, "inner": inner}))
"""


def full_run(checkout: Path, exports: Path, warehouse: Path) -> dict:
    shutil.rmtree(warehouse.parent, ignore_errors=True)
    warehouse.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(checkout), "CONSENT_EXPORTS": str(exports),
           "CONSENT_WAREHOUSE": str(warehouse), "CONSENT_HASH_SALT": "bench-steps"}
    env.pop("DAGSTER_HOME", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(warehouse), AS_OF], cwd=checkout, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{checkout}: the run's process exited {done.returncode}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--work", type=Path, default=BENCH / "work" / "steps")
    args = parser.parse_args()
    versions = {"before": args.baseline.resolve(), "after": REPO}
    for n in args.sizes:
        exports = BENCH / "data" / f"events_{n}"
        if not (exports / ".complete").exists():
            sys.exit(f"no exports for N={n}: run bench/benchmark.py --sizes {n} first")
        results = {}
        for label, checkout in versions.items():
            results[label] = full_run(checkout, exports, args.work.resolve() / label / "consent.duckdb")
            print(f"N = {n:,}, {label} ({checkout}): {results[label]['wall']:.1f} s, "
                  f"{'succeeded' if results[label]['success'] else 'FAILED'}", flush=True)
        _table(n, results)
        (args.work / f"steps_{n}.json").write_text(json.dumps(results, indent=1))


def _table(n: int, results: dict[str, dict]) -> None:
    before, after = results["before"], results["after"]
    print(f"\nN = {n:,} events: seconds per step of a full run")
    print(f"{'step':52} {'before':>8} {'after':>8} {'after/before':>13}")

    def line(name: str, a: float | None, b: float | None) -> None:
        ratio = f"{b / a:13.2f}" if a and b is not None else f"{'':13}"
        print(f"{name:52} {a if a is not None else float('nan'):8.1f} {b if b is not None else float('nan'):8.1f} {ratio}")

    inner = [k for k in ("read", "normalise", "build", "ledger", "reconcile")
             if k in before["inner"] or k in after["inner"]]
    for key in inner:
        line(f"  (run's own) {key}", before["inner"].get(key), after["inner"].get(key))
    for step in sorted(set(before["steps"]) | set(after["steps"]),
                       key=lambda s: -max(before["steps"].get(s, 0), after["steps"].get(s, 0))):
        line(step, before["steps"].get(step), after["steps"].get(step))
    line("sum of the steps", sum(before["steps"].values()), sum(after["steps"].values()))
    line("whole process (start-up, steps, finalising)", before["wall"], after["wall"])


if __name__ == "__main__":
    main()
