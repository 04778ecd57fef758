"""The GX suites on a whole run's rows, two versions side by side, in one run.

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/checks.py --baseline /tmp/baseline --warehouse bench/work/consent_1000000.duckdb

Takes a warehouse `bench/benchmark.py` left (its first run is a full run: every event and every
status row is that run's) and, for the baseline checkout and this one, each in a fresh process
(this `.venv`'s Python, the version's modules imported from its own folder), validates the
`consent_events` suite on the full run's events and the `consent_status` suite on every status
row, as the run's checks do; prints seconds and peak memory per version and whether both report
the same outcomes (rows validated, unexpected counts). Read-only: the warehouse is not changed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# Run in the version's folder. Baselines before the SQL route validate Polars frames
# (`rows_to_validate`); this version validates a query in DuckDB (`ROWS_SQL`, `rows_sql`).
VALIDATE = r"""
import json, resource, sys, time
from pathlib import Path
from consent.storage.access import Warehouse
from expectations import consent_events, consent_status
from expectations.runner import validate
warehouse = Warehouse(path=sys.argv[1], lock_timeout_seconds=60)
outcomes, started = [], time.perf_counter()
with warehouse.connect(read_only=True) as con:
    con.execute("SET enable_progress_bar = false")
    run_id = con.execute("SELECT run_id FROM runs ORDER BY started_at LIMIT 1").fetchone()[0]
    if hasattr(consent_events, "ROWS_SQL"):
        outcomes.append(validate(con, consent_events.ROWS_SQL, consent_events.build_suite, "consent_events",
                                 params={"run_id": run_id}))
        outcomes.append(validate(con, consent_status.rows_sql(), consent_status.build_suite, "consent_status"))
    else:
        columns = ", ".join(consent_events.SOURCE_COLUMNS)
        frame = con.execute(f"SELECT {columns} FROM consent_events WHERE run_id = ?", [run_id]).pl()
        outcomes.append(validate(consent_events.rows_to_validate(frame), consent_events.build_suite, "consent_events"))
        del frame
        status = con.execute("SELECT * FROM consent_status").pl()
        outcomes.append(validate(consent_status.rows_to_validate(status), consent_status.build_suite, "consent_status"))
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "outcomes": [[o.suite, o.row_count, sorted([r.expectation, r.column or "", r.unexpected_count] for r in o.results)]
                 for o in outcomes],
}))
"""


def run(checkout: Path, warehouse: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", VALIDATE, str(warehouse.resolve())], cwd=checkout,
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{checkout}: validation failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the version to compare with")
    parser.add_argument("--warehouse", type=Path, required=True, help="a warehouse bench/benchmark.py left")
    args = parser.parse_args()
    results = {"before": run(args.baseline, args.warehouse), "now": run(REPO, args.warehouse)}
    rows = results["now"]["outcomes"]
    print(f"{'version':8} {'seconds':>8} {'peak MB':>8}  rows validated")
    for name, result in results.items():
        counts = ", ".join(f"{suite} {n:,}" for suite, n, _ in result["outcomes"])
        print(f"{name:8} {result['seconds']:8.1f} {result['peak_mb']:8.0f}  {counts}")
    same = results["before"]["outcomes"] == rows
    print("same outcomes (rows validated, unexpected counts):", "yes" if same else "NO")
    if not same:
        print(json.dumps(results["before"]["outcomes"]), json.dumps(rows), sep="\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
