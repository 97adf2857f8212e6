"""The Python Data Science Handbook's notebooks, stock against sentinel in the same-size memory group.

The runs of tests/test_real_notebooks.py (its code: the same cells as written, the same per-cell
comparison, the same rule for a cell at which stock is OOM-killed), with the figures the test does not assert: for each notebook, run cell by cell in a
stock ipykernel and then in the sentinel kernel (guard and checkpoints on, the default environment), each
in its own fresh memory cgroup of ``--limit-mib`` (at most 1024: the project's safety rule), one table row:
cells, each kernel's outcomes (ok / error by exception name / died / timeout / not run), the cells that
ended differently, each group's peak memory (cgroup v1 memory.max_usage_in_bytes, v2 memory.peak) and
each kernel's wall time for the notebook and its slowest cell. Then, for each notebook with a difference, an
OOM kill or a guard intervention: every difference in full (the cell's code, both outcomes, the
sentinel's error), the cell the guard stopped where stock was OOM-killed (not a difference: the guard's
promise, see the test's docstring) and the guard's last failure. Then the command and the totals; the
exit status is 1 when any notebook has a difference or a sentinel kernel dead at the end.

Run: ``.venv/bin/python bench/bench_real_notebooks.py [--limit-mib 384] [--notebooks '03.*']``.
Needs a writable cgroup memory controller. The kernels import kernel_sentinel as this interpreter finds
it (the footer names it): to measure a commit while the working tree is being edited, put a snapshot of
its src first, ``git archive <commit> src | tar -x -C DIR`` and ``PYTHONPATH=DIR/src``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import kernel_sentinel  # noqa: E402
from conftest import SENTINEL_KERNELSPEC  # noqa: E402
from kernel_harness import KernelHarness  # noqa: E402
from test_real_notebooks import (  # noqa: E402
    CELL_TIMEOUT,
    HANDBOOK,
    NotebookRun,
    differences,
    notebook_cells,
    prepare_workdir,
    run_notebook,
    stopped_killer,
)

MiB = 1 << 20


def run_kind(kind: str, cells: list[str], limit: int, timeout: float) -> NotebookRun:
    """Return the run of ``cells`` in a fresh kernel of ``kind`` in its own group of ``limit`` bytes."""
    workdir = Path(tempfile.mkdtemp(prefix="ks-bench-nb-"))
    # Each kernel its own store: checkpoints of one run must not be found by the next.
    env = {"KERNEL_SENTINEL_HOME": str(workdir / "home"), "JUPYTER_RUNTIME_DIR": str(workdir / "runtime")}
    prepare_workdir(workdir)
    spec = SENTINEL_KERNELSPEC if kind == "sentinel" else None
    h = KernelHarness(workdir, limit_bytes=limit, kernelspec=spec, env=env, confine="cgroup")
    if h.cgroup is None:
        raise SystemExit("needs a writable memory cgroup")
    h.start()
    try:
        return run_notebook(h, kind, cells, timeout=timeout)
    finally:
        h.close()
        shutil.rmtree(workdir, ignore_errors=True)  # its checkpoints and copied data


def summary(run: NotebookRun) -> str:
    """Return a kernel's outcomes in a few words: '3 ok, 2 error (NameError x2), 1 died, 22 not run'."""
    outcomes = run.outcomes()
    counts = Counter(status for status, _ in outcomes)
    names = Counter(ename for status, ename in outcomes if status == "error")
    parts = [f"{counts.pop('ok', 0)} ok"]
    if counts.get("error"):
        detail = ", ".join(f"{n}" + (f" x{c}" if c > 1 else "") for n, c in sorted(names.items()))
        parts.append(f"{counts.pop('error')} error ({detail})")
    parts += [f"{c} {status}" for status, c in sorted(counts.items())]
    return ", ".join(parts)


def _slowest(run: NotebookRun) -> float:
    return max((r.seconds for r in run.results), default=0.0)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=384, help="each kernel's memory group (default 384)")
    parser.add_argument("--notebooks", default="0[23].*.ipynb", help="glob in tests/notebooks/handbook")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds (default 60)")
    args = parser.parse_args(argv)
    if not 0 < args.limit_mib <= 1024:
        parser.error("--limit-mib: at most 1024 (nothing that can exhaust memory runs in a bigger group)")
    paths = sorted(HANDBOOK.glob(args.notebooks))
    if not paths:
        parser.error(f"no notebook matches {args.notebooks!r} in {HANDBOOK}")
    limit = args.limit_mib * MiB
    started = time.monotonic()
    header = (f"{'notebook':<46} {'cells':>5}  {'stock':<58} {'sentinel':<58} {'diff':>4}  "
              f"{'peak MiB st/se':>14}  {'wall s st/se':>12}  {'slowest cell s':>14}")
    print(header)
    print("-" * len(header))
    rows, details = [], []
    for path in paths:
        cells = notebook_cells(path)
        stock = run_kind("stock", cells, limit, args.cell_timeout)
        sentinel = run_kind("sentinel", cells, limit, args.cell_timeout)
        diff = differences(stock, sentinel)
        guard = sentinel.guard or {}
        killed = stopped_killer(stock, sentinel)
        trouble = diff or not sentinel.alive or guard.get("interventions") or stock.oom_kills or sentinel.oom_kills
        rows.append((stock, sentinel, diff))
        print(f"{path.stem:<46} {len(cells):>5}  {summary(stock):<58} {summary(sentinel):<58} {len(diff):>4}  "
              f"{_mib(stock.peak_bytes):>6}/{_mib(sentinel.peak_bytes):<7}  "
              f"{stock.seconds:>5.1f}/{sentinel.seconds:<6.1f}  {_slowest(stock):>6.1f}/{_slowest(sentinel):<7.1f}",
              flush=True)
        if trouble:
            details.append((path.name, stock, sentinel, diff, guard, killed))
    print()
    for name, stock, sentinel, diff, guard, killed in details:
        print(f"== {name}: sentinel alive={sentinel.alive}, OOM kills stock={stock.oom_kills} "
              f"sentinel={sentinel.oom_kills}, interventions={guard.get('interventions')}")
        if killed is not None:
            res = sentinel.results[killed]
            print(f"   cell {killed}: stock OOM-killed, sentinel stopped it: {res.ename}: {(res.evalue or '')[:300]}")
            print(f"   code: {stock.cells[killed][:300]!r}")
            after = Counter(f"{st} {en}" if en else st for st, en in sentinel.outcomes()[killed + 1:])
            print(f"   sentinel's later cells (no stock counterpart): {dict(after)}")
        for line in diff:
            print("   " + line)
        if guard.get("last_failure"):
            print(f"   guard last_failure: {guard['last_failure']}")
    n_cells = sum(len(s.cells) for s, _, _ in rows)
    n_diff = sum(len(d) for _, _, d in rows)
    n_stopped = sum(1 for s, se, _ in rows if stopped_killer(s, se) is not None)
    pythonpath = [f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"] if os.environ.get("PYTHONPATH") else []
    print("command: " + " ".join(pythonpath + [shlex.quote(a) for a in [sys.executable, *sys.argv]]))
    print(f"kernel_sentinel: {Path(kernel_sentinel.__file__).parent}")
    print(f"totals: {len(rows)} notebooks, {n_cells} cells at {args.limit_mib} MiB; "
          f"{sum(1 for _, _, d in rows if d)} notebooks / {n_diff} cells end differently in the sentinel kernel; "
          f"stock wall {sum(s.seconds for s, _, _ in rows):.0f} s, sentinel wall {sum(s.seconds for _, s, _ in rows):.0f} s; "
          f"peak MiB max stock {_mib(max((s.peak_bytes or 0) for s, _, _ in rows))}, "
          f"sentinel {_mib(max((s.peak_bytes or 0) for _, s, _ in rows))}; "
          f"OOM kills stock {sum(s.oom_kills for s, _, _ in rows)}, sentinel {sum(s.oom_kills for _, s, _ in rows)}; "
          f"cells stopped by the guard where stock was OOM-killed {n_stopped}; "
          f"guard interventions {sum((s.guard or {}).get('interventions') or 0 for _, s, _ in rows)}; "
          f"sentinel kernels dead at the end {sum(1 for _, s, _ in rows if not s.alive)}; "
          f"run {time.monotonic() - started:.0f} s")
    return 1 if n_diff or any(not se.alive for _, se, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
