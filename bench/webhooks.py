"""Webhook files read and built by the row reader and by the column reader, side by side, in one run.

    .venv/bin/python bench/webhooks.py --exports bench/data/events_1000000

Reads every webhook file of the exports' `whatsapp` folder as a run stages it (in parts, numbers
normalised, events built), once with every item read row by row (`columnar=False`: the reference)
and once with ordinary items in columns, alternating `--rounds` times in this one process, with the
garbage collector paused as a run pauses it (`consent.storage.bulk`). Prints the read and build seconds of
each round, and fails when the two give different events, quarantine, skipped items, sends or links.
With `--duckdb`, also times DuckDB `read_json` + `unnest` flattening the same files' messages and
statuses (what a DuckDB reader would start from; it gives no rows the pipeline could use as such).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent.storage.bulk import bulk_phase  # noqa: E402
from consent.reading.channels import whatsapp_webhook  # noqa: E402
from consent.reading.columnar import build_file, phone_pairs  # noqa: E402
from consent.domain.events import FileContext  # noqa: E402
from consent.domain.phones import PhoneBook  # noqa: E402
from consent.domain.policy import load_policy  # noqa: E402

FRAMES = ("events", "quarantine", "skipped", "sends", "links")


def one_round(files: list[Path], columnar: bool) -> tuple[float, float, str, int]:
    policy = load_policy(None)
    read_s = build_s = 0.0
    digest = hashlib.sha256()
    rows = 0
    for path in files:
        data = path.read_bytes()
        ctx = FileContext(channel="whatsapp", source_file=path.name, file_hash="bench")
        started = time.perf_counter()
        parts = list(whatsapp_webhook.read_webhook_parts(data, ctx, policy, path.suffix, columnar=columnar))
        read_s += time.perf_counter() - started
        book = PhoneBook.of_pairs({pair for part in parts for pair in phone_pairs(part, ctx)}, workers=2)
        started = time.perf_counter()
        built = [build_file(part, ctx, book, policy.purposes, datetime(2026, 1, 1), "bench") for part in parts]
        build_s += time.perf_counter() - started
        for batch in built:
            for name in FRAMES:
                frame = getattr(batch, name)
                rows += frame.height if name != "links" else 0
                digest.update(frame.write_ndjson().encode())
    return read_s, build_s, digest.hexdigest()[:16], rows


def duckdb_flatten(files: list[Path]) -> None:
    import duckdb

    con = duckdb.connect()
    for path in files:
        started = time.perf_counter()
        counts = []
        for key in ("messages", "statuses"):
            counts.append(con.execute(f"""
                WITH p AS (SELECT * FROM read_json(?, sample_size = -1, maximum_object_size = 1000000000)),
                     e AS (SELECT unnest(entry) AS e FROM p),
                     c AS (SELECT unnest(e.changes) AS c FROM e)
                SELECT count(*) FROM (SELECT unnest(c.value.{key}) FROM c WHERE c.value.{key} IS NOT NULL)
            """, [str(path)]).fetchone()[0])
        print(f"duckdb read_json + unnest {path.name}: {counts[0]:,} messages, {counts[1]:,} statuses, "
              f"{time.perf_counter() - started:.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, required=True, help="exports folder with a whatsapp/ subfolder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duckdb", action="store_true", help="also time DuckDB read_json + unnest")
    args = parser.parse_args()
    files = sorted(p for p in (args.exports / "whatsapp").glob("*.json*"))
    if not files:
        print(f"no webhook files in {args.exports / 'whatsapp'}", file=sys.stderr)
        return 2
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB", flush=True)
    results = {}
    with bulk_phase():
        for _ in range(args.rounds):
            for columnar in (False, True):
                read_s, build_s, digest, rows = one_round(files, columnar)
                name = "columns" if columnar else "rows (reference)"
                print(f"{name:17} read {read_s:6.2f} s  build {build_s:6.2f} s  total {read_s + build_s:6.2f} s  "
                      f"{rows:,} rows  checksum {digest}", flush=True)
                results.setdefault(digest, []).append(name)
    if args.duckdb:
        duckdb_flatten(files)
    if len(results) != 1:
        print("DIFFERENT: the column reader's build does not equal the reference", file=sys.stderr)
        return 1
    print("same events, quarantine, skipped items, sends and links")
    return 0


if __name__ == "__main__":
    sys.exit(main())
