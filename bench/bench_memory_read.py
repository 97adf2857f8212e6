"""How cheap is one memory reading? The watchdog takes one every ~10 ms, so it must cost microseconds.

Compares, interleaved in one run (this machine is shared and noisy): ``MemoryReader.quick()`` (the
watchdog's per-tick path), a reused ``MemoryReader.snapshot()``, a fresh ``snapshot()`` (the CLI's path), and psutil's ``memory_info()`` (RSS only,
the usual baseline). Prints microseconds per call (median of rounds) and ratios to psutil.

    .venv/bin/python bench/bench_memory_read.py [--rounds 15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psutil

from kernel_sentinel.memory import MemoryReader, snapshot


def _per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    reader = MemoryReader()
    proc = psutil.Process()
    cases = {
        "MemoryReader.quick() (watchdog tick)": reader.quick,
        "MemoryReader.snapshot() (reused)": reader.snapshot,
        "snapshot() (fresh reader)": snapshot,
        "psutil memory_info() (RSS only)": proc.memory_info,
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():  # interleaved, so noise hits every case alike
            timings[name].append(_per_call(fn, args.calls if "fresh" not in name else args.calls // 10))
    base = statistics.median(timings["psutil memory_info() (RSS only)"])
    snap = reader.snapshot()
    print(f"budget source on this machine: {snap.source}; cgroup: {snap.cgroup.path if snap.cgroup else None}")
    print(f"{'case':38} {'us/call':>9} {'x psutil':>9}")
    for name, values in timings.items():
        med = statistics.median(values)
        print(f"{name:38} {med:9.1f} {med / base:9.2f}")
    tick = statistics.median(timings["MemoryReader.quick() (watchdog tick)"])
    print(f"watchdog reading cost at a 10 ms tick: {tick / 10_000 * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
