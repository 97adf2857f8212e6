"""Per-cell checkpoint cost and restore speed: kernel-sentinel (fork and thread writers) vs dill vs Kishu.

    .venv/bin/pip install -e '.[bench]'            # dill
    .venv/bin/python bench/bench_checkpoint.py [--engines sentinel-fork,sentinel-thread,dill] [--kishu-python PY]

The namespace (FACTS.md's): a 400 MB float64 array, a ~170 MB DataFrame, small objects (dicts, lists, a
lambda). Each engine runs in its own child process (RLIMIT_DATA 3 GiB: bounded, and never in the caller)
and sees the same sequence of "cells":
  first        everything is new
  unchanged    a cell that changes nothing (``print``)
  small        a cell that changes one small object
  big          a cell that changes one element of the 400 MB array
then a restore into a fresh namespace from a warm page cache (the blobs read once first) and a cold one.
Sentinel figures are the median of 3 cells of each kind (KS_BENCH_REPEAT). ``critical ms`` is what the cell waits for (the post_run_cell hook; for the thread writer plus the wait the
next cell would do if it started at once); ``background s`` is the writer's own time.
Kishu (``--kishu-python`` = a python with kishu installed) runs in a real ipykernel; its figure is the
cell's round trip minus the same cell's round trip without Kishu.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETUP = """
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
big = rng.random(50_000_000)                       # 400 MB
df = pd.DataFrame({f"c{i}": rng.random(2_000_000) for i in range(10)})   # 160 MB
df["k"] = np.arange(2_000_000)                     # + 16 MB = ~170 MB
config = {"lr": 0.01, "layers": [64, 64], "name": "run-1"}
history = list(range(1000))
labels = {i: f"label{i}" for i in range(1000)}
scale = lambda x: x * 2.0
"""
CELLS = [("unchanged", "print('hello')"), ("small", "config['lr'] = 0.02; history.append(1)"), ("big", "big[12345] += 1.0")]


def _child_sentinel(writer: str, home: str) -> dict:
    from kernel_sentinel.resurrect.checkpoint import Checkpointer
    from kernel_sentinel.resurrect.restore import load_checkpoint

    class Result:
        def __init__(self, code: str, n: int) -> None:
            self.info = type("I", (), {"raw_cell": code})()
            self.execution_count = n

    ns: dict = {}
    cp = Checkpointer(ns, enabled=True, kernel_id="bench", session_key=None, home=home, writer=writer)
    out: dict = {"engine": f"sentinel-{writer}", "cells": {}}

    def cell(label: str, code: str, n: int) -> None:
        cp.pre_run_cell(None)
        exec(code, ns)
        t0 = time.perf_counter()
        cp.post_run_cell(Result(code, n))
        hook = time.perf_counter() - t0
        t1 = time.perf_counter()
        cp.wait()
        waited = time.perf_counter() - t1
        r = cp.last_result or {}
        critical = hook + (waited if writer == "thread" else 0.0)
        out["cells"][label] = {"critical_ms": critical * 1e3, "hook_ms": hook * 1e3, "background_s": r.get("seconds"),
                               "written_mb": r.get("bytes_written", 0) / 1e6, "status": r.get("status"),
                               "writer": r.get("writer")}

    cell("first", SETUP, 1)
    n = 2
    for label, code in CELLS:
        runs = []
        for _ in range(REPEAT):  # the machine is shared and noisy: the median of REPEAT cells is reported
            cell(label, code, n)
            runs.append(out["cells"][label])
            n += 1
        out["cells"][label] = _median(runs)
    out["restore"] = _restore_times(lambda: load_checkpoint({}, home=home, exclude="nobody"), home)
    return out


REPEAT = int(os.environ.get("KS_BENCH_REPEAT", "3"))


def _median(runs: list[dict]) -> dict:
    """Return the run with the median critical time, plus the max over the runs."""
    ordered = sorted(runs, key=lambda r: r["critical_ms"])
    return {**ordered[len(ordered) // 2], "max_critical_ms": ordered[-1]["critical_ms"], "runs": len(runs)}


def _restore_times(restore, home: str) -> dict:
    # cold: drop the blobs from the page cache first (the writer already asks for that); warm: read them once
    blobs = [os.path.join(r, f) for r, _d, fs in os.walk(home) for f in fs]
    for path in blobs:
        with open(path, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    t0 = time.perf_counter()
    rep = restore()
    cold = time.perf_counter() - t0
    for path in blobs:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass
    t0 = time.perf_counter()
    rep = restore()
    warm = time.perf_counter() - t0
    nbytes = getattr(rep, "bytes_read", None) or sum(os.path.getsize(p) for p in blobs)
    return {"cold_s": cold, "warm_s": warm, "bytes": nbytes, "warm_gb_s": nbytes / warm / 1e9, "cold_gb_s": nbytes / cold / 1e9}


def _child_dill(home: str) -> dict:
    import types

    import dill

    mod = types.ModuleType("__main__")
    ns = mod.__dict__
    path = os.path.join(home, "session.pkl")
    out: dict = {"engine": "dill.dump_module", "cells": {}}

    def cell(label: str, code: str) -> None:
        exec(code, ns)
        t0 = time.perf_counter()
        dill.dump_module(path, module=mod, refimported=True)
        dt = time.perf_counter() - t0
        out["cells"][label] = {"critical_ms": dt * 1e3, "hook_ms": dt * 1e3, "background_s": 0.0,
                               "written_mb": os.path.getsize(path) / 1e6, "status": "written", "writer": "inline"}

    cell("first", SETUP)
    for label, code in CELLS:
        cell(label, code)

    def restore():
        return dill.load_module(path, module=types.ModuleType("__main__"))

    out["restore"] = _restore_times(restore, home)
    return out


def _child(engine: str) -> None:
    home = tempfile.mkdtemp(prefix="ks-bench-")
    try:
        if engine.startswith("sentinel-"):
            result = _child_sentinel(engine.split("-", 1)[1], home)
        elif engine == "dill":
            result = _child_dill(home)
        else:
            raise SystemExit(f"unknown engine {engine}")
    finally:
        subprocess.run(["rm", "-rf", home], check=False)
    print("RESULT " + json.dumps(result))


def _run_engine(engine: str) -> dict:
    from kernel_sentinel.confine import confined_command

    argv = confined_command([sys.executable, __file__, "--child", engine], rlimit_data=3 << 30)
    proc = subprocess.run(argv, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{engine} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def _kishu(python: str) -> dict:
    """Run the same cells in a real ipykernel of ``python`` with and without Kishu; return the extra per cell."""
    from jupyter_client import KernelManager

    work = tempfile.mkdtemp(prefix="ks-bench-kishu-")
    nb = os.path.join(work, "bench.ipynb")
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(), nb)
    out: dict = {"engine": "kishu", "cells": {}}
    times: dict[str, dict[str, float]] = {"plain": {}, "kishu": {}}
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = os.path.join(work, "kernels", "kishu")
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        from kernel_sentinel.confine import confined_command

        # bounded (~600 MB plus Kishu's copies), still kept under RLIMIT_DATA like the other engines
        argv = confined_command([python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], rlimit_data=3 << 30)
        json.dump({"argv": argv,
                   "display_name": "kishu", "language": "python"}, f)
    ksm = KernelSpecManager(kernel_dirs=[os.path.join(work, "kernels")], ensure_native_kernel=False)
    for mode in ("plain", "kishu"):
        km = KernelManager(kernel_name="kishu", kernel_spec_manager=ksm)
        km.start_kernel(cwd=work, env={**os.environ, "HOME": work})
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)

        def run(code: str, timeout: float = 600) -> float:
            t0 = time.perf_counter()
            reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
            dt = time.perf_counter() - t0
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"{mode}: {code[:40]!r}: {reply['content'].get('evalue')}")
            return dt

        try:
            if mode == "kishu":
                run(
                    "from pathlib import Path\nfrom kishu.jupyterint import KishuForJupyter\n"
                    "from kishu.notebook_id import NotebookId\n"
                    f"_nid = NotebookId(key='bench', path=Path({nb!r}), kernel_id='bench')\n"
                    "get_ipython()._kx = KishuForJupyter(_nid, ip=get_ipython())\n"
                    "get_ipython()._kx.install_kishu_hooks()\n"
                    "get_ipython()._kx.pre_run_cell(None)  # hooks installed mid-cell: this cell has no pre_run_cell"
                )
            times[mode]["first"] = run(SETUP)
            if mode == "kishu":
                run("get_ipython()._kx_first = get_ipython()._kx._kishu_branch.get_head().commit_id")
            for label, code in CELLS:
                times[mode][label] = run(code)
            if mode == "kishu":
                # Kishu restores in place: check out the commit after the first cell (the changed array,
                # config and history come back from its store); not a fresh kernel, the closest it offers
                out["restore_checkout_s"] = run("get_ipython()._kx.checkout(get_ipython()._kx_first, skip_notebook=True)")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    for label in times["plain"]:
        extra = times["kishu"][label] - times["plain"][label]
        out["cells"][label] = {"critical_ms": extra * 1e3, "hook_ms": extra * 1e3, "background_s": 0.0,
                               "written_mb": None, "status": "committed", "writer": "inline"}
    out["restore"] = None
    subprocess.run(["rm", "-rf", work], check=False)
    return out


def _table(results: list[dict]) -> str:
    head = ("| engine | first: critical ms / background s / MB | unchanged: critical ms / bg s | small changed: critical ms / bg s "
            "| big array changed: critical ms / bg s / MB | restore warm s (GB/s) | restore cold s (GB/s) |")
    rows = [head, "|" + "---|" * 7]

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    for r in results:
        c = r["cells"]
        first, un, sm, bg = c["first"], c["unchanged"], c["small"], c["big"]
        rs = r.get("restore")
        if rs is None and r.get("restore_checkout_s") is not None:  # Kishu: in-place checkout, no bytes count
            rs = {"warm_s": r["restore_checkout_s"], "warm_gb_s": None, "cold_s": None, "cold_gb_s": None}
        rows.append(
            f"| {r['engine']} | {f(first['critical_ms'], '.0f')} / {f(first['background_s'], '.2f')} / {f(first['written_mb'], '.0f')} "
            f"| {f(un['critical_ms'], '.1f')} / {f(un['background_s'], '.2f')} | {f(sm['critical_ms'], '.1f')} / {f(sm['background_s'], '.2f')} "
            f"| {f(bg['critical_ms'], '.0f')} / {f(bg['background_s'], '.2f')} / {f(bg['written_mb'], '.0f')} "
            f"| {f(rs and rs['warm_s'], '.2f')} ({f(rs and rs['warm_gb_s'], '.1f')}) | {f(rs and rs['cold_s'], '.2f')} ({f(rs and rs['cold_gb_s'], '.1f')}) |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engines", default="sentinel-fork,sentinel-thread,dill")
    parser.add_argument("--kishu-python", help="a python with kishu + ipykernel installed (a separate venv)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    results = []
    for engine in [e for e in args.engines.split(",") if e]:
        print(f"running {engine} ...", file=sys.stderr, flush=True)
        results.append(_run_engine(engine))
    if args.kishu_python:
        print("running kishu ...", file=sys.stderr, flush=True)
        try:
            results.append(_kishu(args.kishu_python))
        except Exception as exc:
            print(f"kishu failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(_table(results))
    for r in results:
        print(r["engine"], json.dumps(r["cells"]), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
