"""What the read copy costs per night: its seconds beside the run's, and its disk.

    .venv/bin/python bench/read_copy.py                         # N = 1M
    .venv/bin/python bench/read_copy.py --sizes 1000000 5000000

For each N: the synthetic exports of bench/benchmark.py (bench/data/events_N, made
once, reused), a full `consent run` on a fresh warehouse, then a night adding the
same 10,000 new events (seed 2), each timed in a fresh process (a run replaces the
read copy in its finalisation, so both times include one copy). Then the copy step
alone, `WarehouseAccess.publish_read_copy()` (fold the WAL if any, hold DuckDB's
shared lock, copy the bytes to a new owner-only file, fsync, rename over the old
copy), timed --repeat times in a fresh process, on the warehouse as the night left
it. Disk: the warehouse and the copy (the copy is a byte copy: as large as the
warehouse; while it is replaced, a second one exists for a moment). Results also go
to bench/work/read_copy_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import AS_OF, BENCH, CONSENT, PYTHON, exports_for, measure, night_exports  # noqa: E402

COPY_ONLY = r"""
import json, sys, time
from consent.storage.access import RunLock, Warehouse
from pathlib import Path
warehouse = Warehouse(path=sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    lock = RunLock(Path(warehouse.file), 30)
    lock.acquire()
    try:
        started = time.perf_counter()
        warehouse.publish_read_copy()
        times.append(time.perf_counter() - started)
    finally:
        lock.release()
print(json.dumps(times))
"""


def copy_seconds(warehouse: Path, repeat: int) -> list[float]:
    done = subprocess.run([PYTHON, "-c", COPY_ONLY, str(warehouse), str(repeat)], capture_output=True, text=True,
                          cwd=BENCH.parent, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def bench(n: int, repeat: int) -> dict:
    exports = exports_for(n)
    work = BENCH / "work" / f"read_copy_{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    warehouse = work / "consent.duckdb"
    run = measure([CONSENT, "run", "--exports", str(exports), "--warehouse", str(warehouse), "--as-of", AS_OF])
    night = measure([CONSENT, "run", "--exports", str(night_exports(exports, work)), "--warehouse", str(warehouse),
                     "--as-of", AS_OF])
    copies = copy_seconds(warehouse, repeat)
    copy = warehouse.with_name("consent.read.duckdb")
    return {
        "events": n, "full_run_s": run["wall"], "night_s": night["wall"], "copy_s": copies,
        "copy_median_s": sorted(copies)[len(copies) // 2], "warehouse_mb": mb(warehouse), "read_copy_mb": mb(copy),
        "copy_mode": oct(copy.stat().st_mode & 0o777),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("CONSENT_WAREHOUSE_KEY", None)
    results = []
    for n in args.sizes:
        result = bench(n, args.repeat)
        results.append(result)
        print(f"{n:>10,} events: full run {result['full_run_s']:.1f} s, night (+10,000) {result['night_s']:.1f} s, "
              f"copy alone {result['copy_median_s']:.2f} s (median of {args.repeat}: "
              f"{', '.join(f'{t:.2f}' for t in result['copy_s'])}), warehouse {result['warehouse_mb']:.0f} MB, "
              f"read copy {result['read_copy_mb']:.0f} MB ({result['copy_mode']}); copy = "
              f"{100 * result['copy_median_s'] / result['night_s']:.1f}% of the night", flush=True)
    out = BENCH / "work" / "read_copy_results.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
