"""Phone normalisation with and without the column-wise fast path, side by side, in one run.

    .venv/bin/python bench/phones.py --events 100000

Collects every (raw, region hint) pair the pipeline's readers give for the exports of
bench/data/events_N (bench/generate.py, seed 1, generated once and reused, as bench/benchmark.py
does), or of `--exports`, then runs `normalise_frame` on the same pairs once with every spelling
parsed by phonenumbers (`COLUMNAR_FAST_PATH = False`, the reference) and once with the fast path.
Prints the seconds of each and the share of spellings the fast path decided, and fails when the
two frames differ in any row or column.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from consent.domain import phones  # noqa: E402
from consent.reading.channels.csv_export import read_csv_parts  # noqa: E402
from consent.reading.channels.whatsapp_webhook import read_webhook_parts  # noqa: E402
from consent.reading.columnar import phone_pairs  # noqa: E402
from consent.domain.events import FileContext  # noqa: E402
from consent.domain.phones.columnar import _PRINTABLE, _spelling_keys, decide  # noqa: E402
from consent.domain.policy import load_channels, load_policy  # noqa: E402


def exports_for(events: int) -> Path:
    folder = BENCH / "data" / f"events_{events}"
    if not folder.exists():
        subprocess.run([sys.executable, str(BENCH / "generate.py"), str(folder), "--events", str(events), "--seed", "1"], check=True)
    return folder


def pairs_of(exports: Path) -> list[tuple[str, str | None]]:
    """Every pair the readers give, distinct and sorted as `PhoneBook.of_pairs` passes them."""
    policy, channels = load_policy(None), load_channels(exports)
    pairs: set[tuple[str, str | None]] = set()
    for path in sorted(p for p in exports.rglob("*") if p.is_file() and p.suffix in {".csv", ".json", ".jsonl"}):
        channel = path.parent.name
        ctx = FileContext(channel=channel, source_file=f"{channel}/{path.name}", file_hash="bench")
        data = path.read_bytes()
        if path.suffix == ".csv":
            parts = read_csv_parts(data, ctx, channels.for_channel(channel))
        else:
            parts = read_webhook_parts(data, ctx, policy, path.suffix)
        for part in parts:
            pairs |= phone_pairs(part, ctx)
    return sorted(pairs, key=lambda p: (p[0], p[1] or ""))


def timed(pairs, fast: bool, workers: int):
    phones.COLUMNAR_FAST_PATH = fast
    started = time.perf_counter()
    frame = phones.normalise_frame(pairs, workers=workers)
    return frame, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--exports", type=Path, help="an exports folder instead of bench/data/events_N")
    parser.add_argument("--workers", type=int, default=1, help="processes for the spellings phonenumbers parses")
    args = parser.parse_args()
    pairs = pairs_of(args.exports or exports_for(args.events))
    keys = {(k[0], k[1] or "") for raw, hint in pairs if (k := phones.parse_key(raw, hint)) is not None}
    decided, _ = decide(pl.DataFrame(sorted(keys), schema={"key_raw": pl.Utf8, "key_hint": pl.Utf8}, orient="row"))
    frame = pl.DataFrame(pairs, schema={"phone_raw": pl.Utf8, "hint": pl.Utf8}, orient="row")
    printable = pl.col("phone_raw").str.contains(_PRINTABLE) & pl.col("hint").fill_null("").str.contains(_PRINTABLE)
    spelled = _spelling_keys(frame.filter(printable))
    refused = spelled.filter(pl.col("refusal").is_not_null()).height
    print(f"{len(pairs):,} pairs, {len(keys):,} distinct spellings; the fast path decides {decided.height:,} "
          f"({decided.height / max(1, len(keys)):.1%}), {decided['phone_e164'].is_not_null().sum():,} of them valid; "
          f"{refused:,} pairs refused in columns before parsing (empty, spreadsheet float, letters); "
          f"{frame.height - spelled.height:,} pairs not printable ASCII, keyed in Python")
    # Warm both paths (metadata loading, regex caches) on a sample, so neither pays it in the timing.
    for fast in (False, True):
        timed(pairs[:: max(1, len(pairs) // 2000)], fast, 1)
    reference, slow_s = timed(pairs, False, args.workers)
    fast_frame, fast_s = timed(pairs, True, args.workers)
    phones.COLUMNAR_FAST_PATH = True
    if not reference.equals(fast_frame):
        differs = pl.DataFrame([reference[c].ne_missing(fast_frame[c]) for c in reference.columns]).select(pl.any_horizontal(pl.all())).to_series()
        print("DIFFERENT OUTPUTS (reference, then fast path):", reference.filter(differs).head(20),
              fast_frame.filter(differs).head(20), sep="\n", file=sys.stderr)
        return 1
    print(f"normalise_frame, workers={args.workers}: phonenumbers only {slow_s:.2f} s, "
          f"with the fast path {fast_s:.2f} s ({slow_s / fast_s:.1f}x); outputs identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
