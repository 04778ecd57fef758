"""Nights on warehouses that already exist, two versions side by side, in one run.

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/nights.py --baseline /tmp/baseline --sizes 100000 5000000

`bench/benchmark.py` builds each warehouse with a full run first (minutes at
5M events). To compare two versions' nights without that, this script takes the
warehouse `bench/benchmark.py` left for each N (`bench/work/consent_N.duckdb`,
its exports and its 10k-event night already in), and for the baseline checkout
and this one, each on its own copy of it, first runs a night over what the
warehouse has read (not timed: afterwards every mart reflects that version's
last run), then times in fresh processes: the start-up alone (importing the
pipeline), a night adding 10,000 new events (bench/generate.py, seed 3: not the
benchmark's night), a night with nothing new, and a second night adding another
10,000 (seed 4). The first of those nights is the first append after the
benchmark's own night; the second is a night in a row of nights. Both
versions run with this `.venv`'s Python (the baseline's modules imported from its
own folder), read the same files and run at the same clock. It prints the times,
the ratios docs/performance.md sets targets for (the night across sizes, the nothing-new night
against the start-up), and whether both versions' statuses, history and violations
are equal after the nights (over the columns both versions have: a newer schema adds columns).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
PYTHON = sys.executable
sys.path.insert(0, str(BENCH))
from benchmark import AS_OF, night_events  # noqa: E402 (bench/ is a folder of scripts, not a package)

MEASURE = r"""
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[2:], cwd=sys.argv[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - started
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "peak_mb": peak_kb / 1024, "code": done.returncode, "stderr": done.stderr[-600:]}))
"""
CLI = "import sys; from cli.main import main; sys.exit(main(sys.argv[1:]))"
DECIDED = {
    "consent_status": "SELECT * FROM consent_status",
    "consent_status_history": "SELECT * FROM consent_status_history",
    "consent_violations": "SELECT * FROM consent_violations",
}


def measure(checkout: Path, command: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([PYTHON, "-c", MEASURE, str(checkout), *command], capture_output=True, text=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] not in (0, 1):
        raise SystemExit(f"{' '.join(command[:4])} exited {result['code']}: {result['stderr']}")
    return result


def night_exports(n: int) -> tuple[Path, Path, Path]:
    """The exports the warehouse for N has read (`bench/benchmark.py`'s exports and night), the
    same plus 10,000 new events in new files, and those plus 10,000 more. Hard links: same size and
    modification time, not read again."""
    if not (WORK / f"consent_{n}.duckdb").exists():
        raise SystemExit(f"no warehouse for N={n}: run bench/benchmark.py --sizes {n} first")
    folders = []
    for name, base, extra in ((f"known_{n}", BENCH / "data" / f"events_{n}", [(WORK / "extra", 2, "night2_")]),
                              (f"night3_{n}", WORK / f"known_{n}", [(WORK / "extra3", 3, "night3_")]),
                              (f"night4_{n}", WORK / f"night3_{n}", [(WORK / "extra4", 4, "night4_")])):
        folder = WORK / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(base, folder, copy_function=os.link, ignore=shutil.ignore_patterns(".complete"))
        for events, seed, prefix in extra:
            for channel in (p for p in night_events(events, seed).iterdir() if p.is_dir() and p.name != "notices"):
                for file in channel.iterdir():
                    shutil.copy2(file, folder / channel.name / f"{prefix}{file.name}")
        folders.append(folder)
    return folders[0], folders[1], folders[2]


def columns(warehouse: Path) -> dict[str, list[str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {name: [r[0] for r in con.execute(f"DESCRIBE {sql}").fetchall()] for name, sql in DECIDED.items()}
    finally:
        con.close()


def checksum(warehouse: Path, shared: dict[str, list[str]]) -> dict[str, tuple]:
    """Rows and a checksum per table, over the columns both versions have (a newer schema adds columns)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {name: con.execute(f"SELECT count(*), sum(hash(COLUMNS(c -> c IN ?))) FROM ({sql})",
                                  [shared[name]]).fetchone()
                for name, sql in DECIDED.items()}
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 5_000_000])
    args = parser.parse_args()
    versions = {"baseline": args.baseline.resolve(), "this": REPO}
    results: dict[int, dict[str, dict]] = {}
    same = True
    for n in args.sizes:
        known, night, second = night_exports(n)
        results[n] = {}
        warehouses = {}
        for label, checkout in versions.items():
            warehouse = WORK / f"nights_{label}_{n}" / "consent.duckdb"
            shutil.rmtree(warehouse.parent, ignore_errors=True)
            warehouse.parent.mkdir(parents=True)
            shutil.copy(WORK / f"consent_{n}.duckdb", warehouse)
            shutil.copy(WORK / ".hash_salt", warehouse.parent / ".hash_salt")
            run = [PYTHON, "-c", CLI, "run", "--warehouse", str(warehouse), "--as-of", AS_OF, "--exports"]
            # Not timed: a night over what the warehouse has read, so that every mart reflects the last
            # run (a mart built outside a run, or by another version, would be rebuilt whole tonight).
            measure(checkout, [*run, str(known)])
            results[n][label] = {
                "start-up": measure(checkout, [PYTHON, "-c", "import pipelines.definitions"]),
                "10k night": measure(checkout, [*run, str(night)]),
                "nothing new": measure(checkout, [*run, str(night)]),
                "second night": measure(checkout, [*run, str(second)]),
            }
            warehouses[label] = warehouse
        layouts = {label: columns(warehouse) for label, warehouse in warehouses.items()}
        shared = {name: [c for c in layouts["baseline"][name] if c in layouts["this"][name]] for name in DECIDED}
        sums = {label: checksum(warehouse, shared) for label, warehouse in warehouses.items()}
        for warehouse in warehouses.values():
            shutil.rmtree(warehouse.parent)
        for name in DECIDED:
            equal = sums["baseline"][name] == sums["this"][name]
            same &= equal
            print(f"N={n:,} {name}: {'identical' if equal else 'DIFFERENT'} ({sums['this'][name][0]:,} rows)")
    print(f"\n{'N':>10} {'version':9} {'start-up s':>11} {'10k night s':>12} {'nothing new s':>14}"
          f" {'second night s':>15} {'peak MB':>8} {'nothing new / start-up':>23}")
    for n, by_version in results.items():
        for label, r in by_version.items():
            ratio = r["nothing new"]["wall"] / r["start-up"]["wall"]
            print(f"{n:>10,} {label:9} {r['start-up']['wall']:11.1f} {r['10k night']['wall']:12.1f}"
                  f" {r['nothing new']['wall']:14.1f} {r['second night']['wall']:15.1f}"
                  f" {r['10k night']['peak_mb']:8.0f} {ratio:23.2f}x")
    if len(results) > 1:
        first, last = min(results), max(results)
        for label in versions:
            for night in ("10k night", "second night"):
                print(f"{label}: the {night} on {last:,} events / on {first:,}: "
                      f"{results[last][label][night]['wall'] / results[first][label][night]['wall']:.2f}x")
    (WORK / "nights_results.json").write_text(json.dumps(results, indent=1))
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
