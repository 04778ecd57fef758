"""What Dagster alone costs a run: `consent_job`'s steps, each doing nothing.

    .venv/bin/python bench/dagster_floor.py               # 5 rounds, start-up and floor side by side
    .venv/bin/python bench/dagster_floor.py --rounds 3

The target: a night with nothing new costs at most 1.5x the start-up
(importing the pipeline). Every run goes through the Dagster job (whatever
starts a run, the same run). This script measures the part of any
run that no change to our steps can remove. Each round times, each in a fresh
process (wall time, as bench/benchmark.py does):

  (e) start-up: `import pipelines.definitions` (benchmark.py's row e);
  (g) the floor: the same import, then a job with `consent_job`'s graph (the
      same steps, asset keys, dependencies and asset checks, copied from the
      real job) whose bodies only report each asset materialised and each
      check passed, executed in-process as `consent run` executes the real job
      (`execute_in_process`, ephemeral instance, in-process executor, console
      logger at CRITICAL). No warehouse is opened, no file read.

It prints the median of each, the floor's own `execute_in_process` time, and
the floor against the start-up. If the floor alone is over 1.5x the start-up,
the nothing-new target cannot be met by a run that goes through Dagster.
`--child` runs (g) once and prints JSON (benchmark.py uses it too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable


def noop_job_definitions():
    """Definitions holding a copy of `consent_job`'s graph whose steps do nothing."""
    import dagster as dg

    from pipelines.definitions import defs

    real = defs.resolve_job_def("consent_job")
    steps = [a for a in real.asset_layer.asset_graph.assets_defs if a.is_executable]
    job = dg.define_asset_job("consent_job", selection=dg.AssetSelection.all(), executor_def=dg.in_process_executor)
    floor = dg.Definitions(
        assets=[_noop_copy(dg, a) for a in steps if list(a.specs)],
        asset_checks=[_noop_copy(dg, a) for a in steps if not list(a.specs)],
        jobs=[job],
        executor=dg.in_process_executor,
    )
    return real, floor


def _noop_copy(dg, assets_def):
    """A step with `assets_def`'s name, assets and checks that only reports them done."""
    specs, checks = list(assets_def.specs), list(assets_def.check_specs)

    def results():
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key)
        for check in checks:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    name = assets_def.node_def.name
    if specs:
        return dg.multi_asset(name=name, specs=specs, check_specs=checks)(results)
    return dg.multi_asset_check(name=name, specs=checks)(results)


def child() -> None:
    import pipelines.definitions  # noqa: F401  the start-up, as in (e)

    started = time.perf_counter()
    real, floor = noop_job_definitions()
    copying = time.perf_counter() - started  # not part of any real run: taken off the floor
    job = floor.resolve_job_def("consent_job")
    real_steps = sorted(n.name for n in real.nodes_in_topological_order)
    floor_steps = sorted(n.name for n in job.nodes_in_topological_order)
    if floor_steps != real_steps:
        raise SystemExit(f"the copy's steps differ from consent_job's: {floor_steps} vs {real_steps}")
    started = time.perf_counter()
    result = job.execute_in_process(
        raise_on_error=True, run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    )
    seconds = time.perf_counter() - started
    materialised = len(result.get_asset_materialization_events())
    checks = len(result.get_asset_check_evaluations())
    print(json.dumps({"steps": len(floor_steps), "materialisations": materialised, "check_evaluations": checks,
                      "copy_s": copying, "execute_in_process_s": seconds, "success": result.success}))


def wall(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-800:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    startups, floors, inside = [], [], []
    for n in range(args.rounds):
        startups.append(wall([PYTHON, "-c", "import pipelines.definitions"])[0])
        seconds, out = wall([PYTHON, str(Path(__file__).resolve()), "--child"])
        report = json.loads(out.strip().splitlines()[-1])
        floors.append(seconds - report["copy_s"])
        inside.append(report["execute_in_process_s"])
        print(f"round {n + 1}: start-up {startups[-1]:.2f} s; floor {floors[-1]:.2f} s "
              f"(process {seconds:.2f} s less {report['copy_s']:.2f} s copying the graph; "
              f"execute_in_process {inside[-1]:.2f} s; {report['steps']} steps, "
              f"{report['materialisations']} materialisations, {report['check_evaluations']} check evaluations)",
              flush=True)
    startup, floor = statistics.median(startups), statistics.median(floors)
    print(f"\nmedian of {args.rounds}: start-up {startup:.2f} s; floor {floor:.2f} s "
          f"(execute_in_process {statistics.median(inside):.2f} s)")
    print(f"floor / start-up: {floor / startup:.2f}x (the nothing-new night target: at most 1.5x)")


if __name__ == "__main__":
    main()
