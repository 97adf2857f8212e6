"""The supervisor's CPU while a kernel starts, against other trees of the code, alternated in one run.

Wall times of a start are noise on a loaded 2-core machine (stock's own ready time moved 0.59 -> 1.29 s between two
runs); CPU is disturbed less. Two measures:

- ``standin``: the supervisor with a stand-in kernel that says "ready" when told: the supervisor's CPU until
  then (its interpreter's start included, from /proc/PID/schedstat), and its chores after ready (1.5 s later);
- ``tree``: real kernels in their own 1 GiB memory groups (stock, and the sentinel kernel of each tree): the
  CPU of the whole process tree at ready and 2 s later, and the kernel's own share (psutil, 10 ms ticks).

Run: ``.venv/bin/python bench/bench_supervisor_cpu.py --variant before=/tmp/snap/src --variant after=src
[--what standin|tree] [--pairs 12]``; each variant's ``src`` goes first on PYTHONPATH (a ``git archive``
snapshot's ``src`` folder compares a commit). ``tree`` needs a writable cgroup memory controller.
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


def _run_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def standin_once(src: str, scratch: Path) -> tuple[float, float]:
    """Return (ms of the supervisor's CPU until ready, ms of its chores after ready) with a stand-in kernel."""
    d = Path(tempfile.mkdtemp(dir=scratch))
    go = d / "go"
    kernel = (
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "os.write(int(os.environ['KERNEL_SENTINEL_READY_FD']), b'R')\n"
        "time.sleep(600)\n"
    )
    run = f"from kernel_sentinel.autopsy.supervisor import supervise; supervise([], [{sys.executable!r}, '-c', {kernel!r}])"
    env = {**os.environ, "KERNEL_SENTINEL_HOME": str(d / "home"), "PYTHONPATH": src}
    sup = subprocess.Popen([sys.executable, "-c", run], env=env, start_new_session=True)
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


def tree_once(src: str | None, scratch: Path) -> tuple[float, float, float]:
    """Return (ms at ready, ms 2 s later, the kernel's own ms then) of a real kernel's process tree in 1 GiB."""
    from kernel_harness import STOCK_ARGV, KernelHarness

    argv = SENTINEL_ARGV if src is not None else STOCK_ARGV
    env = {"PYTHONPATH": src, "KERNEL_SENTINEL_HOME": str(scratch / "home")} if src is not None else {}
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        h = KernelHarness(Path(d), limit_bytes=1 << 30, kernelspec={"argv": argv, "display_name": "k", "language": "python"}, env=env)
        h.start()
        try:
            at_ready = _tree_ms(h.pid)
            time.sleep(2.0)
            later, kernel = _tree_ms(h.pid), _tree_ms(h.pid, kernel_only=True)
        finally:
            h.close()
    return at_ready, later, kernel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, metavar="LABEL=SRC",
                    help="a tree of the code: its src folder goes first on PYTHONPATH (give two or more)")
    ap.add_argument("--what", choices=("standin", "tree"), default="standin")
    ap.add_argument("--pairs", type=int, default=12, help="rounds, each variant once a round, order rotated")
    args = ap.parse_args(argv)
    variants: dict[str, str | None] = {}
    for v in args.variant:
        label, sep, src = v.partition("=")
        if not sep or not Path(src, "kernel_sentinel").is_dir():
            ap.error(f"--variant {v!r}: write LABEL=SRC, SRC a folder holding kernel_sentinel")
        variants[label] = str(Path(src).resolve())
    if args.what == "tree":
        variants = {"stock": None, **variants}
    scratch = Path(tempfile.mkdtemp(prefix="ks-bench-sup-"))
    results: dict[str, list[tuple[float, ...]]] = {k: [] for k in variants}
    names = list(variants)
    for i in range(args.pairs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            src = variants[name]
            if args.what == "standin":
                assert src is not None
                results[name].append(standin_once(src, scratch))
            else:
                results[name].append(tree_once(src, scratch))
    load = os.getloadavg()
    for name, rows in results.items():
        if args.what == "standin":
            ready = [r[0] for r in rows]
            print(f"{name}: supervisor CPU until ready median {statistics.median(ready):.1f} ms "
                  f"({' '.join(f'{x:.0f}' for x in ready)}); chores after ready median "
                  f"{statistics.median(r[1] for r in rows):.1f} ms")
        else:
            print(f"{name}: process tree CPU at ready median {statistics.median(r[0] for r in rows):.0f} ms; 2 s later "
                  f"{statistics.median(r[1] for r in rows):.0f} ms, of which the kernel {statistics.median(r[2] for r in rows):.0f} ms")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
