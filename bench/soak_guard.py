"""Soak: random mixes of kernel killers and legitimate cells in ONE sentinel kernel in a 1 GiB memory group.

    python bench/soak_guard.py [--minutes 10] [--seed 1] [--limit 1G] [--guard-only] [--warm] [--json out.json]

The cells are the acceptance suite's (tests/test_guard_lib_cases.py): every killer OOM-kills a stock
kernel in the same group, every legitimate cell completes in one. After each killer its variables are
deleted. Counted: kernel deaths, OOM kills (the group's counter), hangs (a cell still running after its
timeout), refusals of cells that fit (a legitimate cell failing with MemoryBudgetError), killers that were
not stopped with an error, and the kernel's RSS drift: its RSS right after set-up against its RSS at the end,
after every killer's variables were deleted. A dead or hung kernel is replaced so the soak goes on; the
summary says how often. Needs a writable memory cgroup (cgroup v1 or a delegated v2 subtree).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kernel_harness import KernelHarness  # noqa: E402
from test_guard_lib_cases import KILLERS, LEGIT, SETUP, cleanup_code, files_code, make_files  # noqa: E402

from kernel_sentinel.sizes import format_bytes, parse_size  # noqa: E402

SPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
}
CELL_TIMEOUT = 120.0
KILLER_SHARE = 0.4


def rss_of(k: KernelHarness) -> int | None:
    """Return the kernel process's RSS in bytes, read from outside (None when it is gone)."""
    try:
        import psutil

        return psutil.Process(k.kernel_pid).memory_info().rss
    except Exception:
        return None


def rss_anon_of(k: KernelHarness) -> int | None:
    """Return the kernel's anonymous RSS in bytes (heap and allocators' memory, not libraries' code pages).

    RSS also counts the file pages of every library a cell imported (scikit-learn's ~30 MiB at the first
    pairwise killer): this figure tells memory that could be given back from code that was loaded.
    """
    try:
        with open(f"/proc/{k.kernel_pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def hang_state(k: KernelHarness) -> str:
    """Return what a hung kernel looks like from outside: its RSS, the group's usage, the main thread's wait."""
    try:
        with open(f"/proc/{k.kernel_pid}/wchan") as f:
            wchan = f.read().strip() or "running"
    except OSError:
        wchan = "?"
    usage = k.cgroup.usage_bytes() if k.cgroup else None
    threads = []
    try:
        import os

        for tid in sorted(os.listdir(f"/proc/{k.kernel_pid}/task"), key=int)[:24]:
            with open(f"/proc/{k.kernel_pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{k.kernel_pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            threads.append(f"{name}:{state}")
    except (OSError, ValueError, IndexError):
        pass
    return (f"kernel RSS {format_bytes(rss_of(k))}, group usage {format_bytes(usage)}, main thread in {wchan}; "
            f"threads {' '.join(threads)}")


def start(workdir: Path, limit: int, env: dict[str, str], files: dict[str, Path], warm: bool = False) -> KernelHarness:
    """Start a sentinel kernel in its own memory group and run the set-up cell in it.

    ``warm``: then run every legitimate case once (deleting after each) and import what the killers import,
    so the base the RSS is measured against holds what first use of each library keeps for good (its code
    pages, polars' thread pool, scikit-learn's modules) and the drift is what the killers left.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    k = KernelHarness(workdir, limit_bytes=limit, kernelspec=SPEC, env=env).start()
    res = k.run(SETUP + "\n" + files_code(files))
    if not res.ok:
        raise SystemExit(f"set-up cell failed: {res.ename}: {res.evalue}")
    if warm:
        k.run("from sklearn.metrics import pairwise_distances", timeout=CELL_TIMEOUT)
        for case in LEGIT:
            if case.prepare:
                k.run(case.prepare, timeout=CELL_TIMEOUT)
            k.run(case.code, timeout=CELL_TIMEOUT)
            k.run(cleanup_code(case), timeout=CELL_TIMEOUT)
    return k


def soak(minutes: float, seed: int, limit: int, env: dict[str, str], work: Path, warm: bool = False) -> dict:
    """Run the soak; return its counts and RSS figures."""
    rng = random.Random(seed)
    files = make_files(work / "files")
    counts: Counter[str] = Counter()
    refused: list[str] = []
    escaped: list[str] = []
    kernels = 0
    oom_kills = 0
    k = start(work / f"kernel{kernels}", limit, env, files, warm)
    time.sleep(2)
    rss_start = rss_of(k)
    base = rss_start or 0  # this kernel's RSS after set-up (a replaced kernel starts a new base)
    anon_base = rss_anon_of(k) or 0
    drifts: list[int] = []  # RSS over its base right after each killer's variables were deleted
    anon_drifts: list[int] = []  # the same for anonymous RSS
    # one row a cell: [case, killer, status, ename, RSS after its clean-up (MiB), anonymous RSS then (MiB)]
    log: list[list] = []
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        killer = rng.random() < KILLER_SHARE
        case = rng.choice(KILLERS if killer else LEGIT)
        counts["cells"] += 1
        if case.prepare:
            k.run(case.prepare, timeout=CELL_TIMEOUT)
        before = k.oom_kills()
        res = k.run(case.code, timeout=CELL_TIMEOUT)
        moved = k.oom_kills() - before
        oom_kills += max(0, moved)
        if res.status == "died" or not k.alive:
            counts["deaths"] += 1
            escaped.append(f"{case.name}: kernel died")
        elif res.status == "timeout":
            counts["hangs"] += 1
            escaped.append(f"{case.name}: hang ({hang_state(k)})")
        elif killer:
            counts["killers"] += 1
            counts["killers_stopped" if res.status == "error" else "killers_completed"] += 1
            if res.ename == "MemoryBudgetError":
                counts["memory_budget_errors"] += 1
        else:
            counts["legit"] += 1
            if res.status != "ok":
                counts["legit_failed"] += 1
                if res.ename == "MemoryBudgetError":
                    counts["false_refusals"] += 1
                refused.append(f"{case.name}: {res.ename}: {(res.evalue or '')[:160]}")
        if res.status in ("died", "timeout") or not k.alive:
            k.close()
            kernels += 1
            k = start(work / f"kernel{kernels}", limit, env, files, warm)
            time.sleep(2)
            base = rss_of(k) or 0
            anon_base = rss_anon_of(k) or 0
            continue
        clean = k.run(cleanup_code(case), timeout=CELL_TIMEOUT)
        rss = rss_of(k) or 0
        anon = rss_anon_of(k) or 0
        log.append([case.name, killer, res.status, res.ename, rss >> 20, anon >> 20])
        if clean.status == "timeout":
            counts["hangs"] += 1
            escaped.append(f"{case.name}: cleanup hang")
        elif killer:
            drifts.append(rss - base)
            anon_drifts.append(anon - anon_base)
    time.sleep(2)
    k.run("gc.collect()", timeout=CELL_TIMEOUT)
    time.sleep(2)
    rss_end = rss_of(k) if kernels == 0 else None
    k.close()
    return {
        "minutes": minutes,
        "seed": seed,
        "warm": warm,
        "limit_bytes": limit,
        "env": env,
        "counts": dict(counts),
        "oom_kills": oom_kills,
        "kernels_started": kernels + 1,
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "drift_after_deletes_bytes": {"median": sorted(drifts)[len(drifts) // 2] if drifts else None,
                                      "max": max(drifts) if drifts else None,
                                      "last": drifts[-1] if drifts else None},
        "anon_drift_after_deletes_bytes": {"median": sorted(anon_drifts)[len(anon_drifts) // 2] if anon_drifts else None,
                                           "max": max(anon_drifts) if anon_drifts else None},
        "false_refusals": refused,
        "escaped": escaped,
        "cells": log,
    }


def render(result: dict) -> str:
    """Return the summary for the README (a few lines)."""
    c = result["counts"]
    drift = (
        f"{format_bytes(result['rss_start_bytes'])} -> {format_bytes(result['rss_end_bytes'])}"
        if result["rss_end_bytes"] is not None and result["rss_start_bytes"] is not None
        else "n/a (the kernel was replaced)"
    )
    lines = [
        f"soak: {result['minutes']:g} min, seed {result['seed']}, one sentinel kernel in a "
        f"{format_bytes(result['limit_bytes'])} group ({', '.join(f'{k}={v}' for k, v in result['env'].items()) or 'defaults'})"
        + (", base after a warm-up pass" if result.get("warm") else ""),
        f"  cells run: {c.get('cells', 0)}  (killers {c.get('killers', 0)}, legitimate {c.get('legit', 0)})",
        f"  killers stopped with an error: {c.get('killers_stopped', 0)} (MemoryBudgetError {c.get('memory_budget_errors', 0)}),"
        f" completed anyway: {c.get('killers_completed', 0)}",
        f"  deaths: {c.get('deaths', 0)}   OOM kills: {result['oom_kills']}   hangs: {c.get('hangs', 0)}",
        f"  refusals of cells that fit: {c.get('false_refusals', 0)}   other failures of legitimate cells: "
        f"{c.get('legit_failed', 0) - c.get('false_refusals', 0)}",
        f"  kernel RSS after set-up -> at the end (killers' variables deleted): {drift}",
        "  RSS over set-up right after each killer's variables were deleted: median {median}, max {max}, last {last}".format(
            **{k: format_bytes(v) for k, v in result["drift_after_deletes_bytes"].items()}),
        "  anonymous RSS (no libraries' code pages) over set-up then: median {median}, max {max}".format(
            **{k: format_bytes(v) for k, v in result.get("anon_drift_after_deletes_bytes", {}).items()}),
    ]
    for line in result["false_refusals"][:10]:
        lines.append(f"    refused: {line}")
    for line in result["escaped"][:10]:
        lines.append(f"    escaped: {line}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", default="1G", help="the memory group's limit (at most 1G)")
    parser.add_argument("--guard-only", action="store_true", help="checkpoints off (KERNEL_SENTINEL_CHECKPOINT=0)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--warm", action="store_true",
                        help="measure RSS drift from after one pass of the legitimate cells (libraries' first use kept)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ks-soak"))
    args = parser.parse_args(argv)
    limit = parse_size(args.limit)
    if limit > 1 << 30:
        print("soak_guard: the group is at most 1 GiB (memory is exhausted on purpose)", file=sys.stderr)
        return 64
    import os

    os.environ.setdefault("KERNEL_SENTINEL_HOME", str(args.work / "home"))  # not the user's store
    os.environ.setdefault("JUPYTER_RUNTIME_DIR", str(args.work / "runtime"))
    env = {"KERNEL_SENTINEL_CHECKPOINT": "0"} if args.guard_only else {}
    result = soak(args.minutes, args.seed, limit, env, args.work, args.warm)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
