"""What a kernel's own memory group costs: sentinel kernels with and without ``--memory-limit``, alternated.

Both kernels are the sentinel kernelspec (``kernelspec_dict``); one also carries
``KERNEL_SENTINEL_GROUP_LIMIT`` (what ``kernel-sentinel install --memory-limit 512M`` writes), so its
supervisor makes the group before the fork, the kernel enters it, and the group is removed at the end.
Each runs in a 1 GiB group of its own made here. Measured per pair (plain, grouped, grouped, plain, ...):
ready time (start to ``kernel_info`` reply), a trivial cell's round trip, graceful shutdown
(``shutdown_kernel(now=False)``) until the group is gone; the figures are medians of per-pair differences.
Then, on their own: making and removing a group (``start_for_kernel`` / ``KernelLimit.finish``, 30 times in
a 1 GiB group made here), and how long a kernel's guard takes to follow a limit moved from outside.

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

from kernel_sentinel.autopsy.kernel_group import own_group, plan_group, start_for_kernel  # noqa: E402
from kernel_sentinel.confine import MemoryCgroup, confined_command  # noqa: E402
from kernel_sentinel.kernelspec import kernelspec_dict  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
GUARD = "__import__('kernel_sentinel.guard', fromlist=['x']).get_guard().budget_bytes"


def group_costs() -> None:
    """Print what making and removing a kernel's group costs, and how fast the guard follows a moved limit."""
    import subprocess

    parent = MemoryCgroup.create(GiB, prefix="ks-test")
    try:
        holder = subprocess.Popen(
            confined_command([sys.executable, "-c", "import sys; print(1, flush=True); sys.stdin.read()"], cgroup=parent),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        holder.stdout.readline()
        plan = plan_group(holder.pid)  # where the supervisor, standing in the parent group, would make them
        home = Path(tempfile.mkdtemp(prefix="ks-bench-"))
        make, remove = [], []
        for i in range(30):
            t = time.perf_counter()
            made = start_for_kernel(f"b{i}", home, {"KERNEL_SENTINEL_GROUP_LIMIT": "300M"}, plan=plan)
            make.append(time.perf_counter() - t)
            t = time.perf_counter()
            made.finish(home)
            remove.append(time.perf_counter() - t)
        holder.kill()
        holder.wait()
        print(
            f"group     make (sweep + decide + mkdir + limit) median {statistics.median(make) * 1e3:.2f} ms, "
            f"remove {statistics.median(remove) * 1e3:.2f} ms (30 times)"
        )
        spec = kernelspec_dict(memory_limit="300M")
        spec["argv"] = confined_command(spec["argv"], cgroup=parent)
        h = KernelHarness(Path(tempfile.mkdtemp(prefix="ks-bench-")), kernelspec=spec).start()
        group = own_group(h.kernel_pid)
        lags = []
        for target in (350, 320, 380, 300, 340):
            group.set_limit(target * MiB)
            t = time.monotonic()
            while h.value(GUARD) != target * MiB and time.monotonic() - t < 30:
                time.sleep(0.05)
            lags.append(time.monotonic() - t)
        t = time.perf_counter()
        assert h.run("%sentinel budget 400M").ok
        moved = time.perf_counter() - t
        h.close()
        print(f"follow    the guard follows a limit moved from outside after {[round(x, 2) for x in lags]} s; "
              f"`%sentinel budget 400M` round trip {moved * 1e3:.0f} ms")
    finally:
        parent.remove()


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
    group_costs()
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
