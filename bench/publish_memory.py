"""Where publishing holds memory: one staged run published under several DuckDB memory limits.

    .venv/bin/python bench/publish_memory.py --exports bench/data/events_5000000 --limits none 2GB 1GB

Stages the exports once into a fresh warehouse (`bench/work/publish_memory/staged.duckdb`, not
timed), then, for each memory limit (`none`: DuckDB's default, 80% of RAM, not the warehouse's
2GB), publishes a copy of it in a fresh process, as a run's `published_warehouse` step does (two
workers), printing after
each SQL step of the publish its seconds and the process's resident memory, then the process's
peak and whether the publish committed. Workers' memory is not counted (250-370 MB each at 1M).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work" / "publish_memory"
AS_OF = "2026-11-26T00:00:00+00:00"

STAGE = r"""
import sys
from datetime import datetime
from pathlib import Path
from consent.run.staging import stage_run
from consent.storage.access import Settings, Warehouse
warehouse, exports = Warehouse(path=sys.argv[1]), Path(sys.argv[2])
settings = Settings(exports_dir=str(exports))
stage_run(warehouse.connect, exports, policy=settings.load_policy(), channels=settings.load_channels(),
          as_of=datetime.fromisoformat(sys.argv[3]).replace(tzinfo=None), run_id="publish-memory", workers=2)
"""

PUBLISH = r"""
import resource, sys, time
import duckdb
from consent.run.publish import publish
from consent.storage import sql
from consent.storage.access import Settings, Warehouse

def rss_mb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024

run = sql.run
def traced(con, name, *args, **kwargs):
    started = time.perf_counter()
    try:
        return run(con, name, *args, **kwargs)
    finally:
        if name not in ("macros", "send_macros", "range_history"):
            print(f"  {name:<20} {time.perf_counter() - started:6.1f} s {rss_mb():7,} MB", flush=True)

if __name__ == "__main__":
    sql.run = traced
    limit = None if sys.argv[3] == "none" else sys.argv[3]
    warehouse, settings = Warehouse(path=sys.argv[1], memory_limit=limit), Settings(exports_dir=sys.argv[2])
    started, outcome = time.perf_counter(), "committed"
    with warehouse.connect() as con:
        con.execute("SET enable_progress_bar = false")
        if limit is None:  # DuckDB's own default, not the warehouse's 2GB (after a SET, a RESET
            # reports DuckDB's default but measured as if the 2GB still held: set it explicitly)
            default = duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchone()[0]
            con.execute("SET memory_limit = ?", [default])
        try:
            publish(con, policy=settings.load_policy(), workers=2)
        except Exception as exc:
            outcome = f"FAILED: {str(exc).splitlines()[0]}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"  total {time.perf_counter() - started:.1f} s, peak {peak:,} MB, {outcome}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, required=True)
    parser.add_argument("--limits", nargs="+", default=["none", "2GB"], help="DuckDB memory limits, or none")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    staged = WORK / "staged.duckdb"
    print(f"staging {args.exports} (not timed) ...", flush=True)
    subprocess.run([sys.executable, "-c", STAGE, str(staged), str(args.exports.resolve()), AS_OF], cwd=REPO, check=True,
                   stderr=subprocess.DEVNULL)
    for limit in args.limits:
        copy = WORK / f"publish_{limit}.duckdb"
        shutil.copy(staged, copy)
        print(f"memory limit {limit}:", flush=True)
        subprocess.run([sys.executable, "-c", PUBLISH, str(copy), str(args.exports.resolve()), limit], cwd=REPO,
                       check=True, stderr=subprocess.DEVNULL)
        copy.unlink()


if __name__ == "__main__":
    main()
