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
