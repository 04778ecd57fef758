"""Same exports, two versions of the pipeline: do they decide the same?

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/compare_outputs.py --baseline /tmp/baseline --events 100000
    .venv/bin/python bench/compare_outputs.py --baseline /tmp/baseline --events 1000000 --night-events 10000

Generates synthetic exports (bench/generate.py, reused from bench/data/N), runs
`consent run` of the baseline checkout and of this one, each in a fresh
process with this `.venv`'s Python (the baseline's modules are imported from
its own folder), times both (with the peak memory: the largest RSS of the run's
process or one of its workers, as bench/benchmark.py measures it), and prints a checksum per table of what they
decided: events, quarantine, statuses, history, violations, and the marts.
With --night-events K, both then run the next night (the same exports plus K
new events, seed 2) on their warehouses, and the checksums are taken after
that incremental night. Run ids and wall-clock times are left out. Where a
checksum differs it prints how many rows are only in each version; exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from benchmark import MEASURE  # noqa: E402 (bench/ is a folder of scripts, not a package)

AS_OF = "2026-11-26T00:00:00Z"
TABLES = {
    "consent_events": "SELECT * EXCLUDE (run_id, ingested_at) FROM consent_events",
    "quarantine": "SELECT * EXCLUDE (run_id, ingested_at) FROM quarantine",
    "skipped_items": "SELECT * EXCLUDE (run_id, ingested_at) FROM skipped_items",
    "consent_status": "SELECT * FROM consent_status",
    "consent_status_history": "SELECT * FROM consent_status_history",
    "consent_violations": "SELECT * FROM consent_violations",
    "consent_daily": "SELECT * FROM consent_daily",
    "consent_coverage": "SELECT * FROM consent_coverage",
    "violations_summary": "SELECT * FROM violations_summary",
    "quarantine_summary": "SELECT * FROM quarantine_summary",
    "notice_usage": "SELECT * FROM notice_usage",
    "send_audit": "SELECT * FROM send_audit",
    "opt_out_timeliness": "SELECT * EXCLUDE (published_run) FROM opt_out_timeliness",
    "consent_renewals": "SELECT * FROM consent_renewals",
}


def columns(warehouse: Path) -> dict[str, list[str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return columns_on(con)
    finally:
        con.close()


def columns_on(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    return {name: [r[0] for r in con.execute(f"DESCRIBE {sql}").fetchall()] for name, sql in TABLES.items()}


def checksums(warehouse: Path, shared: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return checksums_on(con, shared)
    finally:
        con.close()


def checksums_on(con: duckdb.DuckDBPyConnection, shared: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Rows and a checksum per table, over the columns both versions have (a newer schema adds columns).
    The checksum sums the rows' hashes: any order, and a duplicated row counts twice (an xor of the
    hashes would cancel two equal rows)."""
    return {
        name: con.execute(
            f"SELECT count(*), coalesce(sum(hash(({', '.join(shared[name])}))::HUGEINT), 0)::VARCHAR FROM ({sql}) AS t"
        ).fetchone()
        for name, sql in TABLES.items()
    }


def differing_rows(warehouses: dict[str, Path], name: str, shared: dict[str, list[str]]) -> tuple[int, int]:
    """Rows of table `name` only in the baseline, and only in this version (as multisets)."""
    con = duckdb.connect()
    try:
        for label, warehouse in warehouses.items():
            con.execute(f"ATTACH '{warehouse}' AS {label} (READ_ONLY)")
        side = {label: f"SELECT {', '.join(shared[name])} FROM ({_in(TABLES[name], label)})" for label in warehouses}
        return tuple(
            con.execute(f"SELECT count(*) FROM ({side[a]} EXCEPT ALL {side[b]})").fetchone()[0]
            for a, b in (("baseline", "this"), ("this", "baseline"))
        )
    finally:
        con.close()


def _in(sql: str, catalog: str) -> str:
    """A TABLES query reading from the attached `catalog`."""
    return re.sub(r"\bFROM (\w+)", lambda m: f"FROM {catalog}.{m.group(1)}", sql, count=1)


def run(checkout: Path, exports: Path, warehouse: Path) -> str:
    """Run `consent run` of `checkout`; its seconds and peak memory, as text."""
    result = measured_run(checkout, exports, str(warehouse), salt="compare-outputs")
    return f"{result['wall']:.1f} s, peak {result['peak_mb']:,.0f} MB"


def measured_run(checkout: Path, exports: Path, warehouse: str, *extra: str, salt: str) -> dict:
    """`consent run` of `checkout` in a fresh process: wall seconds, peak MB (bench/benchmark.py's MEASURE).
    One salt for every warehouse compared: the marts' contact and recipient hashes are then comparable."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "cli.main", "run", "--exports", str(exports),
         "--warehouse", warehouse, "--as-of", AS_OF, *extra],
        cwd=checkout, capture_output=True, text=True, env={**os.environ, "CONSENT_HASH_SALT": salt},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] not in (0, 1):  # 1: an ERROR check failed (the generated exports have bad rows)
        sys.exit(f"{checkout}: consent run exited {result['code']}\n{result['stderr']}")
    return result


def night_exports(exports: Path, work: Path, events: int) -> Path:
    """The exports plus `events` new events in new files (bench/generate.py, seed 2)."""
    import shutil

    night, extra = work / "night", work / "night_extra"
    for folder in (night, extra):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(exports, night, ignore=shutil.ignore_patterns(".complete"))
    subprocess.run([sys.executable, str(BENCH / "generate.py"), str(extra), "--events", str(events), "--seed", "2"],
                   check=True, stdout=subprocess.DEVNULL)
    for channel in (p for p in extra.iterdir() if p.is_dir() and p.name != "notices"):
        for file in channel.iterdir():
            shutil.copy(file, night / channel.name / f"night_{file.name}")
    return night


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--night-events", type=int, default=0, help="then an incremental night with this many new events")
    parser.add_argument("--work", type=Path, default=BENCH / "work" / "compare")
    args = parser.parse_args()
    exports = BENCH / "data" / f"events_{args.events}"
    if not (exports / ".complete").exists():
        subprocess.run([sys.executable, str(BENCH / "generate.py"), str(exports), "--events", str(args.events),
                        "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
        (exports / ".complete").write_text("")
    night = night_exports(exports, args.work, args.night_events) if args.night_events else None
    results, warehouses = {}, {}
    for label, checkout in (("baseline", args.baseline.resolve()), ("this", REPO)):
        # Absolute: each version runs in its own folder.
        warehouse = warehouses[label] = args.work.resolve() / label / "consent.duckdb"
        for old in warehouse.parent.glob("*") if warehouse.parent.exists() else []:
            if old.is_file():
                old.unlink()
        print(f"{label}: {checkout} ({run(checkout, exports, warehouse)})", flush=True)
        if night is not None:
            print(f"{label}: night of {args.night_events:,} new events ({run(checkout, night, warehouse)})", flush=True)
    old, new = columns(warehouses["baseline"]), columns(warehouses["this"])
    shared = {name: [c for c in old[name] if c in new[name]] for name in TABLES}
    for label, warehouse in warehouses.items():
        results[label] = checksums(warehouse, shared)
    differ = 0
    print(f"{'table':<24}{'rows':>10}  same")
    for name in TABLES:
        same = results["baseline"][name] == results["this"][name]
        differ += not same
        if same:
            print(f"{name:<24}{results['this'][name][0]:>10}  yes")
            continue
        only_old, only_new = differing_rows(warehouses, name, shared)
        print(f"{name:<24}{results['this'][name][0]:>10}  NO: {only_old} rows only in the baseline, {only_new} only in this")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
