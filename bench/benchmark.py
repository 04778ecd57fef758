"""Side-by-side benchmark: the naive script, `consent run`, and a DuckDB scan floor.

    .venv/bin/python bench/benchmark.py                                   # N = 100k and 1M
    .venv/bin/python bench/benchmark.py --sizes 100000 1000000 5000000    # the documented sizes (naive up to 1M)
    .venv/bin/python bench/benchmark.py --sizes 100000                    # one size

For each N it generates synthetic exports once (bench/data/events_N, reused), then in
one run times, each in a fresh process: (a) `bench/naive.py` (only up to --naive-max
events: it takes minutes and gigabytes beyond), (b) `consent run` on a fresh
warehouse, (c) DuckDB reading the same files (the floor), (d) a night adding the
same 10,000 new events (bench/generate.py, seed 2) to (b)'s warehouse, whatever N,
so nights on ledgers of different sizes compare, and (h) the same night again:
nothing new. (b) reads a copy of the exports made for it, and the night's files are
added to that folder, beside the files (b) read: exports accumulate in place, so a
night finds the old files by their fingerprint and reads only the new ones. (i) is
(h) on a fresh copy of every file (an exporter that rewrites its files): each file is
read and hashed again to be known unchanged. It prints wall time, rows per second, peak memory (of all the measured
processes together: the run and its worker and bucket processes, their summed proportional
set size sampled every 0.1 s, and never less than the largest single process's peak RSS), and
the ratios; (e) is the start-up alone
(importing the pipeline's libraries), the part of every run no data size changes;
(g) is Dagster's floor: the same import, then `consent_job`'s steps doing nothing
(bench/dagster_floor.py --child), what a run through the job costs before any work;
(f) is `consent check` of an N-row audience (up to --audience-max) against (b)'s warehouse (numbers the
warehouse knows, one in ten spelled nationally, some unknown): the pre-send gate
is a DuckDB join, so it should take seconds at 1M rows. Across sizes it prints
the scaling of time, memory and the night (the targets in docs/performance.md). Results also go
to bench/work/last_results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
CONSENT = str(Path(PYTHON).with_name("consent"))
AS_OF = "2026-11-26T00:00:00Z"

MEASURE = r"""
import json, os, resource, subprocess, sys, threading, time

def tree(root):
    # the process and every descendant (Linux /proc): the run, its worker and bucket processes
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found

def pss_kb(pid):
    # proportional set size: pages shared between the processes counted once in all, not once each
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, ValueError):
        return 0

peak_total, peak_when, last_line = [0], [None], [""]
def sample(process):
    while process.poll() is None:
        sizes = [pss_kb(pid) for pid in tree(process.pid)]
        if sum(sizes) > peak_total[0]:
            # when: seconds into the run, the progress line last printed, and each process's share
            peak_total[0] = sum(sizes)
            peak_when[0] = {"at_s": round(time.perf_counter() - started, 1), "during": last_line[0][:160],
                            "processes_mb": sorted((round(kb / 1024) for kb in sizes if kb), reverse=True)}
        time.sleep(0.1)

started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
sampler = threading.Thread(target=sample, args=(process,), daemon=True)
sampler.start()
lines = []
for line in process.stderr:  # the run's progress, as it prints it
    lines.append(line)
    if line.strip():
        last_line[0] = line.strip()
process.wait()
stderr = "".join(lines)
wall = time.perf_counter() - started
sampler.join()
single_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
# peak_mb: all processes together (their summed PSS, sampled every 0.1 s; never below the largest
# single process's exact peak RSS, which a short spike between two samples could otherwise hide)
print(json.dumps({"wall": wall, "peak_mb": max(peak_total[0], single_kb) / 1024, "peak_single_mb": single_kb / 1024,
                  "peak_total_sampled_mb": peak_total[0] / 1024, "peak_when": peak_when[0], "code": process.returncode, "stderr": stderr[-600:]}))
"""

FLOOR = """
import sys, duckdb
root = sys.argv[1]
con = duckdb.connect()
rows = con.execute(f"SELECT count(*) FROM read_csv('{root}/*/*.csv', union_by_name=true, all_varchar=true, ignore_errors=true, filename=true)").fetchone()[0]
rows += con.execute(f"SELECT count(*) FROM read_json_auto('{root}/whatsapp/*.json*', format='auto', ignore_errors=true, maximum_object_size=100000000)").fetchone()[0]
print(rows)
"""


def measure(command: list[str], env: dict | None = None) -> dict:
    done = subprocess.run([PYTHON, "-c", MEASURE, *command], capture_output=True, text=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] not in (0, 1, 3):  # 3: `consent check` blocked some rows
        raise SystemExit(f"{command[0]} failed ({result['code']}): {result['stderr']}")
    return result


def exports_for(n: int) -> Path:
    folder = BENCH / "data" / f"events_{n}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {n:,} events into {folder} ...", flush=True)
        subprocess.run([PYTHON, str(BENCH / "generate.py"), str(folder), "--events", str(n), "--seed", "1"], check=True,
                       stdout=subprocess.DEVNULL)
        (folder / ".complete").write_text("")
    return folder


def audience_for(warehouse: Path, n: int, work: Path) -> Path:
    """An N-row audience CSV from the warehouse's numbers: 90% E.164, 10% national spelling with a
    country column, 1 in 50 a number the warehouse never saw."""
    import duckdb
    import phonenumbers
    import polars as pl

    con = duckdb.connect(str(warehouse), read_only=True)
    numbers = [p for (p,) in con.execute(
        "SELECT DISTINCT contact_id FROM consent_status WHERE phone_e164 IS NOT NULL ORDER BY 1").fetchall()]
    con.close()
    national = {}
    for number in numbers[: max(1, len(numbers) // 10)]:
        parsed = phonenumbers.parse(number, None)
        national[number] = (phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL),
                            phonenumbers.region_code_for_number(parsed))
    phones, countries = [], []
    for i in range(n):
        number = numbers[i % len(numbers)]
        if i % 50 == 49:
            phones.append(f"+4915{900000000 + i % 99999999}"), countries.append("")
        elif number in national and i % 10 == 3:
            phones.append(national[number][0]), countries.append(national[number][1])
        else:
            phones.append(number), countries.append("")
    path = work / f"audience_{n}.csv"
    pl.DataFrame({"customer": [f"c{i}" for i in range(n)], "phone": phones, "country": countries}).write_csv(path)
    return path


NIGHT_EVENTS = 10_000


def night_events(folder: Path, seed: int) -> Path:
    """10,000 new events (bench/generate.py with `seed`), generated once into `folder` and reused."""
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([PYTHON, str(BENCH / "generate.py"), str(folder), "--events", str(NIGHT_EVENTS), "--seed", str(seed)],
                       check=True, stdout=subprocess.DEVNULL)
        (folder / ".complete").write_text("")
    return folder


def exports_folder(exports: Path, work: Path) -> Path:
    """The folder the runs read: a copy of the exports, made before the full run, where the night's
    files are added next to the files the full run read (exports accumulate in place)."""
    folder = work / "night2"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(exports, folder, ignore=shutil.ignore_patterns(".complete"))
    return folder


def add_night(folder: Path, work: Path) -> None:
    """The same 10,000 new events, in new files beside the others (the next night)."""
    extra = night_events(work / "extra", seed=2)
    for channel in (p for p in extra.iterdir() if p.is_dir() and p.name != "notices"):
        for file in channel.iterdir():
            shutil.copy(file, folder / channel.name / f"night2_{file.name}")


def row(name: str, result: dict, n: int) -> dict:
    return {"approach": name, "seconds": result["wall"], "rows_per_s": n / result["wall"], "peak_mb": result["peak_mb"],
            "peak_when": result.get("peak_when")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--with-10m", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-naive", action="store_true", help="time only consent run and the floor")
    parser.add_argument("--naive-max", type=int, default=1_000_000, help="run the naive script only up to this N")
    parser.add_argument("--audience-max", type=int, default=1_000_000, help="time (f) only up to this N")
    args = parser.parse_args()
    sizes = args.sizes + ([10_000_000] if args.with_10m else [])
    work = BENCH / "work"
    work.mkdir(exist_ok=True)
    summary = []
    for n in sizes:
        results = _measure_size(n, args, work)
        _print_size(n, results)
        summary.append({"n": n, **{r["approach"]: r for r in results}})
    if len(summary) > 1:
        first, last = summary[0], summary[-1]
        full, night = "b consent run (full)", "d night: 10k new events"
        print(f"\nscaling {first['n']:,} -> {last['n']:,} events ({last['n'] // first['n']}x): full run "
              f"{last[full]['seconds'] / first[full]['seconds']:.2f}x the time, "
              f"{last[full]['peak_mb'] / first[full]['peak_mb']:.2f}x the peak memory; "
              f"the 10k-event night {last[night]['seconds'] / first[night]['seconds']:.2f}x the time")
        for a, b in zip(summary, summary[1:]):
            print(f"  {a['n']:,} -> {b['n']:,}: full run {b[full]['seconds'] / a[full]['seconds']:.2f}x time, "
                  f"{b[full]['peak_mb'] / a[full]['peak_mb']:.2f}x memory")
    (work / "last_results.json").write_text(json.dumps(summary, indent=1))


def _measure_size(n: int, args, work: Path) -> list[dict]:
    """Every approach's row for N events: the naive script, a full run, a pre-send check, the floors, two nights."""
    exports = exports_for(n)
    results = []
    if not args.skip_naive and n <= args.naive_max:
        results.append(row("a naive script", measure([PYTHON, str(BENCH / "naive.py"), str(exports), str(work / "naive.duckdb")]), n))
        (work / "naive.duckdb").unlink(missing_ok=True)
    warehouse = work / f"consent_{n}.duckdb"
    for stale in work.glob(f"consent_{n}.duckdb*"):
        stale.unlink()
    shutil.rmtree(work / "data_docs", ignore_errors=True)
    folder = exports_folder(exports, work)
    full = measure([CONSENT, "run", "--exports", str(folder), "--warehouse", str(warehouse), "--as-of", AS_OF,
                    "--workers", str(args.workers)])
    results.append(row("b consent run (full)", full, n))
    if n <= args.audience_max:
        audience = audience_for(warehouse, n, work)
        results.append(row("f consent check (N-row audience)", measure(
            [CONSENT, "check", str(audience), "--purpose", "marketing", "--warehouse", str(warehouse), "--at", AS_OF,
             "--out", str(work / f"audience_{n}.decisions.csv")]), n))
    results.append(row("c duckdb scan floor", measure([PYTHON, "-c", FLOOR, str(exports)]), n))
    # What any run of this stack pays before reading a byte: importing Dagster, GX, Polars, DuckDB.
    results.append(row("e start-up (imports only)", measure([PYTHON, "-c", "import pipelines.definitions"]), n))
    results.append(row("g Dagster floor (no-op steps)", measure([PYTHON, str(BENCH / "dagster_floor.py"), "--child"]), n))
    add_night(folder, work)
    run_night = [CONSENT, "run", "--exports", str(folder), "--warehouse", str(warehouse), "--as-of", AS_OF,
                 "--workers", str(args.workers)]
    results.append(row("d night: 10k new events", measure(run_night), NIGHT_EVENTS))
    results.append(row("h night: nothing new", measure(run_night), 1))
    # Every file copied anew (an exporter that rewrites its files): new times, so each is read and
    # hashed again to be known unchanged, and nothing is new.
    copied = work / "night2_copied"
    shutil.rmtree(copied, ignore_errors=True)
    shutil.copytree(folder, copied)
    run_copied = [CONSENT, "run", "--exports", str(copied), "--warehouse", str(warehouse), "--as-of", AS_OF,
                  "--workers", str(args.workers)]
    results.append(row("i nothing new, files copied", measure(run_copied), 1))
    shutil.rmtree(copied)
    return results


def _print_size(n: int, results: list[dict]) -> None:
    print(f"\nN = {n:,} events")
    print(f"{'approach':28} {'seconds':>9} {'rows/s':>11} {'peak MB':>9}")
    for r in results:
        print(f"{r['approach']:28} {r['seconds']:9.1f} {r['rows_per_s']:11,.0f} {r['peak_mb']:9.0f}")
    by = {r["approach"][0]: r for r in results}
    if "a" in by:
        print(f"naive / consent run: {by['a']['seconds'] / by['b']['seconds']:.1f}x faster, "
              f"peak memory {by['b']['peak_mb'] / by['a']['peak_mb']:.2f}x of naive")
    print(f"consent run / floor: {by['b']['seconds'] / by['c']['seconds']:.1f}x; "
          f"start-up alone: {by['e']['seconds']:.1f} s")
    print(f"10k-event night / full run: {by['d']['seconds'] / by['b']['seconds']:.1%}; "
          f"nothing-new night / start-up: {by['h']['seconds'] / by['e']['seconds']:.2f}x "
          f"(Dagster's floor / start-up: {by['g']['seconds'] / by['e']['seconds']:.2f}x)")
    when = by["b"].get("peak_when")
    if when:
        print(f"full run's peak at {when['at_s']} s, per process {when['processes_mb']} MB, after: {when['during']}")
    if "f" in by:
        print(f"pre-send check of {n:,} audience rows: {by['f']['seconds']:.1f} s")


if __name__ == "__main__":
    main()
