"""Where a command's memory goes: its resident memory (with its children) sampled twice a second,
next to the progress lines it prints on stderr. With `--samples FILE`, every sample is written there
too (seconds, MB), to place a peak that falls after the last progress line. With `--own`, the
command's own process only, not its workers (the peak `bench/compare_outputs.py` reports is the
largest of one process; forked workers share pages with it, which a sum counts twice).

    .venv/bin/python bench/memory_timeline.py [--samples FILE] [--own] -- .venv/bin/consent run --exports bench/data/events_5000000 ...

Prints one line per change of progress step: the step, when it started, and the peak resident
memory (MB) while it was the latest line; then the overall peak. Linux only (reads /proc).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time


def tree_rss_mb(pid: int, own: bool = False) -> float:
    """Resident memory of `pid` and its descendants (`own`: of `pid` alone), in MB."""
    children: dict[int, list[int]] = {}
    for entry in ([] if own else os.listdir("/proc")):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> None:
    command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    options = sys.argv[1:sys.argv.index("--")] if "--" in sys.argv else []
    if not command or command[0].startswith("-") or {"-h", "--help"} & set(options) or (
            "--samples" in options and options.index("--samples") + 1 >= len(options)):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if {"-h", "--help"} & set(sys.argv) else 2)
    samples = open(options[options.index("--samples") + 1], "w") if "--samples" in options else None
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    phase = {"name": "start-up", "since": 0.0, "peak": 0.0}
    phases: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def sample() -> None:
        while process.poll() is None:
            rss = tree_rss_mb(process.pid, own="--own" in options)
            if samples:
                samples.write(f"{time.perf_counter() - started:.1f} {rss:.0f}\n")
            with lock:
                phase["peak"] = max(phase["peak"], rss)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in process.stderr:
        # "STEP: COUNTER: 5/9 ..." while a step counts, "STEP: done in 1.2 s" when it ends
        parts = line.strip().split(": ")
        step = (f"{parts[0]} / {parts[1]}" if len(parts) > 2 else parts[0])[:60]
        with lock:
            if step and step != phase["name"]:
                phases.append((phase["name"], phase["since"], phase["peak"]))
                phase.update(name=step, since=time.perf_counter() - started, peak=0.0)
    process.wait()
    sampler.join()
    phases.append((phase["name"], phase["since"], phase["peak"]))
    print(f"{'from s':>7} {'peak MB':>8}  step")
    for name, since, peak in phases:
        print(f"{since:7.1f} {peak:8.0f}  {name}")
    print(f"total {time.perf_counter() - started:.1f} s, peak {max(p for _, _, p in phases):.0f} MB, exit {process.returncode}")


if __name__ == "__main__":
    main()
