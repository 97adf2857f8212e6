"""The guard's cell start asks glibc how much it holds free only when the answer can have changed (issue 11).

``mallinfo2`` walks every free chunk of every arena (~210 us on a heap fragmented by 200k small objects), and it
was asked at every cell's start while a quarter to half of the budget was in use. Now at most once a second, and
afresh after a memory error, after a cell that took a sixteenth of the budget, and once VmData grew that much:
the cells whose `del` can have put that much into malloc's free lists. Real kernels in 1 GiB groups; inside
them the once-a-second window is made an hour, so that no assertion depends on the machine's speed.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import GiB
from test_guard_lib_cases import SENTINEL_SPEC, SETUP, by_name, cleanup_code, files_code, make_files

from kernel_sentinel.guard import threadstop
from kernel_sentinel.guard.controller import FRESH_CELLS, threads_alive

pytestmark = pytest.mark.cgroup

ISOLATE = {"KERNEL_SENTINEL_CHECKPOINT": "0"}  # the guard alone: no checkpoint writer forks in the group
GUARD = "__import__('kernel_sentinel.guard', fromlist=['get_guard']).get_guard()"
# Inside the kernel: the window an hour, and the cells (execution counts) whose start asked malloc.
COUNT_ASKS = """
import threading as _th
import kernel_sentinel.guard.controller as _ctl
_ctl.FREE_ASK_SECONDS = 3600.0
_asked_at = []
_plain_free = _ctl.malloc_free_bytes
def _counted_free():
    if _th.current_thread() is _th.main_thread():  # a cell's start, not the watchdog's retake check
        _asked_at.append(get_ipython().execution_count)
    return _plain_free()
_ctl.malloc_free_bytes = _counted_free
"""
# A trivial cell that says its number as the cell-start hooks saw it (IPython's count, not the reply's).
TRIVIAL = "x = list(range(1000))\nprint(get_ipython().execution_count)"


def _in_band(k) -> tuple[int, int]:
    """Return (usage, budget) of the guard: the test means something only between a quarter and half in use."""
    usage, budget = k.value(f"[{GUARD}.usage_bytes, {GUARD}.budget_bytes]")
    assert budget <= GiB and budget // 4 < usage < budget // 2, (usage >> 20, budget >> 20)
    return usage, budget


def _trivial_cells(k, n: int) -> list[int]:
    """Run ``n`` trivial cells one after the other; return their numbers (as ``_asked_at`` holds them)."""
    counts = []
    for _ in range(n):
        res = k.run(TRIVIAL)
        assert res.ok, res.text()
        counts.append(int(res.stdout.split()[-1]))
    return counts


def test_a_quick_run_asks_malloc_once_but_the_cells_after_a_memory_error_or_a_big_cell_ask_afresh(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env=ISOLATE)
    assert k.confinement == "cgroup"
    res = k.run("import numpy as np\n" + COUNT_ASKS + "keep = np.ones(36 * 2**20)")  # 288 MiB, kept
    assert res.ok, res.text()
    assert k.value(f"{GUARD}.enabled") is True
    _trivial_cells(k, FRESH_CELLS + 1)  # the cells right after `keep` was taken ask afresh: let them pass
    _in_band(k)
    quick = _trivial_cells(k, 6)
    asked = k.value("_asked_at")
    assert not set(quick) & set(asked), (quick, asked)  # the work saved: no walk of malloc's bins in a quick run

    failed = k.run("too_big = np.ones(2**30 // 8)")  # the budget in one piece: the fence refuses it
    assert failed.status == "error" and failed.ename in ("MemoryError", "MemoryBudgetError"), failed.text()[:1500]
    _in_band(k)
    after_error = _trivial_cells(k, FRESH_CELLS + 3)
    asked = k.value("_asked_at")
    assert after_error[0] in asked, (after_error, asked)  # its `del` may come next
    assert not set(after_error[-2:]) & set(asked), (after_error, asked)  # ... and only for a few cells

    took = k.run("more = np.ones(10 * 2**20)\nmore[:] = 2.0")  # 80 MiB, over a sixteenth of the budget, kept
    assert took.ok, took.text()
    after_big = _trivial_cells(k, 1)
    assert after_big[0] in k.value("_asked_at"), (after_big, k.value("_asked_at"))
    assert k.alive and k.oom_kills() == 0


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("default-cost-guard-files"))


def test_delete_then_allocate_after_a_killer_completes_with_malloc_asked_just_before(kernel, case_files) -> None:
    """The soak's sequence (a killer, its variables deleted, 560 MiB at once) with the answer kept for an hour."""
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env=ISOLATE)
    assert k.confinement == "cgroup"
    res = k.run(SETUP + "\n" + files_code(case_files) + "\n" + COUNT_ASKS)
    assert res.ok, res.text()
    _trivial_cells(k, FRESH_CELLS + 1)  # malloc was asked just now: the cached answer is fresh
    before = k.oom_kills()
    killer = by_name("numpy_append_loop")
    stopped = k.run(killer.code, timeout=180)
    assert stopped.status == "error", stopped.text()[:2000]
    assert k.run(cleanup_code(killer)).ok
    legit = by_name("numpy_near_limit")
    done = k.run(legit.code, timeout=180)
    assert done.ok, done.text()[:2000]
    assert k.alive and k.oom_kills() == before
    assert k.value("sentinel_value") == "still here"


def test_threads_alive_is_threadstops_set_while_threads_start_and_end() -> None:
    stop = threading.Event()
    started = [threading.Thread(target=stop.wait, name=f"t{i}") for i in range(8)]
    try:
        for t in started:
            t.start()
            assert threads_alive() == frozenset(threadstop.alive())
        assert {t.ident for t in started} <= threads_alive()
    finally:
        stop.set()
        for t in started:
            t.join(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(t.ident in threads_alive() for t in started):
        time.sleep(0.01)
    assert not {t.ident for t in started} & threads_alive()
    assert threads_alive() == frozenset(threadstop.alive())
