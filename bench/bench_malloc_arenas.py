"""What the launcher's one malloc arena costs threaded work: sentinel (one arena) against stock, side by side.

The sentinel launcher starts the kernel with ``GLIBC_TUNABLES=glibc.malloc.arena_max=1`` (``launch.one_arena_env``):
every thread then allocates from glibc's main heap under one lock. Work whose threads call glibc's malloc while
they run in parallel pays for that lock; this bench times such work in three kernels in same-size memory groups,
alternated round by round (the machine is shared and noisy): ``stock`` (glibc's arenas), ``sentinel`` (as users
get it: one arena) and ``sentinel-arenas`` (the sentinel with ``MALLOC_ARENA_MAX=8``, the user's own choice, which
the launcher keeps: the guard's own cost without the arena's). Each cell's wall time is the kernel's own
(``time.perf_counter`` around the work, in the cell); the figure per kernel is the median of the rounds, and the
ratio is against stock.

Cells (threads that malloc while they run, on 2 threads):
- ``forest``: scikit-learn's RandomForestClassifier(n_jobs=2): joblib's threads build trees in Cython without
  the GIL, allocating their nodes and sample buffers with malloc;
- ``hist_gb``: HistGradientBoostingClassifier, OpenMP threads with per-thread histograms;
- ``zlib_pool``: a pool of 2 threads compressing 1 MB pieces (zlib allocates its state per call, GIL released);
- ``small_lists``: a pool of 2 threads building lists of small objects (the GIL serialises them: the control).

Run: ``.venv/bin/python bench/bench_malloc_arenas.py --rounds 5`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kernel_harness import STOCK_ARGV, KernelHarness  # noqa: E402

from group_args import parse_group_args  # noqa: E402

SENTINEL_ARGV = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
KERNELS = {
    "stock": ({"argv": STOCK_ARGV, "display_name": "stock", "language": "python"}, {}),
    "sentinel": ({"argv": SENTINEL_ARGV, "display_name": "sentinel", "language": "python"}, {}),
    "sentinel-arenas": (
        {"argv": SENTINEL_ARGV, "display_name": "sentinel", "language": "python"},
        {"MALLOC_ARENA_MAX": "8"},
    ),
}
THREADS_ENV = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "KERNEL_SENTINEL_CHECKPOINT": "0"}

SETUP = """
import time, zlib, os
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from sklearn.ensemble import RandomForestClassifier, HistGradientBoostingClassifier
rng = np.random.default_rng(0)
X = rng.random((30_000, 20)); y = (X[:, 0] + X[:, 1] * rng.random(30_000) > 0.8).astype(int)
pieces = [rng.integers(0, 16, 1 << 20, dtype=np.uint8).tobytes() for _ in range(16)]
pool = ThreadPoolExecutor(2)
def lists(_):
    return len([[i, str(i)] for i in range(200_000)])
"""

CELLS = {
    "forest": "RandomForestClassifier(n_estimators=30, n_jobs=2, random_state=0).fit(X, y)",
    "hist_gb": "HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X, y)",
    "zlib_pool": "list(pool.map(lambda p: len(zlib.compress(p, 6)), pieces * 2))",
    "small_lists": "list(pool.map(lists, range(4)))",
}


def timed(h: KernelHarness, code: str) -> float:
    """Return the seconds the kernel spent running ``code`` (timed inside the cell, so no messaging counts)."""
    res = h.run(f"_t0 = time.perf_counter()\n{code}\nprint(time.perf_counter() - _t0)", timeout=600)
    if not res.ok:
        raise RuntimeError(f"cell failed: {res.text()[-500:]}")
    return float(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parsed = parse_group_args(__doc__, 5, argv)
    if parsed is None:
        return 64
    args, limit = parsed
    work = Path(tempfile.mkdtemp(prefix="bench-arenas-"))
    kernels: dict[str, KernelHarness] = {}
    times: dict[str, dict[str, list[float]]] = {k: {c: [] for c in CELLS} for k in KERNELS}
    try:
        for name, (spec, env) in KERNELS.items():
            (work / name).mkdir()
            h = KernelHarness(work / name, limit_bytes=limit, kernelspec=spec, env={**THREADS_ENV, **env}).start()
            kernels[name] = h
            res = h.run(SETUP, timeout=300)
            if not res.ok:
                raise RuntimeError(f"{name}: set-up failed: {res.text()[-500:]}")
            for code in CELLS.values():  # warm: imports, OpenMP's pool, the arenas' first growth
                timed(h, code)
        for r in range(args.rounds):
            order = list(KERNELS) if r % 2 == 0 else list(reversed(KERNELS))
            for cell, code in CELLS.items():
                for name in order:
                    times[name][cell].append(timed(kernels[name], code))
        for name, h in kernels.items():
            if not h.alive or h.oom_kills():
                raise RuntimeError(f"{name}: the kernel died or was OOM-killed")
    finally:
        for h in kernels.values():
            h.close()
    print(f"{args.rounds} rounds, {args.limit} groups; median seconds per cell, ratio to stock")
    print(f"{'cell':<12}" + "".join(f"{n:>24}" for n in KERNELS))
    for cell in CELLS:
        stock = statistics.median(times["stock"][cell])
        row = f"{cell:<12}"
        for name in KERNELS:
            med = statistics.median(times[name][cell])
            row += f"{med:>14.3f} (x{med / stock:.3f})"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
