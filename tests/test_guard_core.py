"""The guard's core parts on their own: the fence arithmetic, thresholds, settings, budget, children.

Pure functions are tested directly; anything that changes process limits runs in a child process we
start (never in the pytest process), and the budget is read from this machine for real.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from conftest import GiB, MiB

from kernel_sentinel.guard.children import ChildAdjuster, read_oom_score_adj
from kernel_sentinel.guard.config import SentinelGuard, resolve_settings
from kernel_sentinel.guard.core import (
    Candidate,
    Reading,
    candidates_from,
    cell_level,
    fence_margin,
    growth_lead,
    interrupt_line,
    requested_bytes,
    tightest,
)
from kernel_sentinel.guard.fence import INFINITY, fence_limit
from kernel_sentinel.memory import snapshot

# -- the fence never creeps ----------------------------------------------------------------------------


def test_a_loop_that_takes_all_the_fence_allows_stops_at_the_budget():
    limit, margin = 1000 * MiB, 60 * MiB
    vm, ws = 300 * MiB, 100 * MiB
    for _ in range(1000):  # each tick: the fence is recomputed, the loop takes everything it allows
        fence = fence_limit(vm, limit - ws, margin)
        grab = fence - vm
        vm += grab
        ws += grab
        assert ws <= limit - margin
    assert ws == limit - margin
    assert fence_limit(vm, limit - ws, margin) == vm  # no room left, and none appears by itself


def test_untouched_address_space_counts_for_the_fence_not_for_the_interrupt():
    # np.empty(500 MiB): VmData up 500 MiB, resident memory not (yet). Touching it later must fit too.
    cand = Candidate(1000 * MiB, "cgroup:/g", "cgroup v1 /g", "cgroup")
    reading = Reading(vm_data=800 * MiB, rss=150 * MiB, cgroups={"/g": (200 * MiB, 200 * MiB)}, untouched=500 * MiB)
    assert tightest([cand], reading)[2] == 800 * MiB  # the watchdog: 200 MiB in use
    headroom = tightest([cand], reading, committed=True)[2]
    assert headroom == 300 * MiB  # the fence: 700 MiB will be in use once touched
    assert fence_limit(reading.vm_data, headroom, 64 * MiB) == 800 * MiB + 236 * MiB
    # A second np.empty of the same size in the next tick is refused; the first, touched, still fits.
    assert 500 * MiB > fence_limit(reading.vm_data, headroom, 64 * MiB) - reading.vm_data


def test_meters_count_untouched_allocations_while_fresh():
    code = r"""
import ctypes, json, mmap, time
from kernel_sentinel.guard.core import Meters
from kernel_sentinel.guard.meters import FORGIVE_SECONDS
m = Meters()
m.rebase()
before = m.read().untouched
buf = mmap.mmap(-1, 256 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # reserved, untouched
mid = m.read().untouched
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
ctypes.memset(addr, 1, 128 * 2**20)  # touch half, at once
after = m.read().untouched
time.sleep(FORGIVE_SECONDS * 2)  # nothing allocates: what is still untouched is a reservation
quiet = m.read().untouched
buf2 = mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # a fresh one counts again
fresh = m.read().untouched
print(json.dumps([before, mid, after, quiet, fresh]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, mid, after, quiet, fresh = json.loads(out)
    assert before < 8 * MiB
    assert 250 * MiB <= mid - before <= 262 * MiB
    assert 122 * MiB <= after - before <= 134 * MiB
    assert quiet < 8 * MiB
    assert 60 * MiB <= fresh - quiet <= 70 * MiB


def test_meters_forgive_pages_handed_back_only_by_a_trim_not_an_array_swapped_for_a_fresh_one():
    # Between two readings: a filled array unmapped and a fresh one of the same size mapped (pandas building a
    # DataFrame from a temporary): VmData unchanged, RSS down, untouched space up, as when malloc_trim() hands
    # pages back. The fresh array is an allocation in flight and counts; the trim's pages are forgiven at once.
    code = r"""
import ctypes, json, mmap
from kernel_sentinel.guard.core import Meters
from kernel_sentinel.guard.reclaim import malloc_trim
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
m = Meters()
size = 64 * 2**20
a = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
a.write(b"x" * size)
m.rebase(quiet_seconds=0)
before = m.read().untouched
a.close(); b = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # one step, no reading between
swapped = m.read().untouched
b.write(b"x" * size)
m.rebase(quiet_seconds=0)
blocks = [libc.malloc(100_000) for _ in range(640)]  # 61 MiB of heap under the mmap threshold
for p in blocks:
    ctypes.memset(p, 1, 100_000)
keep = libc.malloc(100_000)  # a block above them: free() alone cannot shrink the heap's top
for p in blocks:
    libc.free(p)
m.rebase(quiet_seconds=0)
r = m.read()
freed, rss = r.untouched, r.rss
malloc_trim()  # hands the freed heap back: RSS down, VmData not
r = m.read()
print(json.dumps([before, swapped, freed, r.untouched, rss - r.rss]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, swapped, freed, trimmed, handed_back = json.loads(out)
    assert before < 8 * MiB
    assert swapped - before >= 60 * MiB  # the fresh array counts until it is filled (it was forgiven before)
    assert handed_back >= 48 * MiB
    assert trimmed - freed < 8 * MiB  # the trim's pages are no allocation in flight


def test_the_fence_is_never_above_the_users_own_limits():
    assert fence_limit(100, 10_000, 10, original_soft=5_000) == 5_000
    assert fence_limit(100, 10_000, 10, hard=4_000) == 4_000
    assert fence_limit(100, 10_000, 10) == 100 + 9_990


def test_a_kernel_that_is_not_growing_may_take_a_little_of_the_margin_never_the_budget():
    limit, margin, last = 1000 * MiB, 16 * MiB, 4 * MiB
    vm, ws = 300 * MiB, 100 * MiB
    for _ in range(1000):  # even taking all it allows, tick after tick: never the last `last` of the budget
        fence = fence_limit(vm, limit - ws, margin, last_room=last)
        vm, ws = fence, ws + fence - vm
        assert ws <= limit - last
    assert ws == limit - last
    assert fence_limit(700 * MiB, margin, margin, last_room=last) == 704 * MiB  # at the margin: a reply, a `del`
    assert fence_limit(700 * MiB, 6 * MiB, margin, last_room=last) == 702 * MiB
    assert fence_limit(700 * MiB, 3 * MiB, margin, last_room=last) == 700 * MiB
    assert fence_limit(700 * MiB, 10 * MiB, margin, ceiling=701 * MiB, last_room=last) == 701 * MiB


def test_a_ceiling_is_absolute_and_does_not_follow_vmdata():
    ceiling = 500
    assert fence_limit(400, 10_000, 0, ceiling=ceiling) == 500
    assert fence_limit(499, 10_000, 0, ceiling=ceiling) == 500  # growth under it does not move it
    assert fence_limit(600, 10_000, 0, ceiling=ceiling) == 500  # below VmData: nothing more


def test_headroom_below_the_margin_allows_no_growth_at_all():
    assert fence_limit(700 * MiB, 30 * MiB, 64 * MiB) == 700 * MiB
    assert fence_limit(700 * MiB, -100 * MiB, 64 * MiB) == 700 * MiB


def test_fence_apply_and_restore_in_a_child_process():
    code = r"""
import json, resource
from kernel_sentinel.guard.fence import Fence
f = Fence()
orig = resource.getrlimit(resource.RLIMIT_DATA)
set1 = f.apply(2 * 2**30)
got1 = resource.getrlimit(resource.RLIMIT_DATA)
same = f.apply(2 * 2**30 + 1000)  # raising by less than 1 MiB is not worth a syscall
lower = f.apply(2**30)
got2 = resource.getrlimit(resource.RLIMIT_DATA)
f.restore()
print(json.dumps([orig, got1, same, lower, got2, resource.getrlimit(resource.RLIMIT_DATA)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    orig, got1, same, lower, got2, restored = json.loads(out)
    assert got1 == [2 * GiB, orig[1]]  # soft set, hard untouched
    assert same == 2 * GiB
    assert lower == GiB and got2 == [GiB, orig[1]]
    assert restored == orig


# -- thresholds ----------------------------------------------------------------------------------------


def test_the_interrupt_comes_before_the_fence_with_room_for_threads():
    for limit in (256 * MiB, GiB, 8 * GiB, 64 * GiB):
        margin = fence_margin(limit, 64 * MiB)
        for lead in (0, 10 * MiB, 300 * MiB):
            # the fence sits at limit - margin; two thread stacks fit between it and the interrupt
            assert interrupt_line(limit, margin, lead) <= limit - margin - 16 * MiB
    assert fence_margin(2 * GiB, 64 * MiB) == 2 * GiB // 64  # ~1.5% of the budget, not a tenth of it
    # Never less than 24 MiB: what the fence cannot see, and the error path's room (no resident reserve).
    assert fence_margin(256 * MiB, 64 * MiB) == fence_margin(GiB, 64 * MiB) == 24 * MiB
    assert fence_margin(16 * GiB, 64 * MiB) == 64 * MiB  # never more than the configured reserve
    # A user's fixed fraction still caps the line.
    assert interrupt_line(GiB, 16 * MiB, 0, 0.9) == int(GiB * 0.9)


def test_a_slow_loop_may_use_nearly_all_the_budget_and_a_fast_one_is_stopped_earlier():
    limit = GiB
    margin = fence_margin(limit, 64 * MiB)
    slow = interrupt_line(limit, margin, growth_lead((20 * MiB, 20 * MiB), 0.015))
    fast = interrupt_line(limit, margin, growth_lead((2 * GiB, 2 * GiB), 0.015))
    assert slow >= 0.96 * limit
    assert fast < slow - 50 * MiB
    # One step (an allocation the fence allowed, then filled) is not a trend: no lead at all.
    assert growth_lead((500 * MiB / 0.01, 0.0, 0.0), 0.015) == 0
    assert growth_lead((-(10**9), 10**9), 0.015) == 0


def test_the_lead_follows_only_growth_the_fence_cannot_see():
    # A real Guard's own line (``_line``) fed the same committed growth (1.5 GB/s, a tick every 10 ms): with VmData
    # growing with it (a loop taking new address space, which the fence stops however late the tick); without (freed
    # heap taken again, unseen by the fence); and while an extension module loads (the fence then lets VmData pass),
    # once as address space reserved and left untouched (OpenBLAS's buffers: no danger), once touched. In a child
    # process, as the Guard is built there.
    code = r"""
import json
from kernel_sentinel.guard.controller import Guard
MiB = 1 << 20
def lines(vm_step, used_step, importing=False):
    guard = Guard()
    guard._importing = importing
    committed, vm, used, now, out = 500 * MiB, 800 * MiB, 500 * MiB, 100.0, []
    guard._line(1 << 30, 24 * MiB, committed, vm, now, 1.0, used)
    for _ in range(6):
        now, committed, vm, used = now + 0.01, committed + 15 * MiB, vm + vm_step, used + used_step
        out.append(guard._line(1 << 30, 24 * MiB, committed, vm, now, 1.0, used))
    guard.close()
    return out
print(json.dumps([
    lines(15 * MiB, 15 * MiB), lines(0, 15 * MiB), lines(15 * MiB, 0, True), lines(15 * MiB, 15 * MiB, True)
]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    seen, unseen, reserved, loaded = json.loads(out)
    no_lead = interrupt_line(GiB, 24 * MiB, 0)
    assert seen == [no_lead] * 6
    assert unseen[-1] < no_lead - 30 * MiB
    assert reserved == [no_lead] * 6
    assert loaded[-1] < no_lead - 30 * MiB


def test_the_watchdog_polls_fastest_near_the_line():
    from kernel_sentinel.guard.core import poll_factor

    line = int(GiB * 0.97)
    assert poll_factor(line, 100 * MiB, GiB) == 10
    assert poll_factor(line, 700 * MiB, GiB) == 2
    assert poll_factor(line, 850 * MiB, GiB) == 1
    assert poll_factor(line, 2 * GiB, GiB) == 1
    # Far below a machine-sized budget it waits up to 50 intervals, unless growth would cover half the way.
    big = 23 * GiB
    assert poll_factor(int(big * 0.95), 300 * MiB, big) == 50
    assert poll_factor(int(big * 0.95), 300 * MiB, big, rate=40e9) < 50


def test_a_cell_that_starts_full_may_still_run_but_not_grow_much():
    assert cell_level(900, 1000, 100) == 900
    level = cell_level(900 * MiB, 1000 * MiB, 950 * MiB)
    assert 950 * MiB < level < 1000 * MiB


# -- what was asked for ----------------------------------------------------------------------------------


def test_requested_bytes_from_numpys_error():
    from numpy._core._exceptions import _ArrayMemoryError

    err = _ArrayMemoryError((20000, 20000), np.dtype("float64"))  # the object numpy raises; no allocation
    assert requested_bytes(err) == 20000 * 20000 * 8
    plain = MemoryError(str(err))  # e.g. re-raised by a library as a plain MemoryError
    assert requested_bytes(plain) == 20000 * 20000 * 8
    assert requested_bytes(MemoryError("Unable to allocate 1.50 GiB for something")) == int(1.5 * GiB)
    assert requested_bytes(MemoryError()) is None
    assert requested_bytes(None) is None


# -- settings ------------------------------------------------------------------------------------------


def test_settings_from_env_and_traitlets():
    from traitlets.config import Config

    s = resolve_settings(SentinelGuard(), env={})
    assert s.enabled and s.memory_limits == () and s.poll_interval == 0.01 and not s.warnings

    env = {"KERNEL_SENTINEL_MEMORY_LIMIT": "80%", "KERNEL_SENTINEL_POLL_INTERVAL": "0.02"}
    s = resolve_settings(SentinelGuard(), env=env)
    assert [m.source for m in s.memory_limits] == ["KERNEL_SENTINEL_MEMORY_LIMIT"]
    assert s.memory_limits[0].resolve(GiB) == int(GiB * 0.8)
    assert s.poll_interval == 0.02

    cfg = Config()
    cfg.SentinelGuard.memory_limit = "2G"
    cfg.SentinelGuard.poll_interval = 0.05
    s = resolve_settings(SentinelGuard(config=cfg), env=env)
    assert {m.source for m in s.memory_limits} == {"KERNEL_SENTINEL_MEMORY_LIMIT", "SentinelGuard.memory_limit"}
    assert s.poll_interval == 0.05  # traitlets config wins over the environment

    s = resolve_settings(SentinelGuard(config=cfg), env={"KERNEL_SENTINEL_GUARD": "0"})
    assert s.enabled is False


def test_bad_settings_are_one_line_warnings_and_defaults():
    s = resolve_settings(
        SentinelGuard(),
        env={
            "KERNEL_SENTINEL_MEMORY_LIMIT": "lots",
            "KERNEL_SENTINEL_INTERRUPT_AT": "1.5",
            "KERNEL_SENTINEL_RESERVE": "12Q",
            "KERNEL_SENTINEL_GUARD": "maybe",
        },
    )
    assert s.memory_limits == () and s.interrupt_fraction == 1.0 and s.reserve_bytes == 64 * MiB
    assert s.enabled is True
    assert len(s.warnings) == 4 and all("\n" not in w for w in s.warnings)
    # 0 turns the resident error reserve off (its default); a memory limit of 0 stays an error
    s = resolve_settings(SentinelGuard(), env={"KERNEL_SENTINEL_ERROR_RESERVE": "16M"})
    assert s.error_reserve_bytes == 16 * MiB and not s.warnings
    s = resolve_settings(SentinelGuard(), env={"KERNEL_SENTINEL_ERROR_RESERVE": "0", "KERNEL_SENTINEL_MEMORY_LIMIT": "0"})
    assert s.error_reserve_bytes == 0 and s.memory_limits == () and len(s.warnings) == 1
    assert "KERNEL_SENTINEL_MEMORY_LIMIT" in s.warnings[0]


# -- the budget ------------------------------------------------------------------------------------------


def test_budget_candidates_from_a_real_reading():
    snap = snapshot(rlimits=False)
    cands = candidates_from(snap, {}, [(512 * MiB, "KERNEL_SENTINEL_MEMORY_LIMIT")], INFINITY)
    assert any(c.kind == "system RAM" for c in cands)
    reading = Reading(vm_data=snap.process.vm_data_bytes or 0, rss=snap.process.rss_bytes or 0)
    cand, usage, headroom = tightest(cands, reading)
    assert cand.source == "KERNEL_SENTINEL_MEMORY_LIMIT"  # far below this machine's RAM
    assert headroom == 512 * MiB - usage
    with_rlimit = candidates_from(snap, {}, [], 300 * MiB)
    assert tightest(with_rlimit, Reading(vm_data=100 * MiB, rss=50 * MiB))[0].kind == "rlimit"


def test_tightest_is_the_least_headroom_not_the_smallest_limit():
    a = Candidate(1000, "rss", "a", "configured")
    b = Candidate(2000, "cgroup:/x", "b", "cgroup")
    reading = Reading(vm_data=0, rss=100, cgroups={"/x": (1950, 1950)})
    assert tightest([a, b], reading)[0] is b


# -- children --------------------------------------------------------------------------------------------


def test_children_are_made_oom_volunteers():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert read_oom_score_adj(child.pid) == read_oom_score_adj("self")
        adjuster = ChildAdjuster(700)
        assert adjuster.adjust_existing() >= 1
        assert read_oom_score_adj(child.pid) == 700
        # One-way: a lower value never overwrites a higher one.
        assert ChildAdjuster(300).adjust_existing() >= 0
        assert read_oom_score_adj(child.pid) == 700
    finally:
        child.kill()
        child.wait()


def test_forked_children_volunteer_and_drop_the_fence():
    code = r"""
import json, os, resource
from kernel_sentinel.guard import children
orig = resource.getrlimit(resource.RLIMIT_DATA)
children.enable(800, orig)
resource.setrlimit(resource.RLIMIT_DATA, (3 * 2**30, orig[1]))   # the kernel's fence
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    adj = open('/proc/self/oom_score_adj').read().strip()
    os.write(w, json.dumps([int(adj), resource.getrlimit(resource.RLIMIT_DATA)[0]]).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(r, 200).decode())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    adj, soft = json.loads(out)
    assert adj == 800
    assert soft == resource.getrlimit(resource.RLIMIT_DATA)[0]  # the original (inherited from us)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_meters_read_this_process():
    from kernel_sentinel.guard.core import Meters

    m = Meters()
    try:
        r = m.read()
        assert r.rss > 0 and r.vm_data > 0
    finally:
        m.close()


def test_a_guard_interrupt_is_raised_only_in_the_cells_own_code():
    # The router raises the guard's interrupt only where the cell's own code runs: under IPython's run_code,
    # in the "<module>" it executes. IPython's own frames under run_code (its CustomTB wrapper, after the
    # guard's handler had shown the error) got it once in a loaded run: the wrapper then unregistered the
    # handler and showed a second, raw GuardInterrupt traceback. Real frames, run_code stood in by `run_code`.
    from kernel_sentinel.guard.watchdog import SigintRouter

    router = SigintRouter(guard=None)
    seen: dict[str, bool] = {}

    def look(name: str) -> None:
        seen[name] = router._in_cell_code(sys._getframe())

    def wrapper() -> None:  # IPython's function under run_code, not the cell
        look("wrapper")

    def run_code() -> None:
        exec(compile("look('cell')\ndef f():\n    look('cell function')\nf()", "<cell>", "exec"), {"look": look})
        wrapper()

    router._run_code = run_code.__code__
    run_code()
    assert seen == {"cell": True, "cell function": True, "wrapper": False}


def test_freed_heap_a_growing_cell_may_retake_widens_fence_and_line():
    from kernel_sentinel.guard.policy import retouch_margin

    limit = GiB
    assert retouch_margin(limit, 1024 * MiB, growing=False) == 0  # one allocation that fits: untouched
    assert retouch_margin(limit, 0, growing=True) == 0
    assert retouch_margin(limit, 20 * MiB, growing=True) == 20 * MiB
    assert retouch_margin(limit, 1024 * MiB, growing=True) == int(limit * 0.06)  # capped at the threaded margin


def test_a_refused_thread_start_is_retried_explained_or_left_as_it_was() -> None:
    # guard/threadstart.py's decisions, on a start function that fails the way _thread's does at the fence;
    # the real fence is exercised in test_guard_accounting.py (300 threads at once, stock and sentinel).
    from kernel_sentinel.guard import threadstart

    class Verdicts:
        def __init__(self, *verdicts):
            self.verdicts, self.asked, self.before = list(verdicts), 0, 0

        def before_thread_start(self):
            self.before += 1

        def thread_start_refused(self):
            self.asked += 1
            return self.verdicts.pop(0)

    def failing(times):
        calls = []

        def start(*args, **kwargs):
            calls.append((args, kwargs))
            if len(calls) <= times:
                raise RuntimeError("can't start new thread")
            return 42

        return start, calls

    start, calls = failing(2)
    guard = Verdicts(True, True)
    assert threadstart._wrap(start, guard)("boot", daemon=True) == 42
    assert calls == [(("boot",), {"daemon": True})] * 3 and guard.asked == 2 and guard.before == 1
    start, _ = failing(5)
    with pytest.raises(MemoryError, match="can't start new thread") as info:
        threadstart._wrap(start, Verdicts(True, False))()
    assert isinstance(info.value.__cause__, RuntimeError)
    start, _ = failing(5)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        threadstart._wrap(start, Verdicts(None))()  # the fence had room: a pids limit, say

    def other(*args):
        raise RuntimeError("threads can only be started once")

    guard = Verdicts()
    with pytest.raises(RuntimeError, match="only be started once"):
        threadstart._wrap(other, guard)()
    assert guard.asked == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_the_guards_idea_of_the_main_stack_stays_the_main_stack_while_threads_come_and_go():
    # statm's data field counts the main stack, RLIMIT_DATA does not: the guard takes it off. It was worked out
    # as statm's data less status's VmData, read a moment apart, and a thread's stack mapped or unmapped in
    # between made it 8-14 MiB (the stack: 132 KiB): every fence was that much tighter than the guard believed,
    # and a killer's error path, held 16 MiB of room, failed for want of memory. A real Guard, in a child process.
    code = r"""
import json, threading
from kernel_sentinel.guard.controller import Guard
stop = threading.Event()
def churn():
    while not stop.is_set():
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
churners = [threading.Thread(target=churn) for _ in range(4)]
for t in churners:
    t.start()
guard = Guard()
seen = set()
try:
    for _ in range(300):
        guard.refresh()
        seen.add(guard._meters.stack_bytes)
finally:
    stop.set()
    for t in churners:
        t.join()
status = open("/proc/self/status").read()
vm_stk = int(status.split("VmStk:")[1].split("kB")[0]) * 1024
guard.close()
print(json.dumps([sorted(seen), vm_stk]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout
    seen, vm_stk = json.loads(out)
    assert seen == [vm_stk]
