"""The guard never kills the kernel itself: a minute of random allocations across threads, zero deaths.

Four threads per cell allocate arrays of random sizes (4 KiB .. 400 MiB, touched), keep a few, drop
others, and catch MemoryError as ordinary code would; the main thread waits for them. Cells run back to
back for a minute of wall time in a 1 GiB group. Every cell ends either fine or with MemoryBudgetError;
the kernel never dies and the OOM killer never acts. Then the kernel still does real work.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import SENTINEL_KERNELSPEC, GiB

pytestmark = pytest.mark.cgroup

GUARDED = SENTINEL_KERNELSPEC

STRESS = r"""
import random, threading, numpy as np
stop.set()
for t in workers:
    if t.ident is not None:  # a cell interrupted while starting them leaves some never started
        t.join()
stop = threading.Event()
def work(seed):
    rng = random.Random(seed)
    kept = []
    while not stop.is_set():
        n = int(2 ** rng.uniform(12, 28.6))  # 4 KiB .. ~400 MiB, log-uniform
        try:
            a = np.empty(n, dtype=np.uint8)
            a[:: 4096] = 1  # touch every page
            kept.append(a)
        except MemoryError:
            stats['memory_errors'] += 1
            kept.clear()
        if len(kept) > rng.randint(1, 4):
            kept.pop(rng.randrange(len(kept)))
        stats['allocations'] += 1
workers = [threading.Thread(target=work, args=(seed + i,), daemon=True) for i in range(4)]
for t in workers:
    t.start()
stop.wait(SECONDS)
stop.set()
for t in workers:
    t.join()
seed += 4
"""


def test_a_minute_of_random_allocations_across_threads_kills_nothing(kernel):
    k = kernel(limit_bytes=GiB, kernelspec=GUARDED, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    before = k.oom_kills()
    setup = "import threading\nstop = threading.Event()\nworkers = []\nseed = 0\nstats = {'allocations': 0, 'memory_errors': 0}\nkeep = list(range(1000))"
    assert k.run(setup).ok
    outcomes: dict[str, int] = {}
    end = time.monotonic() + 60
    cells = 0
    while time.monotonic() < end:
        res = k.run(STRESS.replace("SECONDS", "8"), timeout=180)
        cells += 1
        key = res.status if res.ok else f"{res.status}:{res.ename}"
        outcomes[key] = outcomes.get(key, 0) + 1
        assert res.status in ("ok", "error"), (res.status, res.text()[-2000:])
        assert res.ok or res.ename == "MemoryBudgetError", res.text()[-2000:]
        assert k.alive
    for _ in range(5):  # the workers of an interrupted cell may still be growing: stopping them can be too
        last = k.run("stop.set()\nfor t in workers:\n    if t.ident is not None:\n        t.join()")
        assert last.ok or last.ename == "MemoryBudgetError", last.text()[-2000:]
        if last.ok:
            break
    assert last.ok
    stats = k.value("stats")
    interventions = k.value("__import__('kernel_sentinel.guard', fromlist=['x']).get_guard().interventions")
    print(f"{cells} cells: {outcomes}; {stats}; {interventions} interventions")
    assert stats["allocations"] > 100
    assert k.alive and k.oom_kills() == before
    assert k.value("sum(keep)") == 499500
    final = k.run("import numpy as np\nz = np.ones(300 * 2**20 // 8); z[:] = 2; del z")
    assert final.ok or final.ename == "MemoryBudgetError", final.text()[-2000:]
    if not final.ok:
        # Known gap (README): after the minute, the workers' freed arrays sit in glibc's per-thread arenas
        # (891 MiB free in arenas, 29 MiB in use, measured with mallinfo2), whose free tops malloc_trim does
        # not return: that memory is resident, so the guard rightly counts it, and a stock kernel holding it
        # would meet the OOM killer. Giving it back (fixed mallopt thresholds) is not yet landed.
        pytest.xfail("the workers' freed memory stays resident in glibc's thread arenas: " + final.evalue[:200])


DOOMED_START = (  # a thread that ends before it says it started, as one whose first allocation met the fence
    "import threading\n"
    "class Doomed(threading.Thread):\n"
    "    def _set_tstate_lock(self):\n"
    "        raise MemoryError('the new thread could not allocate')\n"
    "Doomed(target=print).start()"
)


@pytest.mark.skipif(not hasattr(threading.Thread, "_set_tstate_lock"), reason="CPython 3.11/3.12's thread start")
def test_a_thread_that_ends_before_it_started_does_not_hang_the_cell(kernel):
    """CPython waits forever in ``Thread.start()`` when the new thread ends before signalling that it started.

    The stress minute hung so (main thread in ``Thread.start``, no worker left; 2 runs in ~40 under load) with
    room under the fence at every tick, where the guard looked only after the fence had had none. Control: the
    same cell in a stock kernel is still waiting 15 s later.
    """
    stock = kernel(limit_bytes=GiB)
    assert stock.run(DOOMED_START, timeout=15).status == "timeout"
    k = kernel(limit_bytes=GiB, kernelspec=GUARDED, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    res = k.run(DOOMED_START, timeout=60)
    assert res.status == "error" and res.ename == "MemoryBudgetError", (res.status, res.text()[-1500:])
    assert k.run("x = 1").ok and k.alive
