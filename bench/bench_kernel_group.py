"""What a kernel's own memory group costs: sentinel kernels with and without ``--memory-limit``, alternated.

Both kernels are the sentinel kernelspec (``kernelspec_dict``); one also carries
``KERNEL_SENTINEL_GROUP_LIMIT`` (what ``kernel-sentinel install --memory-limit 512M`` writes), so its
supervisor makes the group before the fork, the kernel enters it, and the group is removed at the end.
Each runs in a 1 GiB group of its own made here. Measured per pair (plain, grouped, grouped, plain, ...):
ready time (start to ``kernel_info`` reply), a trivial cell's round trip, graceful shutdown
(``shutdown_kernel(now=False)``) until the group is gone; the figures are medians of per-pair differences.

    .venv/bin/python bench/bench_kernel_group.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kernel_harness import KernelHarness  # noqa: E402

from kernel_sentinel.autopsy.kernel_group import own_group  # noqa: E402
from kernel_sentinel.kernelspec import kernelspec_dict  # noqa: E402

GiB = 1 << 30


def one(grouped: bool) -> dict[str, float]:
    """Start, run a trivial cell, shut down one sentinel kernel; return its timings in seconds."""
    spec = kernelspec_dict(memory_limit="512M" if grouped else None)
    h = KernelHarness(Path(tempfile.mkdtemp(prefix="ks-bench-")), limit_bytes=GiB, kernelspec=spec)
    t0 = time.perf_counter()
    h.start()
    ready = time.perf_counter() - t0
    group = own_group(h.kernel_pid)
    if grouped != (group is not None):
        raise SystemExit(f"expected grouped={grouped}, the kernel's group is {group}")
    cells = []
    for _ in range(5):
        t = time.perf_counter()
        assert h.run("1 + 1").ok
        cells.append(time.perf_counter() - t)
    t = time.perf_counter()
    h.km.shutdown_kernel(now=False)
    while group is not None and os.path.exists(group.directory) and time.perf_counter() - t < 30:
        time.sleep(0.005)
    shutdown = time.perf_counter() - t
    h.close()
    return {"ready": ready, "cell": statistics.median(cells), "shutdown": shutdown}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    diffs: dict[str, list[float]] = {"ready": [], "cell": [], "shutdown": []}
    plain_all: dict[str, list[float]] = {"ready": [], "cell": [], "shutdown": []}
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {g: one(g) for g in order}
        for key in diffs:
            diffs[key].append(got[True][key] - got[False][key])
            plain_all[key].append(got[False][key])
    for key in diffs:
        print(
            f"{key:9s} without a group: median {statistics.median(plain_all[key]) * 1e3:7.1f} ms; "
            f"with its own group: {statistics.median(diffs[key]) * 1e3:+7.1f} ms (median of {args.pairs} pairs)"
        )


if __name__ == "__main__":
    main()
