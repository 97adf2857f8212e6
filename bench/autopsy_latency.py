"""How fast a death is on record, and what the flight recorder costs per cell and per sample.

Run: .venv/bin/python bench/autopsy_latency.py  (root with writable cgroup v1/v2; kernels in 512 MiB groups)
Prints, for SIGKILL and SIGSEGV deaths: time from the signal being sent (or the cell being sent) to the
death being in the store, and from the supervisor's wait4 returning to the row being written; then the
in-kernel cost of pre_run_cell + post_run_cell hooks and of one sampler tick.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
HOME = tempfile.mkdtemp(prefix="ks-bench-")
os.environ["KERNEL_SENTINEL_HOME"] = HOME
os.environ["JUPYTER_RUNTIME_DIR"] = HOME + "/runtime"

from kernel_harness import KernelHarness  # noqa: E402

from kernel_sentinel.autopsy.supervisor import kernel_id_from_connection_file  # noqa: E402
from kernel_sentinel.store import Store  # noqa: E402

SPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
    "env": {"KERNEL_SENTINEL_GUARD": "0"},
}


def one_death(kind: str) -> tuple[float, float]:
    wd = Path(tempfile.mkdtemp(prefix="ks-bench-k"))
    k = KernelHarness(wd, limit_bytes=512 << 20, kernelspec=SPEC).start()
    try:
        kid = kernel_id_from_connection_file(k.km.connection_file)
        assert k.run("x = 1").ok
        if kind == "SIGKILL":
            k.kc.execute("import time; time.sleep(30)")
            time.sleep(0.5)
            sent = time.time()
            os.kill(k.kernel_pid, signal.SIGKILL)
        else:
            sent = time.time()
            k.kc.execute("import ctypes; ctypes.string_at(0)")
        while True:
            with Store() as store:
                row = store.death(kid)
            if row is not None:
                break
            time.sleep(0.001)
        return row["recorded_at"] - sent, row["recorded_at"] - row["died_at"]
    finally:
        k.close()


def in_kernel_costs() -> str:
    wd = Path(tempfile.mkdtemp(prefix="ks-bench-k"))
    k = KernelHarness(wd, limit_bytes=512 << 20, kernelspec=SPEC).start()
    try:
        code = (
            "import time\n"
            "from types import SimpleNamespace\n"
            "from kernel_sentinel.autopsy import recorder as _r\n"
            "_rec = _r._recorder\n"
            "_info = SimpleNamespace(raw_cell='df = load()\\nprint(df.shape)\\n' * 5, store_history=True, cell_id=None)\n"
            "_res = SimpleNamespace(execution_count=None, info=_info)\n"
            "_n = 5000\n"
            "_t = time.perf_counter()\n"
            "for _ in range(_n):\n"
            "    _rec._pre_run_cell(_info); _rec._pending = None; _rec._post_run_cell(_res)\n"
            "_hooks = (time.perf_counter() - _t) / _n\n"
            "_t = time.perf_counter()\n"
            "for _i in range(500):\n"
            "    _rec._sample(_i)\n"
            "_tick = (time.perf_counter() - _t) / 500\n"
            "print(f'{_hooks * 1e6:.1f} {_tick * 1e6:.1f}')\n"
        )
        out = k.run(code)
        assert out.ok, out.text()
        hooks, tick = out.stdout.split()
        return f"pre_run_cell + post_run_cell: {hooks} us per cell; one sampler tick (every 250 ms; maps 1 in 4): {tick} us"
    finally:
        k.close()


if __name__ == "__main__":
    for kind in ("SIGKILL", "SIGSEGV"):
        runs = [one_death(kind) for _ in range(5)]
        total = [r[0] for r in runs]
        record = [r[1] for r in runs]
        print(
            f"{kind}: sent -> in store: median {statistics.median(total) * 1000:.0f} ms (max {max(total) * 1000:.0f});"
            f" wait4 -> in store: median {statistics.median(record) * 1000:.0f} ms (max {max(record) * 1000:.0f})"
        )
    print(in_kernel_costs())
