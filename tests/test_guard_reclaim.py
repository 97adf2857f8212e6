"""Reclaim: memory a failed cell or old outputs hold really goes back to the OS, measured from outside.

The kernels here are stock ipykernels in 1 GiB cgroups; the failure handler below is the same call the
guard's own exception handler makes (show the traceback, then ``release_after_failure``), so these tests
do not depend on the guard's core being loaded.
"""

from __future__ import annotations

import sys
import textwrap
import traceback
import weakref

import pytest
from conftest import SENTINEL_KERNELSPEC, MiB

from kernel_sentinel.guard.reclaim import clear_traceback

HANDLER = textwrap.dedent(
    """
    import os, signal, time
    from kernel_sentinel.guard.reclaim import release_after_failure
    def _handler(self, etype, value, tb, tb_offset=None):
        self.showtraceback((etype, value, tb), tb_offset=tb_offset)
        if RELEASE:
            release_after_failure(self, etype, value, tb)
    get_ipython().set_custom_exc((MemoryError, KeyboardInterrupt), _handler)
    """
)

# A function that builds ~350 MB of small objects (the FACTS.md case), then fails.
FAILING_CELL = textwrap.dedent(
    """
    def work():
        rows = [bytes(1000) + bytes([i % 256]) for i in range(350_000)]
        {fail}
    work()
    """
)
FAILURES = {
    "MemoryError": "bytearray(1 << 44)  # 16 TiB: refused by the kernel at once, nothing allocated",
    "KeyboardInterrupt": "os.kill(os.getpid(), signal.SIGINT); time.sleep(30)  # as the watchdog interrupts",
}


def rss(pid: int) -> int:
    """Return a process's VmRSS in bytes, read from outside it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _Block:
    pass


def _fail_with_local(store: list) -> None:
    block = _Block()
    store.append(weakref.ref(block))
    raise ValueError("fails with a local alive")


# In a fresh interpreter (glibc's thresholds are fixed as the guard fixes them after a memory error): a thread fills
# its arena with 56 MB and frees it, the main thread asks; the same thread (the same arena) fills 45 MB of it again,
# less than the slack: what goes beyond the heap's old writable size is mprotect'ed afresh and moves VmData.
HEAP_SLACK = textwrap.dedent(
    """
    import ctypes, json, threading
    from kernel_sentinel.guard.reclaim import heap_slack_bytes, malloc_free_bytes
    libc = ctypes.CDLL(None)
    libc.mallopt(-1, 8 << 20)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) << 10 for k in ("VmData", "RssAnon")}
    freed, asked = threading.Event(), threading.Event()
    seen = []
    def work():
        seen.append(status())  # the thread's stack mapped: VmData moves no more for it
        r = [bytearray(1600000) for _ in range(35)]
        del r
        seen.append(status())
        freed.set()
        asked.wait()
        r = [bytearray(1600000) for _ in range(28)]
        seen.append(status())
        del r
    t = threading.Thread(target=work); t.start()
    freed.wait()
    out = {"slack": heap_slack_bytes(), "free": malloc_free_bytes()}
    asked.set(); t.join()
    out["seen"] = seen
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_info: Linux only")
def test_heap_slack_counts_a_shrunk_arena_that_is_taken_again_without_vmdata_growing() -> None:
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", HEAP_SLACK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    before, freed, refilled = out["seen"]
    # The shrunk heap stays in VmData, handed back (not resident), and mallinfo2 does not count it as free ...
    assert freed["VmData"] - before["VmData"] >= 32 * MiB, out
    assert freed["RssAnon"] - before["RssAnon"] < 24 * MiB, out
    assert out["free"] is not None and out["free"] < out["slack"], out
    assert out["slack"] >= 32 * MiB, out
    # ... and taking it again moves RSS, not VmData: no fence set on VmData sees it (what the guard's count is for).
    assert refilled["RssAnon"] - freed["RssAnon"] >= 24 * MiB, out
    assert refilled["VmData"] - freed["VmData"] < 4 * MiB, out


@pytest.mark.parametrize("formatter_read_locals", [False, True])
def test_clear_traceback_frees_locals_even_after_f_locals_was_read(formatter_read_locals: bool) -> None:
    """3.11: once a formatter read ``frame.f_locals``, ``traceback.clear_frames`` leaves that snapshot alive."""
    refs: list = []
    try:
        _fail_with_local(refs)
    except ValueError as exc:
        tb = exc.__traceback__
    if formatter_read_locals:
        tb.tb_next.tb_frame.f_locals  # what IPython's verbose traceback (stack_data) does
    traceback.clear_frames(tb)
    if formatter_read_locals and sys.version_info < (3, 12):
        assert refs[0]() is not None  # the stdlib alone is not enough here: what clear_traceback is for
    clear_traceback(tb)
    assert refs[0]() is None
    module_globals = globals()
    assert module_globals["_Block"] is _Block  # module-level frames' f_locals (globals) are never cleared


@pytest.mark.parametrize("ename", sorted(FAILURES))
def test_rss_returns_after_a_failed_cell(kernel, ename: str) -> None:
    k = kernel(limit_bytes=1024 * MiB)
    assert k.run("RELEASE = True\n" + HANDLER).ok
    before = rss(k.kernel_pid)
    res = k.run(FAILING_CELL.format(fail=FAILURES[ename]))
    assert res.status == "error" and res.ename == ename, res.text()
    after = rss(k.kernel_pid)
    assert after <= before * 1.10, f"RSS {before / MiB:.0f} MiB before, {after / MiB:.0f} MiB after"
    assert k.run("x = 1").ok  # the kernel works on
    assert k.alive and k.oom_kills() == 0


def test_without_release_the_failed_cell_memory_stays(kernel) -> None:
    """The control: the same failure without ``release_after_failure`` keeps ~350 MB (so the test above can fail)."""
    k = kernel(limit_bytes=1024 * MiB)
    assert k.run("RELEASE = False\n" + HANDLER).ok
    before = rss(k.kernel_pid)
    res = k.run(FAILING_CELL.format(fail=FAILURES["MemoryError"]))
    assert res.ename == "MemoryError"
    assert rss(k.kernel_pid) > before + 250 * MiB


def test_free_hidden_frees_displayed_dataframes(kernel) -> None:
    k = kernel(limit_bytes=1024 * MiB)
    setup = textwrap.dedent(
        """
        import numpy as np, pandas as pd
        def frame(seed):
            rng = np.random.default_rng(seed)
            return pd.DataFrame({"x": rng.random(2_000_000), "y": rng.random(2_000_000),
                                 "label": [f"item-{i}" for i in range(400_000)] * 5})
        """
    )
    assert k.run(setup).ok
    before = rss(k.kernel_pid)
    for seed in range(4):
        res = k.run(f"frame({seed})")  # displayed: only Out, _N and _ keep it
        assert res.ok and res.outputs, res.text()
    grown = rss(k.kernel_pid)
    assert grown > before + 200 * MiB, "the displayed frames should have stayed alive in Out"
    res = k.run("from kernel_sentinel.guard.reclaim import free_hidden\nprint(free_hidden(get_ipython()).text())")
    assert res.ok, res.text()
    after = rss(k.kernel_pid)
    assert "Out (4 results" in res.stdout
    assert "RSS" in res.stdout and "freed" in res.stdout
    assert after <= before * 1.10 + 10 * MiB, (
        f"RSS {before / MiB:.0f} MiB before the frames, {grown / MiB:.0f} with them, {after / MiB:.0f} after free"
    )
    assert k.value("len(Out)") == 0


def test_free_hidden_frees_what_an_old_traceback_holds(kernel) -> None:
    k = kernel(limit_bytes=1024 * MiB)
    assert k.run("import numpy as np").ok
    before = rss(k.kernel_pid)
    res = k.run("def f():\n    block = np.ones(300 * 1024 * 1024 // 8)\n    1 / 0\nf()")
    assert res.ename == "ZeroDivisionError"
    assert rss(k.kernel_pid) > before + 250 * MiB
    res = k.run("from kernel_sentinel.guard.reclaim import free_hidden\nprint(free_hidden(get_ipython()).text())")
    assert "last traceback" in res.stdout, res.stdout
    assert rss(k.kernel_pid) <= before * 1.10


# --- with the real guard (the sentinel kernelspec) -------------------------------------------------------

GUARDED = SENTINEL_KERNELSPEC

GUARDED_FAILURES = {
    # The watchdog stops a function that grows a local list of arrays: the frames held ~900 MB.
    "watchdog_local_growth": "def grow():\n    out = []\n    while True:\n        out.append(np.ones(1_000_000))\ngrow()",
    # An exploding merge: pandas' own frames hold the big intermediate arrays when the fence refuses.
    "merge_explosion": "left.merge(right, on='k')",
    # Small Python objects (malloc'ed, not mmap'ed): only malloc_trim gives them back.
    "small_objects": "def build():\n    rows = [bytes(1000) + bytes([i % 256]) for i in range(2_000_000)]\n    return len(rows)\nbuild()",
}


@pytest.mark.parametrize("case", sorted(GUARDED_FAILURES))
def test_rss_returns_after_a_memory_budget_error(kernel, case: str) -> None:
    k = kernel(limit_bytes=1024 * MiB, kernelspec=GUARDED)
    setup = (
        "import numpy as np, pandas as pd\n"
        "left = pd.DataFrame({'k': np.zeros(20_000, dtype=int), 'a': np.arange(20_000)})\n"
        "right = pd.DataFrame({'k': np.zeros(20_000, dtype=int), 'b': np.arange(20_000)})\n"
        "kept = np.arange(1_000_000)"
    )
    assert k.run(setup).ok
    before = rss(k.kernel_pid)
    res = k.run(GUARDED_FAILURES[case])
    assert res.status == "error" and res.ename == "MemoryBudgetError", res.text()
    after = rss(k.kernel_pid)
    assert k.alive and k.oom_kills() == 0
    assert k.value("int(kept[-1])") == 999_999
    # Measured: in about one run in four, 16-17 MiB more stays resident after the watchdog case although no
    # object holds it (no array alive, malloc_trim(0) run again in a later cell): allocator retention, not
    # the cell's memory. That much slack is allowed on top of the 10%; the held memory itself was ~900 MB.
    slack = 20 * MiB
    assert after <= before * 1.10 + slack, f"{case}: RSS {before / MiB:.0f} MiB before, {after / MiB:.0f} MiB after"
    print(f"{case}: RSS {before / MiB:.0f} MiB before the cell, {after / MiB:.0f} MiB after the error")
