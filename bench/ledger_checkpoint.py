"""What a night's checkpoint pays for the ledger's row groups: nights of appends, then a checkpoint each.

    .venv/bin/python bench/ledger_checkpoint.py --sizes 100000 5000000 --nights 4

DuckDB (1.4) appends a night's rows to the ledger as a new row group and, at the checkpoint that
follows, merges adjacent row groups that fit into fewer ("vacuum"), rewriting every column of the
rows merged. Which ones it merges depends on the row groups the earlier runs left, not on the
night. For each N this copies the warehouse `bench/benchmark.py` left (`bench/work/consent_N.duckdb`,
its full run and its 10k-event night in), then, `--nights` times in one process, appends 10,000
ledger rows (copies of existing rows: the ledger has no key) and times the checkpoint, printing
the sizes of the last row groups before and after. The copy is deleted at the end. Nothing of the
pipeline runs: this isolates the storage's share of a night's closing checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
ROWS = 10_000


def tail(con: duckdb.DuckDBPyConnection, n: int = 5) -> list[int]:
    """The row counts of the ledger's last `n` row groups (the first column's data segments, summed)."""
    groups = con.execute(
        "SELECT row_group_id, sum(count) FROM pragma_storage_info('consent_events') "
        "WHERE column_path = '[0]' GROUP BY ALL ORDER BY row_group_id"
    ).fetchall()
    return [int(rows) for _, rows in groups][-n:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 5_000_000])
    parser.add_argument("--nights", type=int, default=4)
    args = parser.parse_args()
    for n in args.sizes:
        source = WORK / f"consent_{n}.duckdb"
        if not source.exists():
            raise SystemExit(f"no warehouse for N={n}: run bench/benchmark.py --sizes {n} first")
        copy = WORK / f"ledger_checkpoint_{n}.duckdb"
        shutil.copy(source, copy)
        try:
            con = duckdb.connect(str(copy))
            total = con.execute("SELECT count(*) FROM consent_events").fetchone()[0]
            print(f"N={n:,}: ledger {total:,} rows; last row groups {tail(con)}")
            for night in range(1, args.nights + 1):
                con.execute(f"INSERT INTO consent_events SELECT * FROM consent_events LIMIT {ROWS}")
                started = time.perf_counter()
                con.execute("CHECKPOINT")
                seconds = time.perf_counter() - started
                print(f"  night {night}: {ROWS:,} rows appended, checkpoint {seconds:.2f} s; "
                      f"last row groups {tail(con)}")
            con.close()
        finally:
            copy.unlink(missing_ok=True)
            Path(f"{copy}.wal").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
