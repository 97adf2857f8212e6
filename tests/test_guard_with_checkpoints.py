"""The defaults together: guard and checkpoints both on, in a real 1 GiB cgroup, near the limit.

The checkpoint writer is a forked child whose copied pages are charged to the kernel's group. The guard's
promise (the cell fails, nothing is OOM-killed, the counter does not move) must hold with it running.
"""

from __future__ import annotations

import pytest
from conftest import SENTINEL_KERNELSPEC, GiB

pytestmark = pytest.mark.cgroup

SENTINEL = {**SENTINEL_KERNELSPEC, "env": {"KERNEL_SENTINEL_CHECKPOINT": "on"}}


def test_growth_loops_with_checkpoints_on_move_no_oom_counter(kernel):
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL)
    assert k.run("import numpy as np\nkeep = np.arange(10_000_000)").ok  # 80 MB worth checkpointing
    before = k.oom_kills()
    for _ in range(2):
        # A million small objects: a forked writer pickling them copies every page they sit on.
        res = k.run("x = []\nwhile True:\n    x.append(' ' * 64 + str(len(x)))")
        assert res.ename == "MemoryBudgetError", res.text()[:1500]
        assert k.run("n = len(x)\ndel x").ok
        res = k.run("arrays = []\nwhile True:\n    arrays.append(np.ones(1 << 20))")
        assert res.ename == "MemoryBudgetError", res.text()[:1500]
        assert k.run("del arrays").ok
        assert k.alive
        assert k.oom_kills() == before
    assert k.value("int(keep[-1])") == 9_999_999
    assert "checkpoints: on" in k.run("%sentinel checkpoint status").text()


def test_leak_across_cells_with_checkpoints_on(kernel):
    # Each cell adds 100 MiB that a checkpoint wants to save; near the limit a forked writer would need
    # copies the group cannot hold (this failed before the writer chose by the whole process's size).
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL)
    assert k.run("import numpy as np\nbig = []").ok
    before = k.oom_kills()
    results = []
    for _ in range(14):  # 14 x 100 MiB: more than the 1 GiB group holds
        results.append(k.run("big.append(np.ones(100 * 2**20 // 8))"))
        if not results[-1].ok:
            break
    assert results[-1].ename == "MemoryBudgetError", results[-1].text()[:1500]
    assert k.alive and k.oom_kills() == before
    assert k.value("len(big)") >= 5
    assert k.run("del big").ok
    assert k.run("again = np.ones(300 * 2**20 // 8); again[:] = 2").ok
    assert k.oom_kills() == before


def test_delete_then_allocate_as_much_again_completes_as_in_stock(kernel):
    """`del a` then an array as big again, while a checkpoint of `a` may be running: the memory is back, as in stock.

    Legitimate work, side by side: both kernels complete. In a 1 GiB group a 560 MiB array beside 200 MiB of
    small objects leaves no room for a forked writer, so a thread reads the namespace and writes, and a pause may
    end while it writes `a`. The cell that starts then waits until the writer has let go of `a` (its chunk in
    flight ends), so `del a` frees it as in stock (test_resurrect_store.py tests that wait on its own).
    """
    import time

    for name, spec in (("stock", None), ("sentinel", SENTINEL)):
        k = kernel(limit_bytes=GiB, kernelspec=spec)
        # ~200 MiB of small objects: a forked writer would copy their pages, so in this group a thread writes
        assert k.run("import numpy as np\nnotes = [str(i) * 3 for i in range(2_000_000)]").ok
        time.sleep(3)  # the sentinel checkpoints them: later checkpoints write only what changed
        before = k.oom_kills()
        for pause in (0.6, 1.0, 1.4):
            assert k.run("a = np.ones(560 * 2**20, dtype=np.uint8)").ok, name
            time.sleep(pause)  # idle: the sentinel's checkpoint of `a` starts (after 0.1 s), reads, then writes
            assert k.run("del a").ok, name
            # Found by this test at f3130ba: refused with "798 MiB of the 1.0 GiB budget already in use" where stock
            # completes, about 1 run in 8 here: the thread writer, mid-chunk, still held `a` when `del a` ran.
            res = k.run("b = np.ones(560 * 2**20, dtype=np.uint8)\nint(b[::4096].sum())")
            assert res.ok, (name, res.text()[:1500])
            assert k.run("del b").ok, name
        assert k.alive and k.oom_kills() == before, name


def _private_bytes(pid: int) -> int:
    """Return the pages ``pid`` holds of its own (copied after a fork), from smaps_rollup; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) << 10 for line in f if line.startswith(("Private_Dirty:", "Private_Clean:")))
    except (OSError, ValueError, IndexError):
        return 0


def test_a_cell_that_starts_while_a_forked_writer_holds_copied_pages_gets_the_memory_as_in_stock(kernel):
    """A cell starting while the forked checkpoint writer holds copied pages gets the memory stock has.

    Found with two CPU burners: the writer of 200 MiB of small objects had copied 216 MiB of pages (every
    object's reference count) when `a = np.ones(...)` started; the writer was killed for the cell but was still
    exiting when the guard read the group at the cell's start, and the cell was refused ("the child process
    grew to about 216 MiB of the 1.0 GiB memory budget while Cell [2] waited for it"). Legitimate work, side by
    side: both kernels complete. Here the cell starts once the writer holds 128 MiB of its own.
    """
    import time

    import psutil

    for name, spec in (("stock", None), ("sentinel", SENTINEL)):
        k = kernel(limit_bytes=GiB, kernelspec=spec)
        assert k.run("import numpy as np\nnotes = [str(i) * 3 for i in range(2_000_000)]").ok
        before = k.oom_kills()
        if name == "sentinel":
            deadline = time.monotonic() + 120
            writer = None
            while writer is None or _private_bytes(writer) < 128 << 20:
                assert time.monotonic() < deadline, "no forked writer held 128 MiB of its own within 120 s"
                kids = psutil.Process(k.kernel_pid).children()
                writer = kids[0].pid if kids else None
                time.sleep(0.005)
        res = k.run("a = np.ones(640 * 2**20, dtype=np.uint8)\nint(a[::4096].sum())")
        assert res.ok, (name, res.text()[:1500])
        assert k.alive and k.oom_kills() == before, name
        if name == "sentinel":
            assert "checkpoint given up: a cell started before it was written" in k.run("%sentinel checkpoint status").text()
