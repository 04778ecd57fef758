"""The same exports into a file warehouse and into DuckLake + PostgreSQL, side by side in one run.

    .venv/bin/python bench/ducklake.py --events 1000000 --night-events 10000 [--workers 1 2]

Starts a throwaway PostgreSQL cluster for the catalog (tests/services.py: Debian's package, on a
loopback port, fsync off as in the tests), then, each in a fresh process timed as
bench/benchmark.py times runs (wall, peak memory of the run and its workers together):
a full `consent run` into a new file warehouse, the same into a new DuckLake catalog (data files
in a local folder), and the same night of K new events (bench/generate.py, seed 2) on both.
Prints each run's time, peak memory and step seconds (`runs.step_seconds`), the DuckLake/file
ratios, and whether statuses, history, violations and marts are identical (checksums as
bench/compare_outputs.py takes them); exit 1 when they differ. With `--workers 1 2` the file and
DuckLake run with one worker process and DuckLake again, into a new catalog, with two: the
reconcile step's speed-up is printed. A DuckLake run with W > 1 workers decides W person buckets,
each in a process of its own (`consent run --buckets W --workers W`: assets/buckets.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]
from benchmark import exports_for  # noqa: E402 (bench/ is a folder of scripts, not a package)
from compare_outputs import TABLES, checksums_on, columns_on, measured_run, night_exports  # noqa: E402

SALT = "bench-ducklake"  # one salt for both: the marts' hashes are then comparable
STEPS = ("read", "normalise", "build", "ledger", "reconcile")


def run(warehouse: str, exports: Path, *extra: str) -> dict:
    """One `consent run` of this checkout in a fresh process: wall seconds, peak MB."""
    return measured_run(REPO, exports, warehouse, *extra, salt=SALT)


def reader(warehouse: str):
    from consent.storage.access import Warehouse

    os.environ["CONSENT_HASH_SALT"] = SALT
    return Warehouse(path=warehouse).reader()


def last_steps(warehouse: str) -> dict:
    with reader(warehouse) as con:
        (steps,) = con.execute("SELECT step_seconds FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    return json.loads(steps or "{}")


def outputs(warehouse: str, shared: dict | None = None) -> tuple[dict, dict]:
    with reader(warehouse) as con:
        columns = columns_on(con)
        return columns, checksums_on(con, shared or columns)


def open_seconds(warehouse: str) -> float:
    """Opening and closing a writer connection (what every step and check of a run does): median of five."""
    import statistics
    import time

    from consent.storage.access import Warehouse

    opens = []
    for _ in range(5):
        started = time.perf_counter()
        with Warehouse(path=warehouse).connect():
            pass
        opens.append(time.perf_counter() - started)
    return statistics.median(opens)


def catalog_figures(targets: dict) -> dict:
    """What the catalog holds after the runs (snapshots, data files and their size), and what opening
    each warehouse costs."""
    with reader(targets["ducklake"][0]) as con:
        snapshots, files, size = con.execute(
            "SELECT (SELECT count(*) FROM ducklake_snapshots('warehouse')), count(*), sum(file_size_bytes) "
            "FROM __ducklake_metadata_warehouse.ducklake_data_file").fetchone()
    return {"snapshots": snapshots, "data_files": files, "data_mb": (size or 0) / 2**20,
            "connect_file_s": open_seconds(targets["file"][0]), "connect_lake_s": open_seconds(targets["ducklake"][0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--night-events", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=BENCH / "work" / "ducklake")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="worker processes (`consent run --workers`): the file and the first DuckLake run take "
                             "the first count, and DuckLake runs again, into a new catalog, with each other count")
    args = parser.parse_args()
    from consent.storage.access import close_shared_connections
    from tests.services import start_postgres

    exports = exports_for(args.events)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    night = night_exports(exports, work, args.night_events)
    postgres = start_postgres()
    try:
        first, *more = args.workers
        targets = {"file": (str(work / "file" / "consent.duckdb"), ("--workers", str(first)))}
        for n in (first, *more):
            targets["ducklake" if n == first else f"ducklake x{n}"] = (
                "ducklake:postgres:" + postgres.dsn(postgres.create_database()),
                ("--data-path", str(work / f"lake_data_{n}"), "--workers", str(n),
                 *(("--buckets", str(n)) if n > 1 else ())))
        (work / "file").mkdir()
        results = {}
        for label, (warehouse, extra) in targets.items():
            full = run(warehouse, exports, *extra)
            full["steps"] = last_steps(warehouse)
            nightly = run(warehouse, night, *extra)
            nightly["steps"] = last_steps(warehouse)
            results[label] = {"full": full, "night": nightly}
            print(f"{label}: full {full['wall']:.1f} s, peak {full['peak_mb']:,.0f} MB; night of "
                  f"{args.night_events:,} {nightly['wall']:.1f} s, peak {nightly['peak_mb']:,.0f} MB", flush=True)
        differ = _report(targets, results)
        results["catalog"] = catalog_figures(targets)
        print("DuckLake catalog after both runs: {snapshots} snapshots, {data_files} data files ({data_mb:,.0f} MB); "
              "opening a writer connection: {connect_lake_s:.2f} s (file: {connect_file_s:.2f} s)".format(
                  **results["catalog"]))
    finally:
        close_shared_connections()  # this process's writer instance, before its server stops
        postgres.stop()
    (work / "results.json").write_text(json.dumps(results, indent=2))
    return 1 if differ else 0


def _report(targets: dict, results: dict) -> int:
    print(f"\n{'step (s)':<12}" + "".join(f"{f'{l} {k}':>18}" for l in results for k in ("full", "night")))
    for step in STEPS:
        print(f"{step:<12}" + "".join(f"{results[l][k]['steps'].get(step, 0):>18.1f}" for l in results for k in ("full", "night")))
    for label in (l for l in results if l != "file"):
        for kind in ("full", "night"):
            ratio = results[label][kind]["wall"] / results["file"][kind]["wall"]
            print(f"{label} / file, {kind} run: {ratio:.2f}x time, "
                  f"{results[label][kind]['peak_mb'] / results['file'][kind]['peak_mb']:.2f}x peak memory")
        if label != "ducklake":
            speedup = results["ducklake"]["full"]["steps"]["reconcile"] / results[label]["full"]["steps"]["reconcile"]
            print(f"reconcile step, full run, ducklake / {label}: {speedup:.2f}x faster")
    (file_columns, _), (lake_columns, _) = (outputs(targets[l][0]) for l in ("file", "ducklake"))
    shared = {name: [c for c in file_columns[name] if c in lake_columns[name]] for name in TABLES}
    sums = {label: outputs(warehouse, shared)[1] for label, (warehouse, _) in targets.items()}
    differ = [(name, label) for name in TABLES for label in sums if sums[label][name] != sums["file"][name]]
    for name in TABLES:
        apart = [label for n, label in differ if n == name]
        print(f"{name:<24}{sums['file'][name][0]:>10}  {'NO: ' + ', '.join(apart) if apart else 'identical'}")
    return len(differ)


if __name__ == "__main__":
    sys.exit(main())
