"""Capture real guard evidence for the explain/render tests: run each failure in a real kernel in a 1 GiB cgroup.

Run from the repo root: ``.venv/bin/python tests/samples/guard_evidence/capture.py``. Each case runs the
guard's core (``Guard``: fence + watchdog) by hand in a stock ipykernel, lets the real failure happen,
and writes ``<case>.json`` with the evidence ``Guard.begin_failure`` returned (plus the cell's code, as the
extension adds it) and the ``namespace_report`` taken at that moment. The kernel is confined to a memory
cgroup of 1 GiB, so a guard bug costs a kernel, never the machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
from kernel_harness import KernelHarness  # noqa: E402

SETUP = textwrap.dedent(
    """
    import json, gc, os, sys
    import numpy as np, pandas as pd
    from kernel_sentinel.guard.core import Guard
    from kernel_sentinel.guard.config import resolve_settings
    from kernel_sentinel.guard.namespace import namespace_report
    from kernel_sentinel.guard.reclaim import release_after_failure
    _g = Guard(resolve_settings()); _g.enable()
    def _capture(code):
        ip = get_ipython()
        _g.cell_started(ip.execution_count)
        out = None
        try:
            exec(code, ip.user_ns)
        except (MemoryError, KeyboardInterrupt) as exc:
            trigger = "watchdog" if _g.consume_interrupt() else "fence"
            ev = _g.begin_failure(trigger, exc)
            ev["code"] = code
            rep = namespace_report(ip)
            out = {"evidence": ev, "report": rep.to_dict()}
            release_after_failure(ip, type(exc), exc, exc.__traceback__)
            del exc
            _g.end_failure()
        finally:
            _g.cell_finished()
        print(json.dumps(out))
    """
)

CASES = {
    "numpy_huge": ("small = np.ones(1_000_000)", "a = np.ones((20000, 20000))"),
    "numpy_float64_fits_as_float32": (
        "keep = np.ones(55_000_000)  # 440 MB already used",
        "x = np.random.rand(12000, 5000)  # 480 MB: does not fit, 240 MB would",
    ),
    "merge_explosion": (
        "left = pd.DataFrame({'k': np.zeros(20_000, dtype=int), 'a': np.arange(20_000)})\n"
        "right = pd.DataFrame({'k': np.zeros(20_000, dtype=int), 'b': np.arange(20_000)})",
        "m = left.merge(right, on='k')",
    ),
    "append_loop": ("", "def grow():\n    out = []\n    while True:\n        out.append(np.ones(1_000_000))\ngrow()"),
    "ctypes_buffer": ("import ctypes", "buf = ctypes.create_string_buffer(3_000_000_000)"),
    "big_variable_then_alloc": (
        "df = pd.DataFrame(np.ones((4_000_000, 10)))  # 320 MB, no longer needed",
        "y = np.ones((8000, 10000))  # 640 MB",
    ),
}


def read_csv_case(k: KernelHarness, workdir: Path) -> dict:
    csv = workdir / "sales.csv"
    row = "2024-01-01,store-0042,product-name-with-some-length,3,19.99,customer-000123456\n"
    with open(csv, "w") as f:
        f.write("date,store,product,qty,price,customer\n")
        chunk = row * 100_000
        while f.tell() < 430 * 1024 * 1024:
            f.write(chunk)
    return run_case(k, "", f"sales = pd.read_csv({str(csv)!r})")


def out_cache_case(k: KernelHarness) -> dict:
    for _ in range(5):
        res = k.run("pd.DataFrame(np.ones((2_000_000, 8)))")  # 128 MB each, kept alive by Out
        assert res.ok, res.text()
    return run_case(k, "", "frame = pd.DataFrame(np.ones((4_000_000, 8)))")


def recursion_case(workdir: Path) -> dict:
    """A runaway recursion in the sentinel kernel itself (its signal handler notes the depth), in 384 MiB."""
    from conftest import GUARD_EXPR, SENTINEL_KERNELSPEC

    k = KernelHarness(workdir, limit_bytes=384 << 20, kernelspec=SENTINEL_KERNELSPEC,
                      env={"KERNEL_SENTINEL_CHECKPOINT": "0"}).start()
    try:
        res = k.run("import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)", timeout=180)
        assert res.ename == "MemoryBudgetError", res.text()[-1500:]
        report = k.value("__import__('kernel_sentinel.guard.namespace', fromlist=['_'])"
                         ".namespace_report(get_ipython()).to_dict()")
        return {"evidence": k.value(f"{GUARD_EXPR}.last_failure"), "report": report, "alive_after": k.alive}
    finally:
        k.close()


def run_case(k: KernelHarness, setup: str, code: str) -> dict:
    if setup:
        res = k.run(setup)
        assert res.ok, res.text()
    res = k.run(f"_capture({code!r})")
    assert res.ok, res.text()
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    only = set(sys.argv[1:])
    for name in [*CASES, "read_csv", "out_cache", "recursion"]:
        if only and name not in only:
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"ks-capture-{name}-"))
        if name == "recursion":
            got = recursion_case(workdir)
            got["case"] = name
            (HERE / f"{name}.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
            print(name, got["evidence"]["recursion_function"], got["evidence"]["recursion_depth"])
            continue
        # read_csv: a budget configured below the cgroup's, as KERNEL_SENTINEL_MEMORY_LIMIT sets it.
        env = {"KERNEL_SENTINEL_MEMORY_LIMIT": "400M"} if name == "read_csv" else {}
        k = KernelHarness(workdir, limit_bytes=1 << 30, env=env).start()
        try:
            assert k.run(SETUP).ok
            if name == "read_csv":
                got = read_csv_case(k, workdir)
            elif name == "out_cache":
                got = out_cache_case(k)
            else:
                got = run_case(k, *CASES[name])
            if got is None:
                print(f"{name}: no failure happened", file=sys.stderr)
                continue
            got["case"] = name
            got["alive_after"] = k.alive
            (HERE / f"{name}.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
            print(name, got["evidence"]["trigger"], got["evidence"]["requested_bytes"], got["evidence"]["usage_bytes"])
        finally:
            k.close()


if __name__ == "__main__":
    main()
