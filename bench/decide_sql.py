"""The reconcile step with histories decided in SQL and without: seconds, and contacts per path.

    .venv/bin/python bench/decide_sql.py --events 1000000

Generates (or reuses) bench/data/events_N (bench/generate.py, seed 1) and runs `consent run` on it
twice, each in a fresh process into a fresh warehouse: once with the SQL path
(`consent.run.decide_sql.SQL_DECISIONS = True`, the default) and once with the state machine
alone. Prints, per run, the wall time and peak memory (as bench/benchmark.py measures them), the
reconcile step's seconds and the contacts each path decided (`runs.step_seconds`), then whether
the two warehouses hold the same statuses, history and violations (checksums as in
bench/compare_outputs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from benchmark import MEASURE, exports_for  # noqa: E402 (bench/ is a folder of scripts, not a package)
from compare_outputs import AS_OF  # noqa: E402

# `consent run` with the switch set first (the job runs in this process: dg.in_process_executor).
RUN = ("import sys\nfrom consent.run import decide_sql\ndecide_sql.SQL_DECISIONS = sys.argv[1] == 'sql'\n"
       "from cli.main import main\nsys.exit(main(sys.argv[2:]))\n")
TABLES = ("consent_status", "consent_status_history", "consent_violations")


def run(path: str, exports: Path, warehouse: Path) -> dict:
    for old in warehouse.parent.glob("*") if warehouse.parent.exists() else []:
        if old.is_file():
            old.unlink()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-c", RUN, path, "run", "--exports", str(exports),
         "--warehouse", str(warehouse), "--as-of", AS_OF],
        capture_output=True, text=True, env={**os.environ, "CONSENT_HASH_SALT": "decide-sql"},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] not in (0, 1):  # 1: an ERROR check failed (the generated exports have bad rows)
        sys.exit(f"consent run ({path}) exited {result['code']}\n{result['stderr']}")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        seconds = json.loads(con.execute("SELECT step_seconds FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0])
        sums = {t: con.execute(f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM {t} AS t").fetchone()
                for t in TABLES}
    finally:
        con.close()
    return {"wall": result["wall"], "peak_mb": result["peak_mb"], "seconds": seconds, "sums": sums}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=BENCH / "work" / "decide_sql")
    args = parser.parse_args()
    exports = exports_for(args.events)
    results = {path: run(path, exports, args.work.resolve() / path / "consent.duckdb") for path in ("sql", "python")}
    for path, r in results.items():
        s = r["seconds"]
        print(f"{path:<7} run {r['wall']:.1f} s, peak {r['peak_mb']:,.0f} MB; reconcile {s['reconcile']:.2f} s; "
              f"contacts decided in SQL {s.get('reconcile_sql_contacts', 0):,}, "
              f"by the state machine {s.get('reconcile_python_contacts', 0):,}")
    differ = 0
    for table in TABLES:
        same = results["sql"]["sums"][table] == results["python"]["sums"][table]
        differ += not same
        print(f"{table:<24}{results['sql']['sums'][table][0]:>10} rows  {'same' if same else 'DIFFERENT'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
