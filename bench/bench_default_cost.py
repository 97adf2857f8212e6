"""What the default sentinel kernel costs against stock ipykernel, as a user gets it, alternated in one run.

The sentinel kernel is the ``python3-sentinel`` kernelspec's argv (``python -m kernel_sentinel.launch``):
supervisor, flight recorder, guard and checkpoints all on, nothing configured. Both kernels run at once
and every measurement alternates (stock, sentinel, sentinel, stock, ...), so the shared machine's noise
hits both alike; the figures are medians of per-pair ratios or differences.

Measured from outside the kernel, from ``/proc`` (the kernel's own code never measures itself):
- kernel CPU per round of realistic cells: the ipykernel process's threads' ``schedstat`` run time (ns; every
  thread, the guard's watchdog and the recorder's sampler included; ``utime + stime`` where unreadable) while the
  cells run; then a one-second pause (a user's), in which the sentinel kernel forks its checkpoint writer: the
  kernel's CPU in that pause, and separately the CPU of the processes it forked and reaped (the writers:
  ``cutime + cstime``); and the kernel's minor page faults while the cells run (the copy-on-write faults a live
  writer causes show there); the same CPU split by thread: the main thread (the cells themselves), the
  sentinel's own threads (``kernel-sentinel-*``, ``sentinel-*``: watchdog, recorder, checkpoints) and the rest
  (ipykernel's IOPub, shell, control, history and zmq threads). Two kernel processes differ by a few % in the
  same Python code (measured stock against stock: +-2% on the main thread), so a ratio is read with the split;
- the parts, measured where they run: each sentinel thread's CPU per round by name, the CPU of each callback of
  IPython's cell events (wrapped in both kernels after the set-up cell, ~1 us a call; per call median, mean and
  max), the forks the kernel made (``os.register_at_fork``) and the minor faults each pair adds (a round after a
  checkpoint's fork takes ~30k more: the pages the fork write-protected, faulting once each);
- added latency per cell (client round trip, execute request to idle), for each kind of cell;
- the kernel's own RSS after ``import numpy, pandas`` (the ipykernel process, not the supervisor);
- kernel ready time (start to ``wait_for_ready``), graceful shutdown (``shutdown_kernel(now=False)``,
  what nbclient and papermill do at the end), and graceful restart to ready again (``--restarts`` of them
  in each lifecycle pair: a restart is the noisiest of the measures on a shared machine).
The package's bytecode is written first, as ``pip install`` does (an editable checkout may hold stale .pyc
files that each kernel would compile again at start). The command and the kernel_sentinel the sentinel kernel
imported are printed: to measure a commit while others edit the tree, put a ``git archive`` of it first on
``PYTHONPATH``.

    .venv/bin/python bench/bench_default_cost.py [--rounds 7] [--lifecycle 5] [--restarts 3] [--sentinel-env NAME=VALUE]
        [--limit 1G]   # each kernel in its own memory cgroup, as in a container

Targets (issue 11): CPU ratio median <= 1.03, trivial cell <= +1 ms, ready/shutdown/restart <= +0.1 s, RSS
<= +5 MiB.
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

from kernel_harness import STOCK_ARGV, KernelHarness  # noqa: E402

from kernel_sentinel.sizes import parse_size  # noqa: E402

SENTINEL_ARGV = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
SPECS = {
    "stock": {"argv": STOCK_ARGV, "display_name": "stock", "language": "python"},
    "sentinel": {"argv": SENTINEL_ARGV, "display_name": "Python 3 (sentinel)", "language": "python"},
}
THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIFECYCLE = ("ready", "restart", "restart: down", "restart: up", "shutdown")
IDLE_PAUSE = 1.0  # seconds between rounds, as a user pauses: stock and sentinel both get it

SETUP = """
import numpy as np, pandas as pd, time
rng = np.random.default_rng(0)
big = np.zeros(8_000_000)
"""

# One round: what a data-science notebook does again and again. (name, code)
CELLS: list[tuple[str, str]] = [
    ("dict_of_lists", "d = {i: [i, i + 1, str(i)] for i in range(200_000)}"),
    ("frame_groupby", "df = pd.DataFrame({'k': rng.integers(0, 1000, 400_000), 'v': rng.random(400_000)})\n"
                      "g = df.groupby('k')['v'].agg(['mean', 'sum', 'count'])"),
    ("records", "recs = {f'r{i}': {'a': i, 'b': float(i), 'c': (i, 'x')} for i in range(50_000)}"),
    ("array_in_place", "big[::7] += 1.0\nbig.sum()"),
    ("matmul_listcomp", "m = rng.random((300, 300))\nfor _ in range(20):\n    m = (m @ m.T) / 300.0\n"
                        "s = [x * 2 for x in range(300_000)]"),
    ("long", "t = 0\nfor i in range(3_000_000):\n    t += i % 7"),
    *[("trivial", "x = list(range(1000))")] * 15,
]


def threads_cpu(pid: int) -> float | None:
    """Return the CPU seconds of ``pid``'s live threads from their schedstat (nanoseconds), None where unreadable.

    utime + stime count in clock ticks (10 ms): against a 0.7 s round that is +-1.4% a reading, as much as half the
    3% target, and single pairs then spread 0.89-1.27. A thread that ends within the round takes its time with
    it; the kernels' threads (ipykernel's, the guard's watchdog, the recorder's) live as long as the kernel.
    """
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def thread_split(pid: int, names: dict[int, str]) -> dict[str, float]:
    """Return the CPU seconds of ``pid``'s main thread, of the sentinel's own threads and of the others, and of
    each sentinel thread by name (``t:<name>``)."""
    out: dict[str, float] = {"main": 0, "sentinel": 0, "other": 0}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            name = names.get(int(tid), "")
            key = "main" if int(tid) == pid else (
                "sentinel" if name.startswith(("kernel-sentinel-", "sentinel-")) else "other")
            out[key] += ns
            if key == "sentinel":
                out[f"t:{name}"] = out.get(f"t:{name}", 0) + ns
    except (OSError, ValueError, IndexError):
        pass
    return {k: v / 1e9 for k, v in out.items()}


def thread_names(h: KernelHarness) -> dict[int, str]:
    """Return the kernel's Python threads' names by native thread id (C threads such as zmq's are not there)."""
    got = h.value("[(t.native_id, t.name) for t in __import__('threading').enumerate()]")
    return {int(tid): name for tid, name in got}


def proc_stat(pid: int) -> dict[str, float]:
    """Return the CPU seconds (own, reaped children) and minor faults of ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3): minflt is field 10, utime 14, stime 15, cutime 16, cstime 17
    precise = threads_cpu(pid)
    return {
        "cpu": precise if precise is not None else (int(fields[11]) + int(fields[12])) / CLK_TCK,
        "children_cpu": (int(fields[13]) + int(fields[14])) / CLK_TCK,
        "minflt": int(fields[7]),
    }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_children_gone(pid: int, timeout: float = 30.0) -> None:
    """Wait until ``pid`` has no child process left (a checkpoint writer still writing is not yet counted)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not psutil.Process(pid).children():
                return
        except psutil.Error:
            return
        time.sleep(0.05)


def run_round(
    h: KernelHarness, names: dict[int, str] | None = None
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run every cell once; return the kernel's /proc deltas and each cell kind's latencies (seconds)."""
    pid = h.kernel_pid
    wait_children_gone(pid)
    split0 = thread_split(pid, names or {})
    before = proc_stat(pid)
    latencies: dict[str, list[float]] = {}
    for name, code in CELLS:
        t0 = time.perf_counter()
        res = h.run(code, timeout=600)
        latencies.setdefault(name, []).append(time.perf_counter() - t0)
        if not res.ok:
            raise SystemExit(f"cell {name} failed: {res.text()}")
        if res.stdout.strip() or res.stderr.strip():
            print(f"  note: cell {name} printed: {(res.stdout + res.stderr).strip()[:200]}", flush=True)
    after_cells = proc_stat(pid)
    split1 = thread_split(pid, names or {})
    time.sleep(IDLE_PAUSE)  # a user's pause: the sentinel kernel's checkpoint starts in it
    wait_children_gone(pid)
    after = proc_stat(pid)
    return {
        "cpu": after_cells["cpu"] - before["cpu"],
        "writer_cpu": after["children_cpu"] - before["children_cpu"],
        "idle_cpu": after["cpu"] - after_cells["cpu"],
        "minflt": after_cells["minflt"] - before["minflt"],
        "idle_minflt": after["minflt"] - after_cells["minflt"],
        **{f"cpu_{k}": split1[k] - split0.get(k, 0.0) for k in split1},
    }, latencies


def lifecycle(h_factory, order: tuple[str, str], restarts: int) -> dict[str, dict[str, list[float]]]:
    """Start both kernels (in ``order``), time ready; ``restarts`` graceful restarts each, alternated; shut down.

    Each restart and shutdown follows ``import numpy, pandas`` and a short pause (the sentinel's checkpoint
    of nothing, its parts loaded): a kernel a user has used, not one still starting.
    """
    out: dict[str, dict[str, list[float]]] = {name: {what: [] for what in LIFECYCLE} for name in order}
    kernels: dict[str, KernelHarness] = {}
    try:
        for name in order:
            h = h_factory(name)
            t0 = time.perf_counter()
            h.start()
            out[name]["ready"].append(time.perf_counter() - t0)
            kernels[name] = h
        for i in range(restarts):
            for name in (order if i % 2 == 0 else order[::-1]):
                h = kernels[name]
                res = h.run("import numpy, pandas")
                assert res.ok, res.text()
                time.sleep(0.3)
                # restart_kernel(now=False), step by step: its shutdown half and its start half are timed apart
                t0 = time.perf_counter()
                h.km.shutdown_kernel(now=False, restart=True)
                t1 = time.perf_counter()
                h.km.start_kernel(**h.km._launch_args)
                h.kc.wait_for_ready(timeout=60)
                t2 = time.perf_counter()
                out[name]["restart"].append(t2 - t0)
                out[name]["restart: down"].append(t1 - t0)
                out[name]["restart: up"].append(t2 - t1)
        for name in order[::-1]:
            h = kernels[name]
            res = h.run("import numpy, pandas\nx = 1")
            assert res.ok, res.text()
            time.sleep(0.3)
            h.kc.stop_channels()
            h.kc = None
            t0 = time.perf_counter()
            h.km.shutdown_kernel(now=False)
            out[name]["shutdown"].append(time.perf_counter() - t0)
    finally:
        for h in kernels.values():
            h.close()
    return out


# Installed in the sentinel kernel after the warm-up round (the bench's own code, not the sentinel's): each
# callback of IPython's cell events wrapped to add up its thread CPU time (the wrapper costs ~1 us a call), and
# a fork counter (os.register_at_fork), so that the parts are measured inside the kernel, where they run.
MEASURE_HOOKS = """
import os as _os, time as _time
_bench_hooks = {}
_bench_forks = [0]
_os.register_at_fork(before=lambda: _bench_forks.__setitem__(0, _bench_forks[0] + 1))
def _bench_wrap(event, fn):
    key = event + ' ' + getattr(fn, '__qualname__', repr(fn))
    def timed(*args, **kwargs):
        t0 = _time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _bench_hooks.setdefault(key, []).append(_time.thread_time() - t0)
    return timed
for _ev in ('pre_execute', 'pre_run_cell', 'post_execute', 'post_run_cell'):
    _cbs = get_ipython().events.callbacks[_ev]
    _cbs[:] = [_bench_wrap(_ev, _f) for _f in _cbs]
"""
HOOKS_RESET = "_bench_hooks.clear(); _bench_forks[0] = 0"
HOOKS_READ = "{'hooks': _bench_hooks, 'forks': _bench_forks[0]}"


def compile_package() -> None:
    """Write kernel_sentinel's bytecode, as ``pip install`` does: an editable checkout may hold stale .pyc files
    (PYTHONDONTWRITEBYTECODE), and compiling them at every start is a cost no user pays."""
    import compileall

    import kernel_sentinel

    compileall.compile_dir(str(Path(kernel_sentinel.__file__).parent), quiet=1)


def run_cells(harness, rounds_wanted: int) -> dict:
    """Run the cells' rounds on one stock and one sentinel kernel, alternated; return what the summary prints."""
    kernels = {name: harness(name).start() for name in SPECS}
    try:
        rss: dict[str, int] = {}
        for name, h in kernels.items():
            res = h.run(SETUP)
            assert res.ok, res.text()
            rss[name] = rss_bytes(h.kernel_pid)
        on = kernels["sentinel"].value(
            "[bool(getattr(get_ipython(), '_kernel_sentinel_guard', None)), "
            "bool(getattr(get_ipython(), '_kernel_sentinel_checkpointer', None)) and "
            "get_ipython()._kernel_sentinel_checkpointer.enabled]")
        print(f"sentinel kernel: guard {'on' if on[0] else 'off'}, checkpoints {'on' if on[1] else 'off'}; "
              f"ipykernel pid {kernels['sentinel'].kernel_pid} under launcher {kernels['sentinel'].pid}")
        src = kernels["sentinel"].value("__import__('os').path.dirname(__import__('kernel_sentinel').__file__)")
        print(f"sentinel kernel's kernel_sentinel: {src}", flush=True)
        for name, h in kernels.items():
            res = h.run(MEASURE_HOOKS)
            assert res.ok, res.text()
        for h in kernels.values():
            run_round(h)  # warm-up: caches, first checkpoint of everything
        names = {name: thread_names(h) for name, h in kernels.items()}  # the threads live as long as the kernel
        for h in kernels.values():
            h.run(HOOKS_RESET)
        rounds: dict[str, list[dict[str, float]]] = {"stock": [], "sentinel": []}
        lat: dict[str, dict[str, list[float]]] = {"stock": {}, "sentinel": {}}
        for r in range(rounds_wanted):
            for name in (("stock", "sentinel") if r % 2 == 0 else ("sentinel", "stock")):
                stats, latencies = run_round(kernels[name], names[name])
                rounds[name].append(stats)
                for cell, values in latencies.items():
                    lat[name].setdefault(cell, []).append(statistics.median(values))
            s, k = rounds["stock"][-1], rounds["sentinel"][-1]
            print(f"round {r + 1}: cpu stock {s['cpu']:.2f} s sentinel {k['cpu']:.2f} s "
                  f"(ratio {k['cpu'] / s['cpu']:.3f}); writers {k['writer_cpu']:.2f} s; "
                  f"minor faults stock {s['minflt']} sentinel {k['minflt']}", flush=True)
        hooks = {name: h.value(HOOKS_READ) for name, h in kernels.items()}
        for name, h in kernels.items():
            rss[name + "_end"] = rss_bytes(h.kernel_pid)
        status = kernels["sentinel"].run("%sentinel checkpoint status").stdout.strip()
    finally:
        for h in kernels.values():
            h.close()
    return {"rounds": rounds, "lat": lat, "rss": rss, "status": status, "hooks": hooks, "source": src}


def print_cells(got: dict) -> None:
    rounds, lat, rss = got["rounds"], got["lat"], got["rss"]
    med = statistics.median
    ratios = [k["cpu"] / s["cpu"] for s, k in zip(rounds["stock"], rounds["sentinel"])]
    print(f"kernel CPU per round: stock {med(r['cpu'] for r in rounds['stock']):.3f} s, "
          f"sentinel {med(r['cpu'] for r in rounds['sentinel']):.3f} s, ratio {med(ratios):.3f} "
          f"(pairs {', '.join(f'{x:.3f}' for x in ratios)})  target <= 1.03")
    split = {n: {k: med(r[f"cpu_{k}"] for r in rounds[n]) for k in ("main", "sentinel", "other")} for n in rounds}
    main_ratios = [k["cpu_main"] / s["cpu_main"] for s, k in zip(rounds["stock"], rounds["sentinel"])]
    print(f"  by thread: main stock {split['stock']['main']:.3f} s, sentinel {split['sentinel']['main']:.3f} s "
          f"(ratio {med(main_ratios):.3f}); the sentinel's own threads {split['sentinel']['sentinel'] * 1000:.1f} ms; "
          f"other threads stock {split['stock']['other'] * 1000:.1f} ms, sentinel {split['sentinel']['other'] * 1000:.1f} ms")
    n_rounds = len(rounds["sentinel"])
    threads = sorted({k for r in rounds["sentinel"] for k in r if k.startswith("cpu_t:")})
    print("  the sentinel's threads per round (median, mean; ms): " + "; ".join(
        f"{k[6:]} {med(r.get(k, 0.0) for r in rounds['sentinel']) * 1000:.2f}, "
        f"{sum(r.get(k, 0.0) for r in rounds['sentinel']) / n_rounds * 1000:.2f}" for k in threads))
    for name in ("stock", "sentinel"):
        got_hooks = got["hooks"][name]
        total = sum(sum(v) for v in got_hooks["hooks"].values())
        print(f"  {name} cell hooks per round (mean over {n_rounds} rounds): {total / n_rounds * 1000:.2f} ms; "
              f"forks {got_hooks['forks']}")
        for key, calls in sorted(got_hooks["hooks"].items(), key=lambda kv: -sum(kv[1])):
            print(f"    {key}: {sum(calls) / n_rounds * 1000:.3f} ms a round (a call: median {med(calls) * 1e6:.0f} us, "
                  f"mean {sum(calls) / len(calls) * 1e6:.0f} us, max {max(calls) * 1e6:.0f} us)")
    added = [k["minflt"] - s["minflt"] for s, k in zip(rounds["stock"], rounds["sentinel"])]
    print(f"  added minor faults per round, each pair: {', '.join(str(a) for a in added)} (mean {sum(added) / n_rounds:.0f}); "
          "writers' CPU per round: " + ", ".join(f"{k['writer_cpu']:.2f}" for k in rounds["sentinel"]))
    idle = {n: med(r["idle_cpu"] for r in rounds[n]) for n in rounds}
    print(f"kernel CPU in the pause after a round (the fork of a checkpoint lands here): stock {idle['stock']:.3f} s, "
          f"sentinel {idle['sentinel']:.3f} s")
    writer = med(r["writer_cpu"] for r in rounds["sentinel"])
    print(f"checkpoint writers' CPU per round (forked, outside the kernel): {writer:.3f} s "
          f"= {writer / med(r['cpu'] for r in rounds['sentinel']):.1%} of the kernel's")
    print(f"kernel minor faults per round: stock {med(r['minflt'] for r in rounds['stock']):.0f}, "
          f"sentinel {med(r['minflt'] for r in rounds['sentinel']):.0f}, added "
          f"{med(k['minflt'] - s['minflt'] for s, k in zip(rounds['stock'], rounds['sentinel'])):.0f}")
    for cell in lat["stock"]:
        diffs = [(k - s) * 1000 for s, k in zip(lat["stock"][cell], lat["sentinel"][cell])]
        print(f"latency {cell:16s} stock {med(lat['stock'][cell]) * 1000:7.1f} ms  "
              f"sentinel {med(lat['sentinel'][cell]) * 1000:7.1f} ms  added {med(diffs):+6.1f} ms"
              + ("  target <= +1 ms" if cell == "trivial" else ""))
    mib = 1 << 20
    print(f"kernel RSS after import numpy, pandas: stock {rss['stock'] / mib:.1f} MiB, sentinel "
          f"{rss['sentinel'] / mib:.1f} MiB, added {(rss['sentinel'] - rss['stock']) / mib:+.1f} MiB  target <= +5 MiB")
    print(f"kernel RSS at the end: stock {rss['stock_end'] / mib:.1f} MiB, sentinel {rss['sentinel_end'] / mib:.1f} MiB")
    print("\n%sentinel checkpoint status:\n" + got["status"])
    pythonpath = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    print("command: " + " ".join(pythonpath + [sys.executable, *sys.argv]))
    print(f"sentinel kernel's kernel_sentinel: {got['source']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of cells (0: lifecycle only)")
    parser.add_argument("--lifecycle", type=int, default=5, help="start/shutdown pairs (0: cells only)")
    parser.add_argument("--restarts", type=int, default=3, help="restart pairs within each lifecycle pair")
    parser.add_argument("--sentinel-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the sentinel kernel (e.g. KERNEL_SENTINEL_CHECKPOINT=off)")
    parser.add_argument("--limit", default=None, metavar="SIZE",
                        help="run each kernel in its own memory cgroup of SIZE (at most 1G), as in a container: "
                        "the guard then reads the group's files at every cell's start and end")
    args = parser.parse_args(argv)
    limit = parse_size(args.limit) if args.limit else None
    if limit is not None and limit > 1 << 30:
        print("--limit: at most 1G (the project's rule for memory groups)", file=sys.stderr)
        return 64
    extra = dict(item.split("=", 1) for item in args.sentinel_env)
    compile_package()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        envs = {
            "stock": {**THREADS_ENV, "KERNEL_SENTINEL_HOME": str(home)},
            "sentinel": {**THREADS_ENV, "KERNEL_SENTINEL_HOME": str(home), **extra},
        }
        count = [0]

        def harness(name: str) -> KernelHarness:
            count[0] += 1
            workdir = Path(tmp) / f"{name}{count[0]}"
            workdir.mkdir()
            return KernelHarness(workdir, kernelspec=SPECS[name], env=envs[name], limit_bytes=limit)

        print(f"sentinel kernel env: {extra or 'default (everything on)'}; "
              f"{f'each kernel in a memory cgroup of {args.limit}' if limit else 'no memory cgroup'}", flush=True)
        life: dict[str, dict[str, list[float]]] = {n: {what: [] for what in LIFECYCLE} for n in SPECS}
        for i in range(args.lifecycle):
            order = ("stock", "sentinel") if i % 2 == 0 else ("sentinel", "stock")
            got = lifecycle(harness, order, args.restarts)
            for n, measures in got.items():
                for what, values in measures.items():
                    life[n][what].extend(values)
            print(f"lifecycle {i + 1}: " + "  ".join(
                f"{n} ready {got[n]['ready'][0]:.3f} restart "
                f"{' '.join(f'{x:.3f}' for x in got[n]['restart'])} shutdown {got[n]['shutdown'][0]:.3f}"
                for n in SPECS), flush=True)
        cells = run_cells(harness, args.rounds) if args.rounds else None
    print("\n== summary (medians over pairs) ==")
    if cells is not None:
        print_cells(cells)
    med = statistics.median
    for what in LIFECYCLE:
        diffs = [k - s for s, k in zip(life["stock"][what], life["sentinel"][what])]
        if diffs:
            print(f"{what:13s} stock {med(life['stock'][what]):.3f} s  sentinel {med(life['sentinel'][what]):.3f} s  "
                  f"added {med(diffs):+.3f} s over {len(diffs)} pairs  target <= +0.1 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
