"""What the guard costs: the same numpy + pandas + pure-Python workload in a stock and a guarded kernel.

Both kernels run at once and the rounds alternate (stock, guarded, stock, ...), so machine noise hits
both alike. Each round runs the workload in a cell and measures the kernel process's CPU time
(``time.process_time()``: all its threads, so the watchdog's own ticks are counted) and wall time.
Prints each round, the ratio of medians and of best rounds (the machine is shared: the best round is
the least disturbed), and the watchdog thread's own CPU time, measured in the kernel with
``time.thread_time()`` (noise-free, but it leaves out indirect costs such as GIL hand-offs).
The target is guarded/stock within 1.02.

    .venv/bin/python bench/bench_guard_overhead.py [--rounds 9] [--scale 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kernel_harness import STOCK_ARGV, KernelHarness  # noqa: E402

GUARDED_ARGV = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]

SETUP = """
import time, json
import numpy as np
import pandas as pd

def workload(scale):
    rng = np.random.default_rng(0)
    n = int(2_000_000 * scale)
    # numpy: elementwise, reductions, sort, small matmuls, many small arrays
    a = rng.random(n)
    b = np.sqrt(a) * 3.0 + np.sin(a)
    s = float(b.sum()) + float(np.sort(a)[n // 2])
    m = rng.random((300, 300))
    for _ in range(int(20 * scale)):
        m = (m @ m.T) / 300.0
    small = [np.arange(i % 50 + 1) * 2 for i in range(int(50_000 * scale))]
    s += sum(int(x.sum()) for x in small[:1000])
    # pandas: construction, groupby, merge, string ops
    df = pd.DataFrame({"k": rng.integers(0, 1000, n // 4), "v": rng.random(n // 4)})
    g = df.groupby("k")["v"].agg(["mean", "sum", "count"])
    right = pd.DataFrame({"k": np.arange(1000), "w": np.arange(1000) * 0.5})
    j = df.merge(right, on="k", how="left")
    s += float(g["sum"].sum()) + float(j["w"].mean())
    t = pd.Series([f"item-{i}" for i in range(int(100_000 * scale))])
    s += int(t.str.len().sum())
    # pure Python: dicts, lists, strings, small objects
    d = {}
    for i in range(int(400_000 * scale)):
        d[i % 5000] = d.get(i % 5000, 0) + i
    words = [str(i) * 3 for i in range(int(200_000 * scale))]
    s += len("".join(words)) + sum(d.values()) % 1000
    return s
"""

ROUND = """
t0, w0 = time.process_time(), time.perf_counter()
workload({scale})
print(json.dumps([time.process_time() - t0, time.perf_counter() - w0]))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--scale", type=float, default=6.0)
    parser.add_argument(
        "--guarded-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the guarded kernel (e.g. KERNEL_SENTINEL_GUARD=0 measures the rest)",
    )
    args = parser.parse_args(argv)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    specs = {
        "stock": {"argv": STOCK_ARGV, "display_name": "stock", "language": "python"},
        "guarded": {"argv": GUARDED_ARGV, "display_name": "sentinel", "language": "python"},
    }
    extra = dict(item.split("=", 1) for item in args.guarded_env)
    kernels: dict[str, KernelHarness] = {}
    times: dict[str, list[tuple[float, float]]] = {"stock": [], "guarded": []}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, spec in specs.items():
                workdir = Path(tmp) / name
                workdir.mkdir()
                kernel_env = {**env, **extra} if name == "guarded" else env
                kernels[name] = KernelHarness(workdir, kernelspec=spec, env=kernel_env).start()
                res = kernels[name].run(SETUP)
                assert res.ok, res.text()
                kernels[name].run(ROUND.format(scale=0.2))  # warm-up: imports, caches
            guard_on = kernels["guarded"].value(
                "__import__('kernel_sentinel.guard', fromlist=['g']).get_guard().enabled"
            )
            if not guard_on and not extra:
                print("the guarded kernel has no guard on: nothing to measure", file=sys.stderr)
                return 1
            g = "__import__('kernel_sentinel.guard', fromlist=['g']).get_guard()"
            cpu0 = kernels["guarded"].value(f"[{g}.watchdog_cpu_seconds, time.perf_counter()]") if guard_on else None
            for r in range(args.rounds):
                order = ("stock", "guarded") if r % 2 == 0 else ("guarded", "stock")
                for name in order:
                    res = kernels[name].run(ROUND.format(scale=args.scale), timeout=600)
                    assert res.ok, res.text()
                    cpu, wall = json.loads(res.stdout.strip().splitlines()[-1])
                    times[name].append((cpu, wall))
                    print(f"round {r + 1} {name:8s} cpu {cpu:7.3f} s  wall {wall:7.3f} s", flush=True)
            status = kernels["guarded"].value(f"{g}.status()")
            cpu1 = kernels["guarded"].value(f"[{g}.watchdog_cpu_seconds, time.perf_counter()]") if guard_on else None
            print(f"guarded kernel env: {extra or 'default'}")
        finally:
            for k in kernels.values():
                k.close()
    cpu = {n: statistics.median(c for c, _ in t) for n, t in times.items()}
    wall = {n: statistics.median(w for _, w in t) for n, t in times.items()}
    ratio = cpu["guarded"] / cpu["stock"]
    best = {n: min(c for c, _ in t) for n, t in times.items()}
    print()
    print(f"median CPU  stock {cpu['stock']:.3f} s  guarded {cpu['guarded']:.3f} s  ratio {ratio:.4f}")
    print(f"best CPU    stock {best['stock']:.3f} s  guarded {best['guarded']:.3f} s  "
          f"ratio {best['guarded'] / best['stock']:.4f}")
    if cpu0 and cpu1:
        share = (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1e-9)
        print(f"the watchdog thread's own CPU: {cpu1[0] - cpu0[0]:.3f} s over {cpu1[1] - cpu0[1]:.1f} s "
              f"= {100 * share:.2f}% of one core")
    print(f"median wall stock {wall['stock']:.3f} s  guarded {wall['guarded']:.3f} s  "
          f"ratio {wall['guarded'] / wall['stock']:.4f}")
    print(f"guard: {status['ticks']} ticks, every {status['poll_interval']} s, longest gap "
          f"{status['max_tick_gap_seconds']} s, {status['interventions']} interventions")
    print("target: CPU ratio within 1.02 ->", "met" if ratio <= 1.02 else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
