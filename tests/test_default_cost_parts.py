"""What the recorder's and the checkpointer's parts do less of per cell (issue 11), in this process.

No kernel and no timing: each test shows a decision that saves work (a wake not sent, a file not read, a fork
not allowed) and fails when that decision goes back to doing the work. The kernel-level promises (the line of
the running cell, checkpoints restored after SIGKILL) are in test_autopsy_kernels.py and test_default_cost.py.
"""

from __future__ import annotations

import mmap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel_sentinel.autopsy import recorder
from kernel_sentinel.autopsy.recorder import (
    IDLE_SAMPLE_SECONDS,
    MAPS_MOVED_BYTES,
    SAMPLE_SECONDS,
    Recorder,
    _maps_may_have_changed,
)
from kernel_sentinel.memory.linux import StatmMeter
from kernel_sentinel.resurrect import checkpoint as checkpoint_module
from kernel_sentinel.resurrect.checkpoint import CellTracker, Checkpointer


class _Result:
    def __init__(self, code: str, count: int) -> None:
        self.info = type("Info", (), {"raw_cell": code, "store_history": True})()
        self.execution_count = count


def _outside_heap(reader: StatmMeter) -> int:
    size, _rss, data = reader.sizes()
    return size - data


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="Linux /proc only")
def test_heap_growth_does_not_send_the_sampler_to_read_the_mappings_but_a_memmap_does(tmp_path: Path) -> None:
    reader = StatmMeter()
    before = _outside_heap(reader)
    heap = np.ones(64 << 17)  # 64 MiB of private anonymous memory: the heap, not a memmap
    heap2 = [bytearray(1 << 20) for _ in range(16)]
    assert not _maps_may_have_changed(before, _outside_heap(reader))
    path = tmp_path / "m.dat"
    path.write_bytes(b"\0" * (8 << 20))
    with open(path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 8 << 20)  # a writable shared file mapping: what the maps region lists
        try:
            assert _outside_heap(reader) - before >= MAPS_MOVED_BYTES
            assert _maps_may_have_changed(before, _outside_heap(reader))
        finally:
            shared.close()
    assert _maps_may_have_changed(None, before)  # the first look always reads them
    del heap, heap2
    reader.close()


def _bare_recorder() -> Recorder:
    """A Recorder with just the state the sampler's pacing and the cell hook use (no thread, no files)."""
    rec = Recorder.__new__(Recorder)
    rec._cell = None
    rec._last_rss = None
    rec._long_pause = False
    rec._wake = threading.Event()
    rec._line = None
    rec._looked_for_pending = True
    rec._pending = None
    rec._ec_offset = None
    rec.ip = type("IP", (), {"execution_count": 3})()

    class _Writer:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, region: str, data: dict) -> bool:
            self.writes.append(region)
            return True

    rec.writer = _Writer()
    return rec


def test_an_idle_kernel_whose_memory_stands_still_is_sampled_less_often_and_a_cell_wakes_the_sampler() -> None:
    rec = _bare_recorder()
    mib = 1 << 20
    pause = rec._next_pause(SAMPLE_SECONDS, 100 * mib)  # first reading: nothing to compare with
    assert pause == SAMPLE_SECONDS and not rec._long_pause
    pauses = []
    for _ in range(6):
        pause = rec._next_pause(pause, 100 * mib)
        pauses.append(pause)
    assert pauses[0] == 2 * SAMPLE_SECONDS and pauses[-1] == IDLE_SAMPLE_SECONDS and rec._long_pause
    # memory moves while idle (a background thread loading data): back to every SAMPLE_SECONDS
    assert rec._next_pause(pause, 140 * mib) == SAMPLE_SECONDS and not rec._long_pause
    pause = rec._next_pause(rec._next_pause(SAMPLE_SECONDS, 140 * mib), 140 * mib)
    assert rec._long_pause and not rec._wake.is_set()
    info = type("Info", (), {"raw_cell": "x = 1", "store_history": True, "cell_id": None})()
    rec._pre_run_cell(info)  # the next cell starts while the sampler sleeps long: it is woken for the cell
    assert rec._wake.is_set() and rec.writer.writes == ["cell"]
    rec._wake.clear()
    assert rec._next_pause(pause, 140 * mib) == SAMPLE_SECONDS  # a running cell is sampled every 250 ms
    rec._long_pause = False
    rec._pre_run_cell(info)  # the sampler is not in a long pause: no wake, one write
    assert not rec._wake.is_set()
    assert recorder.SAMPLE_SECONDS <= 0.25  # the autopsy tests give the sampler 0.6 s to see a cell's line


def _riding_recorder() -> tuple[Recorder, list[bool]]:
    """A bare recorder whose samples are counted (``cheap`` flag of each) instead of read and written."""
    rec = _bare_recorder()
    taken: list[bool] = []

    def sample(tick: int, cheap: bool = False) -> int:
        taken.append(cheap)
        return 100 << 20

    rec._sample = sample  # type: ignore[method-assign]
    rec._sample_lock = threading.Lock()
    rec._stop = threading.Event()
    rec._tick = 0
    rec._pause = SAMPLE_SECONDS
    rec._can_ride = True
    rec._cell = {"execution_count": 1, "finished": None}  # a cell runs: a sample every SAMPLE_SECONDS
    return rec, taken


def test_the_watchdog_takes_the_recorders_samples_far_from_the_line_and_hands_them_back_near_it() -> None:
    rec, taken = _riding_recorder()
    t = 1000.0
    rec._ride(t, far=True)  # due: taken in the watchdog's thread, the cheap way (no file that gives the GIL up)
    assert taken == [True] and rec._ridden_at == t and rec._next_due == t + SAMPLE_SECONDS
    assert rec._riding(t + 1.0) and not rec._wake.is_set()
    rec._ride(t + 0.1, far=True)  # not due yet: nothing
    assert taken == [True]
    rec._ride(t + SAMPLE_SECONDS, far=True)
    assert taken == [True, True]
    # near the line the watchdog ticks often and must not wait on a sample: the sampler thread is woken instead
    rec._ride(t + 2 * SAMPLE_SECONDS, far=False)
    assert taken == [True, True] and rec._ridden_at == 0 and rec._wake.is_set()
    assert not rec._riding(t + 2 * SAMPLE_SECONDS)
    rec._wake.clear()
    # a cell that starts while the watchdog samples does not wake the sampler thread: the next tick samples
    rec._ride(t + 3 * SAMPLE_SECONDS, far=True)
    rec._long_pause = True
    rec._cell = None
    info = type("Info", (), {"raw_cell": "x = 1", "store_history": True, "cell_id": None})()
    rec._pre_run_cell(info)
    assert not rec._wake.is_set() and rec._next_due == 0
    rec._ride(t + 3 * SAMPLE_SECONDS + 0.01, far=True)
    assert taken == [True, True, True, True]
    with rec._sample_lock:  # the sampler thread is sampling: the watchdog does not wait for it
        rec._ride(t + 10.0, far=True)
    assert len(taken) == 4


def test_the_watchdog_runs_its_riders_after_each_tick_and_says_whether_the_line_is_far() -> None:
    from kernel_sentinel.guard.watchdog import RIDE_FACTOR, Watchdog, add_rider, remove_rider

    class _Guard:
        interval_factor = RIDE_FACTOR
        max_tick_gap = 0.0
        watchdog_cpu_seconds = 0.0
        ticks = 0

        def tick(self, now: float) -> None:
            self.ticks += 1

    guard = _Guard()
    seen: list[tuple[int, bool]] = []
    done = threading.Event()

    def rider(now: float, far: bool) -> None:
        seen.append((guard.ticks, far))
        if len(seen) == 2:
            guard.interval_factor = RIDE_FACTOR - 1
        if len(seen) >= 4:
            done.set()
        raise RuntimeError("a rider's failure is its own")  # the watchdog goes on ticking

    add_rider(rider)
    dog = Watchdog(guard, 0.001)
    try:
        dog.start()
        assert done.wait(5)
    finally:
        dog.stop()
        remove_rider(rider)
    assert [ticks for ticks, _ in seen[:4]] == [1, 2, 3, 4]  # after each tick, each tick once
    assert [far for _, far in seen[:4]] == [True, True, False, False]
    assert dog.is_alive() is False


def test_the_tracker_names_the_binding_cell_in_one_pass_after_each_cell() -> None:
    ns: dict = {"a": 1, "b": [1]}
    tracker = CellTracker()
    tracker.before(ns)  # what the checkpointer does once, when it loads
    ns["c"] = object()
    tracker.after(ns, 4, "c = object()")
    ns["a"] = 2
    tracker.after(ns, 5, "a = 2")
    ns["b"].append(2)  # mutated in place: still the object cell 4 and 5 saw, no cell named for it
    tracker.after(ns, 6, "b.append(2)")
    assert tracker.cells == {"c": [{"execution_count": 4, "code": "c = object()"}],
                             "a": [{"execution_count": 5, "code": "a = 2"}]}


def test_the_tracker_looks_only_at_new_and_rebound_names_and_names_what_a_whole_walk_names() -> None:
    ns: dict = {f"_i{n}": f"x = {n}" for n in range(1, 400)}  # IPython's input names: never looked at one by one
    ns.update({"a": 1, "b": [1], "_": None})
    tracker = CellTracker()
    tracker.before(ns)
    ns["_i400"] = "del a; c = 1; a = 1"
    del ns["a"]
    ns["c"] = 1
    ns["a"] = 1  # deleted and bound again in one cell, to the same object: not rebound
    ns["_"] = object()
    tracker.after(ns, 400, "del a; c = 1; a = 1")
    assert tracker.cells == {"c": [{"execution_count": 400, "code": "del a; c = 1; a = 1"}]}
    del ns["b"]
    tracker.after(ns, 401, "del b")
    ns["b"] = [2]  # gone for a cell, then bound again: new
    ns["_401"] = ns["_i401"] = "b = [2]"
    tracker.after(ns, 402, "b = [2]")
    ns["c"] = 2
    tracker.after(ns, 403, "c = 2")
    assert tracker.cells == {"c": [{"execution_count": 403, "code": "c = 2"}],
                             "b": [{"execution_count": 402, "code": "b = [2]"}]}
    assert "_" not in tracker.cells and "_401" not in tracker.cells


class _CountingNamespace(dict):
    """A namespace that counts which names are looked up, and refuses to hand out all its values at once."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.looked_up: list[str] = []

    def get(self, key, default=None):  # type: ignore[override]
        self.looked_up.append(key)
        return super().get(key, default)

    def items(self):  # type: ignore[override]
        raise AssertionError("the whole namespace was walked")


def test_the_tracker_looks_up_only_the_users_names_and_the_new_ones() -> None:
    ns = _CountingNamespace({f"_i{n}": f"x = {n}" for n in range(1, 1000)})
    dict.update(ns, {"a": 1, "b": 2})
    tracker = CellTracker()
    dict.__setitem__(ns, "_i1000", "c = 3")
    tracker.before(dict(ns))
    dict.update(ns, {"_i1001": "c = 3", "c": 3, "_1001": 3})
    tracker.after(ns, 1001, "c = 3")
    assert tracker.cells == {"c": [{"execution_count": 1001, "code": "c = 3"}]}
    assert sorted(ns.looked_up) == ["a", "b", "c"]  # not the 1,000 names of IPython's history


def test_cells_back_to_back_do_not_wake_an_armed_scheduler_and_it_still_checkpoints_alone(tmp_path: Path) -> None:
    ns: dict = {"v": 0}
    # the idle moment asked for is long (5 s): the scheduler's timeout cannot end between two of the cells below
    cp = Checkpointer(ns, enabled=True, kernel_id="k-armed", session_key=None, writer="thread", home=tmp_path,
                      idle_seconds=5.0, memory_available=lambda: 1 << 34, process_rss=lambda: 1 << 20)
    sets = []
    real_set = cp._wake.set

    def counting_set() -> None:
        sets.append(threading.current_thread().name)
        real_set()

    cp._wake.set = counting_set  # type: ignore[method-assign]
    try:
        cp.start()
        cp.pre_run_cell(None)
        ns["v"] = 1
        cp.post_run_cell(_Result("v = 1", 1))  # the first cell wakes it; it then waits 5 s for an idle moment
        deadline = time.monotonic() + 30
        while not cp._armed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cp._armed, "the scheduler never waited for an idle moment"
        woken = len(sets)
        for i in range(20):  # cells back to back while it waits: none of them wakes it
            cp.pre_run_cell(None)
            ns["v"] += 1
            cp.post_run_cell(_Result("v += 1", ns["v"]))
        assert len(sets) == woken
        deadline = time.monotonic() + 60
        while cp.count == 0 and time.monotonic() < deadline:  # the scheduler takes it on its own, once idle
            time.sleep(0.05)
        assert cp.count == 1
        cp.wait()
        assert cp.last_result is not None and cp.last_result["status"] == "written"
    finally:
        cp.close()


def test_forks_may_cost_the_kernel_half_a_percent_of_its_cpu(tmp_path: Path) -> None:
    cp = Checkpointer({"v": 1}, enabled=True, kernel_id="k-share", session_key=None, writer="thread", home=tmp_path)
    now_cpu, now_wall = time.process_time(), time.monotonic()
    cp._cpu0, cp._wall0 = now_cpu - 100.0, now_wall  # as if the kernel had used 100 s of CPU just now
    allowed = cp.kernel_budget()
    assert allowed == pytest.approx(checkpoint_module.KERNEL_SHARE * 100 + checkpoint_module.KERNEL_GRACE_SECONDS, abs=0.05)
    assert checkpoint_module.KERNEL_SHARE <= 0.005
    cp.kernel_cost = 0.0075 * 100  # forks that cost 0.75% of its CPU: within 1% (or 2%, before), over 0.5%
    assert not cp._within_budget()
    assert "what forks cost the kernel (0.5% of its CPU)" in cp.status()
    cp.kernel_cost = 0.004 * 100
    assert not cp._within_budget()  # a "no" holds for BUDGET_RETRY_SECONDS: cells past MAX_DEFER do not ask each
    cp._budget_retry_at = 0.0
    assert cp._within_budget()


def test_cells_back_to_back_over_the_budget_ask_it_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "BUDGET_RETRY_SECONDS", 3600.0)  # the hold outlasts the test, however slow
    ns: dict = {"v": 0}
    cp = Checkpointer(ns, enabled=True, kernel_id="k-overdue", session_key=None, writer="thread", home=tmp_path,
                      memory_available=lambda: 1 << 34, process_rss=lambda: 1 << 20)
    asked = []
    real = cp.kernel_budget

    def counting_budget() -> float:
        asked.append(1)
        return real()

    cp.kernel_budget = counting_budget  # type: ignore[method-assign]
    cp.kernel_cost = 1e6  # forks have cost far more than the share: every checkpoint is deferred
    try:
        for i in range(30):
            cp.pre_run_cell(None)
            ns["v"] = i
            cp._dirty_since = time.monotonic() - 2 * checkpoint_module.MAX_DEFER_SECONDS  # unsaved for long
            cp.post_run_cell(_Result("v = i", i))  # overdue: it would fork between two cells if the budget allowed
        assert cp.count == 0
        assert len(asked) == 1  # the first overdue cell asked; the 29 after it found the no held
        assert "checkpoint deferred: what forks cost the kernel" in cp.status()
    finally:
        cp.close()


def test_a_checkpoint_the_budget_deferred_waits_for_an_idle_moment_not_forked_between_cells(tmp_path: Path) -> None:
    ns: dict = {"v": 0}
    cp = Checkpointer(ns, enabled=True, kernel_id="k-idle", session_key=None, writer="thread", home=tmp_path,
                      idle_seconds=600.0, memory_available=lambda: 1 << 34, process_rss=lambda: 1 << 20)
    try:
        cp.pre_run_cell(None)
        ns["v"] = 1
        cp.post_run_cell(_Result("v = 1", 1))
        now = time.monotonic()
        with cp._lock:  # unsaved for long, the kernel idle for long enough, the fork budget spent
            cp._dirty_since = now - 2 * checkpoint_module.MAX_DEFER_SECONDS
            cp._idle_since = now - 2 * cp._idle_needed()
            cp.kernel_cost = 1e6
        assert cp._tick() == checkpoint_module.BUDGET_RETRY_SECONDS and cp.count == 0  # the scheduler's look
        cp.kernel_cost, cp._budget_retry_at = 0.0, 0.0  # the budget allows again
        cp.pre_run_cell(None)
        ns["v"] = 2
        cp.post_run_cell(_Result("v = 2", 2))  # a pause had come: this cell is not "overdue", it forks nothing
        assert cp.count == 0 and not cp._busy()
        with cp._lock:
            cp._dirty_since = time.monotonic() - 2 * checkpoint_module.MAX_DEFER_SECONDS  # no pause since long
        cp.pre_run_cell(None)
        ns["v"] = 3
        cp.post_run_cell(_Result("v = 3", 3))  # cells really back to back for MAX_DEFER_SECONDS: taken between two
        assert cp.count == 1
    finally:
        cp.close()


def _stat_threads() -> int:
    raw = Path("/proc/self/stat").read_bytes()
    return int(raw[raw.rindex(b")") + 2 :].split()[17])


def _both_counts(read: Any) -> tuple[int, int]:
    """Return (stat's count, ``read()``) taken while stat's count stood still (an earlier test's thread may end)."""
    for _ in range(100):
        before = _stat_threads()
        seen = read()
        if _stat_threads() == before:
            return before, seen
    raise AssertionError("the thread count never stood still")


def test_the_guards_thread_count_is_stats_count_from_a_cheaper_file_while_threads_come_and_go() -> None:
    # The watchdog counts threads (each one's stack is credited as untouched space) with one statx of
    # /proc/self/task, not a read of /proc/self/stat: the same count (procfs's get_nr_threads), read the cheap
    # way here; the guard's Meters use it.
    from kernel_sentinel.guard.meters import Meters
    from kernel_sentinel.memory.linux import ThreadCounter

    counter = ThreadCounter()
    meters = Meters()
    release = threading.Event()
    started: list[threading.Thread] = []

    def meters_count() -> int:
        meters.recount_threads()
        return meters._threads(0, time.monotonic())

    try:
        assert counter._task_fd is not None  # Linux with statx: the cheap way, or this test shows nothing
        counts = []
        for _ in range(6):
            stat, seen = _both_counts(counter.read)
            assert seen == stat
            assert _both_counts(meters_count)[1] == _both_counts(meters_count)[0]
            counts.append(seen)
            thread = threading.Thread(target=release.wait)
            thread.start()
            started.append(thread)
        assert counts[-1] >= counts[0] + 5  # each thread started was counted (others may have ended meanwhile)
        release.set()
        for thread in started:
            thread.join()
        stat, seen = _both_counts(counter.read)
        assert seen == stat < counts[-1]
    finally:
        release.set()
        counter.close()
        meters.close()


def test_the_guards_main_stack_comes_from_the_refreshs_snapshot_without_reading_status_again() -> None:
    from kernel_sentinel.guard.meters import Meters
    from kernel_sentinel.memory.reader import MemoryReader

    reader = MemoryReader(rlimits=False)
    meters = Meters()
    try:
        process = reader.snapshot().process
        assert process.stack_bytes is not None and process.stack_bytes > 0
        read_here = meters.main_stack_bytes()
        meters._status_fd, status_fd = -1, meters._status_fd  # a second read of the file would now fail
        try:
            assert meters.main_stack_bytes(process) == process.stack_bytes == read_here
            with pytest.raises(OSError):
                meters.main_stack_bytes()
        finally:
            meters._status_fd = status_fd
    finally:
        reader.close()
        meters.close()


def test_stopping_the_watchdog_wakes_it_from_a_long_wait() -> None:
    # It waits on a lock stop() releases (not an Event): stopped in the middle of an hour's wait, it ends.
    from kernel_sentinel.guard.watchdog import Watchdog

    class _Guard:
        interval_factor = 1
        max_tick_gap = 0.0
        watchdog_cpu_seconds = 0.0

        def tick(self, now: float) -> None:
            raise AssertionError("no tick within an hour")

    dog = Watchdog(_Guard(), 3600.0)
    dog.start()
    dog.stop(timeout=60)
    assert not dog.is_alive()
    dog.stop()  # twice: nothing to release, nothing raised


def test_the_memory_record_keeps_its_samples_encoded_and_writes_what_encode_gives_for_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sample formats only its own numbers: the record splices the last KEEP_SAMPLES samples' texts in, and what
    # lands in the flight record is the very JSON text of the whole record (read back whole, samples included).
    from kernel_sentinel.autopsy import flight
    from kernel_sentinel.autopsy.flight import FlightWriter, encode, parse_record

    rec = _bare_recorder()
    rec.writer = FlightWriter(tmp_path / "k.rec")
    rec._main_ident = threading.get_ident()
    rec._cell_prefixes = ("<ipython-input-",)
    rec._statm = StatmMeter()
    rec._reader = object()  # a full picture is not due: the samples between two
    rec._snapshot_due = time.monotonic() + 3600
    rec._snap_available, rec._snap_rss = 1 << 30, 200 << 20
    rec._details = {"budget_bytes": 1 << 30, "source": "cgroup v1 /x", "cgroup": {"path": "/x", "oom_kills": 0}}
    rec._samples = []
    rec._maps_key = None
    encoded: list[Any] = []

    def counting(data: Any) -> str:
        encoded.append(data)
        return encode(data)

    monkeypatch.setattr(recorder, "encode", counting)
    monkeypatch.setattr(flight, "encode", counting)  # the writer's own, for a dict handed to it
    try:
        for tick in range(recorder.KEEP_SAMPLES + 5):
            rec._sample(tick, cheap=True)
        # each sample encoded its own three numbers and the record without samples: never the forty again
        assert not [d for d in encoded if isinstance(d, dict) and "samples" in d]
        assert sum(isinstance(d, list) for d in encoded) == recorder.KEEP_SAMPLES + 5
        raw = (tmp_path / "k.rec").read_bytes()
        memory = parse_record(raw)["memory"]
        assert len(memory["samples"]) == recorder.KEEP_SAMPLES
        assert all(len(s) == 3 and s[1] > 0 and s[2] is not None for s in memory["samples"])
        assert memory["budget_bytes"] == 1 << 30 and memory["cgroup"] == {"path": "/x", "oom_kills": 0}
        assert list(memory)[-1] == "samples" and memory["rss_bytes"] == memory["samples"][-1][1]
        assert encode(memory).encode() in raw  # the text written is encode's text of the record read back
    finally:
        rec.writer.close()
        rec._statm.close()


def test_the_oom_kill_counter_is_found_in_either_cgroup_versions_file_and_only_on_its_own_line(tmp_path: Path) -> None:
    from kernel_sentinel.memory.linux import OomKillMeter

    files = {
        1: ("memory.oom_control", b"oom_kill_disable 0\nunder_oom 0\noom_kill 7\n", 7),
        2: ("memory.events", b"low 0\nhigh 4\nmax 9\noom 3\noom_kill 12\noom_group_kill 5\n", 12),
    }
    for version, (name, text, kills) in files.items():
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        (folder / name).write_bytes(text)
        meter = OomKillMeter(str(folder), version)
        try:
            assert meter.read() == kills
            (folder / name).write_bytes(b"oom_kill 3")  # first line, no newline at its end
            assert meter.read() == 3
            (folder / name).write_bytes(b"oom_kill_disable 0\nunder_oom 0\noom_group_kill 5\n")  # before 4.13
            assert meter.read() is None
        finally:
            meter.close()


def test_the_meters_read_without_argument_conversions_and_raise_as_os_pread_does(tmp_path: Path) -> None:
    import errno
    import os

    from kernel_sentinel.memory import linux

    path = tmp_path / "f"
    path.write_bytes(b"1234 5678\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert linux.pread(fd, 64) == b"1234 5678\n" and linux.pread(fd, 4) == b"1234"
        assert linux._PREAD is None or linux._PREAD.argtypes is None  # sizes and offset go as made ctypes objects
    finally:
        os.close(fd)
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as got:
            linux.pread(folder, 64)
        assert got.value.errno == errno.EISDIR
    finally:
        os.close(folder)


_NUMA_STAT = (
    b"total=65735 N0=60000 N1=5735\nfile=65203 N0=60000 N1=5203\nanon=532 N0=0 N1=532\nunevictable=0 N0=0 N1=0\n"
    b"hierarchical_total=97981 N0=90000 N1=7981\nhierarchical_file=97449 N0=90000 N1=7449\n"
    b"hierarchical_anon=532 N0=0 N1=532\nhierarchical_unevictable=0 N0=0 N1=0\n"
)


def _v1_group(folder: Path, usage: int, active: int, inactive: int, numa: bytes | None) -> Path:
    folder.mkdir()
    (folder / "memory.usage_in_bytes").write_bytes(b"%d\n" % usage)
    (folder / "memory.stat").write_bytes(
        b"cache 1\nrss 2\nactive_file 5\ninactive_file 6\ntotal_cache 7\n"
        b"total_inactive_file %d\ntotal_active_file %d\ntotal_unevictable 0\n" % (inactive, active)
    )
    if numa is not None:
        (folder / "memory.numa_stat").write_bytes(numa)
    return folder


def test_a_v1_groups_page_cache_is_read_from_numa_stat_when_it_says_what_memory_stat_says(tmp_path: Path) -> None:
    # memory.numa_stat's hierarchical_file (pages) is memory.stat's total_active_file + total_inactive_file: the guard
    # reads the shorter file at each tick once the two agree, and memory.stat where they do not or it is missing.
    from kernel_sentinel.memory import linux
    from kernel_sentinel.memory.parse import parse_numa_file_pages

    assert parse_numa_file_pages(_NUMA_STAT) == 97449
    assert parse_numa_file_pages(b"hierarchical_file=12\n") == 12 and parse_numa_file_pages(b"hierarchical_file=3") == 3
    with pytest.raises(ValueError):
        parse_numa_file_pages(b"total=1 N0=1\nfile=1 N0=1\n")
    page = linux.PAGE
    usage = 1 << 30
    cache = 97449 * page
    agree = _v1_group(tmp_path / "agree", usage, cache // 3, cache - cache // 3, _NUMA_STAT)
    meter = linux.GroupMeter(str(agree), 1)
    try:
        assert meter._numa_fd is not None
        (agree / "memory.stat").write_bytes(b"total_inactive_file 0\ntotal_active_file 0\n")  # no longer read
        assert meter.read() == (usage, usage - cache)
        (agree / "memory.numa_stat").write_bytes(_NUMA_STAT.replace(b"=97449 ", b"=1000 "))
        assert meter.read() == (usage, usage - 1000 * page)
    finally:
        meter.close()
    far = cache + 2 * linux.NUMA_SLACK
    for name, numa in (("disagree", _NUMA_STAT), ("missing", None), ("other", b"total=5 N0=5\n")):
        folder = _v1_group(tmp_path / name, usage, far // 2, far - far // 2, numa)
        meter = linux.GroupMeter(str(folder), 1)
        try:
            assert meter._numa_fd is None
            assert meter.read() == (usage, usage - far)
        finally:
            meter.close()


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="Linux /proc only")
def test_this_process_v1_group_reads_the_same_page_cache_from_either_file() -> None:
    from kernel_sentinel.memory import linux
    from kernel_sentinel.memory.parse import parse_reclaimable

    lines = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    v1 = [Path("/sys/fs/cgroup/memory") / path.lstrip("/") for _n, ctl, path in lines if ctl == "memory"]
    if not v1 or not (v1[0] / "memory.numa_stat").exists():
        pytest.skip("not in a cgroup v1 memory group with memory.numa_stat")
    meter = linux.GroupMeter(str(v1[0]), 1)
    try:
        assert meter._numa_fd is not None
        for _ in range(5):
            before = parse_reclaimable(linux.pread(meter._stat_fd, 8192))
            usage, in_use = meter.read()
            numa = usage - in_use  # the page cache numa_stat gave
            after = parse_reclaimable(linux.pread(meter._stat_fd, 8192))
            assert min(before, after) - linux.NUMA_SLACK <= numa <= max(before, after) + linux.NUMA_SLACK
    finally:
        meter.close()
