"""polars in a guarded kernel: its own answer to the guard's interrupt, and lazy work that streams.

polars hooks SIGINT itself (signal_hook, chained before Python's handler): a query running in its in-memory
engine stops at the signal and returns a bare ``KeyboardInterrupt`` of its own, before the guard's handler
can raise ``GuardInterrupt``. When the guard sent that SIGINT (memory), the user must read a memory error
naming polars, not a KeyboardInterrupt they never sent; when the user sent it, it stays theirs. Seen with
real queries refused at the budget: 1 to 3 of 8 unsized polars killers ended that way (the rest met the fence
first), shown as a bare KeyboardInterrupt before 2026-12-01. Here the guard's send is forced (its own
``_interrupt_main``, what the watchdog calls) while a long sort runs, so the path is met every time.
"""

from __future__ import annotations

import threading

import pytest
from conftest import GUARD_EXPR, SENTINEL_KERNELSPEC, GiB

pytestmark = pytest.mark.cgroup

SETUP = "import numpy as np, polars as pl, threading, time\nframe = pl.DataFrame({'x': np.random.default_rng(0).random(40_000_000)})"
SORT = "s = frame.lazy().sort('x').collect(engine='in-memory')"  # ~1-2 s here, 640 MB: fits the group
GUARD_SENDS = f"_g = {GUARD_EXPR}\nthreading.Timer(0.3, lambda: _g._interrupt_main(time.monotonic())).start()\n"
# A cross join streamed through an aggregation: 400 M rows in ~80 MiB (a stock kernel runs it).
STREAMED = ("lz = pl.LazyFrame({'x': np.arange(20_000)})\n"
            "n = lz.join(lz, how='cross').filter(pl.col('x') < pl.col('x_right')).select(pl.len())"
            ".collect(engine='streaming').item()\nn")


def _interrupt_later(k, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, k.km.interrupt_kernel)  # jupyter_client's interrupt: SIGINT to the group
    timer.start()
    return timer


def test_polars_stopped_by_the_guards_interrupt_is_a_memory_error_naming_polars(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_KERNELSPEC, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    assert k.run(SETUP).ok
    res = k.run(GUARD_SENDS + SORT)
    assert res.status == "error" and res.ename == "MemoryBudgetError", res.text()[:2000]
    assert "Let polars stream it" in res.evalue  # polars' own remedy: the library was named
    evidence = k.value(f"{GUARD_EXPR}.last_failure")
    assert evidence["trigger"] == "watchdog" and evidence["library"] == "polars", evidence
    assert len([o for o in res.outputs if o["output_type"] == "error"]) == 1
    # The user's own interrupt of the same query stays a KeyboardInterrupt, as in a stock kernel.
    timer = _interrupt_later(k, 0.3)
    res = k.run(SORT)
    timer.join()
    assert res.status == "error" and res.ename == "KeyboardInterrupt", res.text()[:2000]
    assert k.run("s = None\n1 + 1").ok and k.alive


def test_a_users_interrupt_of_polars_is_a_keyboard_interrupt_in_stock_too(kernel) -> None:
    """The control: what a stock kernel shows for the same interrupt (so the sentinel's is stock-equal)."""
    k = kernel(limit_bytes=GiB)
    assert k.run(SETUP).ok
    timer = _interrupt_later(k, 0.3)
    res = k.run(SORT)
    timer.join()
    assert res.status == "error" and res.ename == "KeyboardInterrupt", res.text()[:2000]


@pytest.mark.parametrize("sentinel", [False, True], ids=["stock", "sentinel"])
def test_a_lazy_cross_join_streamed_through_an_aggregation_runs(kernel, sentinel: bool) -> None:
    """Refused before 2026-12-01 (the pre-run check sized the join's 6 GB output); both kernels run it."""
    spec = {"kernelspec": SENTINEL_KERNELSPEC, "env": {"KERNEL_SENTINEL_CHECKPOINT": "0"}} if sentinel else {}
    k = kernel(limit_bytes=GiB, **spec)
    assert k.run("import numpy as np, polars as pl").ok
    res = k.run(STREAMED)
    assert res.ok, res.text()[:2000]
    assert k.value("n") == 20_000 * 19_999 // 2
