"""How much of a memory group a guarded kernel lets the user use, against a stock kernel in the same group.

Two workloads, each run in a stock kernel and a sentinel kernel (guard on, checkpoints off), alternated,
each kernel in its own fresh memory cgroup of the same size (at most 1 GiB: the project's safety rule):

- one big allocation: ``np.ones`` of growing size (16 MiB steps, from 60% of the group, then refined to
  2 MiB), each touched and dropped; usable = the largest that completed (stock: before the OOM kill;
  sentinel: before its MemoryBudgetError);
- gradual growth: a loop appending 4 MiB arrays, writing its count to a file after each; usable = what it
  held when it was stopped (stock: killed, the file says how far it got). At full speed (1-3.5 GB/s here) the
  guard's interrupt line sits below the fence by the growth its watchdog's reaction lets through, by design: the
  stopped loop's error path needs that room;
- slow growth: the same loop with a 10 ms pause after each array (~300 MB/s, a loop that reads or computes each
  piece): the lead is small, and the loop may use nearly all the budget.

Run: ``.venv/bin/python bench/bench_usable_memory.py [--limit 1G] [--rounds 2]``. Prints one line per
run and the ratio sentinel/stock per workload (medians). Needs a writable cgroup memory controller.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kernel_harness import KernelHarness, compile_sentinel  # noqa: E402

from group_args import parse_group_args  # noqa: E402

from kernel_sentinel.sizes import format_bytes  # noqa: E402

MiB = 1 << 20
GUARDED = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
}
ENV = {"KERNEL_SENTINEL_CHECKPOINT": "0"}


def _kernel(kind: str, limit: int) -> KernelHarness:
    workdir = Path(tempfile.mkdtemp(prefix="ks-bench-"))
    env = {**ENV, "KERNEL_SENTINEL_HOME": str(workdir / "home")}
    h = KernelHarness(workdir, limit_bytes=limit, kernelspec=GUARDED if kind == "sentinel" else None, env=env)
    return h.start()


def one_big_allocation(kind: str, limit: int) -> int:
    """Return the largest single touched allocation that completed, in bytes, to within 2 MiB.

    16 MiB steps from 60% of the group, then halving the step between the last size that completed and
    the first that did not; a kernel that died (stock) is replaced by a fresh one for the next try.
    """
    h = _kernel(kind, limit)
    try:
        assert h.run("import numpy as np").ok

        def fits(size: int) -> bool:
            nonlocal h
            if not h.alive:
                h.close()
                h = _kernel(kind, limit)
                assert h.run("import numpy as np").ok
            return h.run(f"a = np.ones({size // 8}); a[-1] = 2.0; del a", timeout=120).ok

        best = 0
        size = int(limit * 0.6) // (16 * MiB) * 16 * MiB
        while size < limit and fits(size):
            best = size
            size += 16 * MiB
        step = 8 * MiB
        while step >= 2 * MiB and best:
            if best + step < limit and fits(best + step):
                best += step
            step //= 2
        return best
    finally:
        h.close()


def gradual_growth(kind: str, limit: int, pause: float = 0.0) -> int:
    """Return how much a loop of 4 MiB appends (``pause`` seconds after each) held when it was stopped, in bytes."""
    h = _kernel(kind, limit)
    progress = h.workdir / "progress"
    try:
        assert h.run("import numpy as np, os, time").ok
        h.run(
            "parts = []\n"
            f"fd = os.open({str(progress)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
            "while True:\n"
            "    parts.append(np.ones(4 * 2**20 // 8))\n"
            "    os.pwrite(fd, b'%12d' % len(parts), 0)\n"
            + (f"    time.sleep({pause})\n" if pause else ""),
            timeout=600,
        )
        text = progress.read_text().strip() if progress.exists() else "0"
        return int(text or 0) * 4 * MiB
    finally:
        h.close()


def slow_growth(kind: str, limit: int) -> int:
    """Return how much the loop of 4 MiB appends, pausing 10 ms after each, held when it was stopped, in bytes."""
    return gradual_growth(kind, limit, pause=0.01)


WORKLOADS = (one_big_allocation, gradual_growth, slow_growth)


def main(argv: list[str] | None = None) -> int:
    parsed = parse_group_args(__doc__, 2, argv)
    if parsed is None:
        return 64
    args, limit = parsed
    compile_sentinel()
    results: dict[tuple[str, str], list[int]] = {}
    for r in range(args.rounds):
        for workload in WORKLOADS:
            kinds = ("stock", "sentinel") if r % 2 == 0 else ("sentinel", "stock")
            for kind in kinds:
                got = workload(kind, limit)
                results.setdefault((workload.__name__, kind), []).append(got)
                print(f"round {r}: {workload.__name__:20s} {kind:8s} {format_bytes(got):>10s} "
                      f"({got / limit:.1%} of the group)", flush=True)
    for name in (w.__name__ for w in WORKLOADS):
        stock = statistics.median(results[(name, "stock")])
        guarded = statistics.median(results[(name, "sentinel")])
        print(f"{name}: sentinel {format_bytes(int(guarded))} / stock {format_bytes(int(stock))} "
              f"= {guarded / stock:.1%} (group {format_bytes(limit)}, median of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
