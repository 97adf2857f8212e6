"""The supervisor's CPU while a kernel starts, against other trees of the code, alternated in one run.

Wall times of a start are noise on a loaded 2-core machine (stock's own ready time moved 0.59 -> 1.29 s between two
runs); CPU is disturbed less. Two measures:

- ``standin``: the supervisor with a stand-in kernel that says "ready" when told: the supervisor's CPU until
  then (its interpreter's start included, from /proc/PID/schedstat), and its chores after ready (1.5 s later);
- ``tree``: real kernels in their own 1 GiB memory groups (stock, and the sentinel kernel of each tree): the
  CPU of the whole process tree at ready and 2 s later, and the kernel's own share (psutil, 10 ms ticks); and
  the memory the supervisor and its witness hold in the kernel's group then (their anonymous pages, the pages
  they share counted once: what they take from the user's memory);
- ``lifecycle``: wall times as ``bench_default_cost.py --lifecycle`` takes them (ready; graceful restarts, each
  after ``import numpy, pandas``, timed as their shutdown and start halves; a graceful shutdown), in 1 GiB groups,
  stock and each tree's sentinel kernel in turn: the trees compared in one run, each against stock.

Run: ``.venv/bin/python bench/bench_supervisor_cpu.py --variant before=/tmp/snap/src --variant after=src
[--what standin|tree|lifecycle] [--pairs 12] [--home-from jupyter|env]``; each variant's ``src`` goes first on PYTHONPATH (a ``git archive``
snapshot's ``src`` folder compares a commit). Each variant's bytecode is written first, as ``pip install`` does: with
PYTHONDONTWRITEBYTECODE (set here) a module whose .pyc is missing or stale is compiled again in every process that
imports it (a stale supervisor.py alone: ~10 ms of the supervisor's CPU before the kernel's fork, +0.16 MiB of its
memory).
``tree`` and ``lifecycle`` need a writable cgroup memory controller.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

SENTINEL_ARGV = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]


HOME_FROM = ["jupyter"]  # --home-from


def _home_env(scratch: Path) -> dict[str, str]:
    """Return the environment that puts the sentinel's home under ``scratch``: found as users' is, through
    Jupyter's data dir (XDG_DATA_HOME; the home folder's look-up is then part of the supervisor's chores), or
    named (KERNEL_SENTINEL_HOME, as the tests do)."""
    if HOME_FROM[0] == "env":
        return {"KERNEL_SENTINEL_HOME": str(scratch / "home")}
    return {"XDG_DATA_HOME": str(scratch / "xdg")}


def _run_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def standin_once(src: str, scratch: Path) -> tuple[float, float]:
    """Return (ms of the supervisor's CPU until ready, ms of its chores after ready) with a stand-in kernel."""
    d = Path(tempfile.mkdtemp(dir=scratch))
    from kernel_harness import standin_supervisor  # late, as in _harness

    go = d / "go"
    env = {**os.environ, **_home_env(d), "PYTHONPATH": src}
    sup = subprocess.Popen(standin_supervisor(go), env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(sup.pid).children()) < 2:  # the kernel and the witness
            if time.monotonic() > deadline:
                raise RuntimeError("the supervisor did not start its kernel and witness within 30 s")
            time.sleep(0.01)
        time.sleep(0.4)
        before = _run_ns(sup.pid)
        go.touch()
        time.sleep(1.5)
        after = _run_ns(sup.pid)
    finally:
        os.killpg(sup.pid, signal.SIGKILL)  # our own session: the supervisor, its kernel and witness
        sup.wait()
    return before / 1e6, (after - before) / 1e6


def _tree_ms(pid: int, kernel_only: bool = False) -> float:
    total = 0.0
    try:
        top = psutil.Process(pid)
        for p in [top, *top.children(recursive=True)]:
            if kernel_only and not any("ipykernel" in c for c in p.cmdline()):
                continue
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total * 1000


_STOCK_PATH: list[str] = []  # the first tree's src: on stock's PYTHONPATH too, so that its imports look there as well


def _harness(src: str | None, scratch: Path, d: str):  # noqa: ANN202 - kernel_harness is imported late
    from kernel_harness import STOCK_ARGV, KernelHarness

    argv = SENTINEL_ARGV if src is not None else STOCK_ARGV
    env = {"PYTHONPATH": src or _STOCK_PATH[0], **_home_env(scratch)}
    return KernelHarness(Path(d), limit_bytes=1 << 30, kernelspec={"argv": argv, "display_name": "k", "language": "python"}, env=env)


def _helpers_mib(pid: int) -> float:
    """Return the MiB of anonymous memory the supervisor ``pid`` and its other children (the witness) hold, the
    pages they share counted once (Pss of anonymous pages shared with the kernel would split them with it: the
    kernel was exec'd, it shares none)."""
    total_kib = 0
    try:
        top = psutil.Process(pid)
        helpers = [top, *(c for c in top.children() if not any("ipykernel" in a for a in c.cmdline()))]
        for p in helpers:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines()[1:])  # after the range line
            # a page the two share (forked, written by neither since) counts half in each one's Pss: once in all
            total_kib += int(fields["Pss_Anon"].split()[0])
    except (psutil.Error, OSError, KeyError, ValueError):
        return float("nan")
    return total_kib / 1024


def tree_once(src: str | None, scratch: Path) -> tuple[float, float, float, float]:
    """Return (ms at ready, ms 2 s later, the kernel's own ms then, MiB the supervisor and witness hold then) of a
    real kernel's process tree in 1 GiB."""
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        h = _harness(src, scratch, d)
        h.start()
        try:
            at_ready = _tree_ms(h.pid)
            time.sleep(2.0)
            later, kernel = _tree_ms(h.pid), _tree_ms(h.pid, kernel_only=True)
            helpers = _helpers_mib(h.pid) if src is not None else 0.0
        finally:
            h.close()
    return at_ready, later, kernel, helpers


LIFECYCLE = ("ready", "restart", "restart: down", "restart: up", "shutdown")


def lifecycle_once(src: str | None, scratch: Path, restarts: int = 3) -> dict[str, list[float]]:
    """Return the seconds of one kernel's ready, its ``restarts`` graceful restarts (and their halves) and its
    graceful shutdown, each step as ``bench_default_cost.lifecycle`` takes it."""
    out: dict[str, list[float]] = {what: [] for what in LIFECYCLE}
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        h = _harness(src, scratch, d)
        try:
            t0 = time.perf_counter()
            h.start()
            out["ready"].append(time.perf_counter() - t0)
            for _ in range(restarts):
                assert h.run("import numpy, pandas").ok
                time.sleep(0.3)
                down, up = h.restart_timed()
                out["restart"].append(down + up)
                out["restart: down"].append(down)
                out["restart: up"].append(up)
            assert h.run("import numpy, pandas\nx = 1").ok
            time.sleep(0.3)
            h.kc.stop_channels()
            h.kc = None
            t0 = time.perf_counter()
            h.km.shutdown_kernel(now=False)
            out["shutdown"].append(time.perf_counter() - t0)
        finally:
            h.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, metavar="LABEL=SRC",
                    help="a tree of the code: its src folder goes first on PYTHONPATH (give two or more)")
    ap.add_argument("--what", choices=("standin", "tree", "lifecycle"), default="standin")
    ap.add_argument("--restarts", type=int, default=3, help="--what lifecycle: graceful restarts of each kernel")
    ap.add_argument("--home-from", choices=("jupyter", "env"), default="jupyter",
                    help="how the sentinel finds its home: Jupyter's data dir, as users' (default), or KERNEL_SENTINEL_HOME")
    ap.add_argument("--pairs", type=int, default=12, help="rounds, each variant once a round, order rotated")
    args = ap.parse_args(argv)
    HOME_FROM[0] = args.home_from
    from kernel_harness import compile_sentinel  # late, as in _harness

    variants: dict[str, str | None] = {}
    for v in args.variant:
        label, sep, src = v.partition("=")
        if not sep or not Path(src, "kernel_sentinel").is_dir():
            ap.error(f"--variant {v!r}: write LABEL=SRC, SRC a folder holding kernel_sentinel")
        variants[label] = str(Path(src).resolve())
        compile_sentinel(variants[label])
    if args.what in ("tree", "lifecycle"):
        _STOCK_PATH.append(next(iter(variants.values())))  # type: ignore[arg-type]
        variants = {"stock": None, **variants}
    scratch = Path(tempfile.mkdtemp(prefix="ks-bench-sup-"))
    results: dict[str, list] = {k: [] for k in variants}
    names = list(variants)
    for i in range(args.pairs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            src = variants[name]
            if args.what == "standin":
                assert src is not None
                results[name].append(standin_once(src, scratch))
            elif args.what == "tree":
                results[name].append(tree_once(src, scratch))
            else:
                got = lifecycle_once(src, scratch, args.restarts)
                results[name].append(got)
                print(f"round {i + 1} {name}: " + "  ".join(f"{w} {' '.join(f'{x:.3f}' for x in got[w])}"
                                                          for w in ("ready", "restart: up", "shutdown")), flush=True)
    load = os.getloadavg()
    for name, rows in results.items():
        if args.what == "standin":
            ready = [r[0] for r in rows]
            print(f"{name}: supervisor CPU until ready median {statistics.median(ready):.1f} ms "
                  f"({' '.join(f'{x:.0f}' for x in ready)}); chores after ready median "
                  f"{statistics.median(r[1] for r in rows):.1f} ms")
        elif args.what == "tree":
            print(f"{name}: process tree CPU at ready median {statistics.median(r[0] for r in rows):.0f} ms; 2 s later "
                  f"{statistics.median(r[1] for r in rows):.0f} ms, of which the kernel {statistics.median(r[2] for r in rows):.0f} ms; "
                  f"supervisor and witness hold {statistics.median(r[3] for r in rows):.1f} MiB")
        else:
            for what in LIFECYCLE:
                mine = [x for r in rows for x in r[what]]
                stock = [x for r in results["stock"] for x in r[what]]
                diffs = [a - b for a, b in zip(mine, stock)]  # the same round's and step's stock kernel
                q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
                print(f"{name:10s} {what:13s} median {statistics.median(mine):.3f} s; minus stock median "
                      f"{statistics.median(diffs):+.3f} s (IQR {q[0]:+.3f} to {q[2]:+.3f}, {len(diffs)} pairs)")
    print(f"command: {' '.join([sys.executable, *sys.argv])} (home from {args.home_from})")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
