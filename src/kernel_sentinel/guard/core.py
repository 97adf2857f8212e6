"""The guard: keeps the kernel under its memory budget with a fence (RLIMIT_DATA) and a watchdog thread.

Measure -> decide -> act. ``Guard.tick()`` (run every ~10 ms by the watchdog) reads a handful of
numbers with ``pread`` (VmData and RSS from /proc/self/statm, the budget cgroup's usage and
inactive_file), works out the tightest budget and its headroom, re-sets the fence, and interrupts the
running cell when usage crosses the interrupt threshold. The fence counts address space the cell took
but has not touched yet (``np.empty``, calloc'd zeros: VmData up, resident memory not) as used; the
watchdog's threshold counts only memory really in use. The full budget picture (``MemoryReader``
with ``rlimits=False``, so the guard never mistakes its own fence for the budget) is re-read every two
seconds; that is also when the kernel's children are made OOM volunteers.

The budget is the tightest of: every cgroup limit on the way to the root (measured against that group's
working set), system RAM (the kernel's RSS plus MemAvailable), a configured limit
(``KERNEL_SENTINEL_MEMORY_LIMIT``, ``SentinelGuard.memory_limit``, ``%sentinel budget``: measured like the
machine's budget, i.e. the cgroup's working set inside a cgroup, the kernel's RSS outside one), and the
user's own RLIMIT_DATA from before the guard (measured against VmData).
"""

from __future__ import annotations

import os
import re
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..memory import MemoryReader, MemorySnapshot
from ..memory.reader import CgroupLocation
from . import children
from .config import GuardSettings
from .fence import INFINITY, Fence
from .reclaim import malloc_trim

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
REFRESH_SECONDS = 2.0  # full budget re-read (limits, MemAvailable): ~0.2-0.7 ms, so not at every tick
CHILDREN_SECONDS = 2.0  # children scan
RESEND_SECONDS = 0.1  # a cell that keeps growing after an interrupt gets another one
TIGHT_SLACK = 8 * MiB  # room left when the watchdog freezes growth, so the interrupt itself can unwind
NO_ROOM_SECONDS = 2.0  # a cell that has had no room under the fence this long is interrupted
GAP_NOISE = 4 * MiB  # untouched address space moving by less than this is not "someone allocating"
IDLE_GROWTH = 32 * MiB  # growth with no cell running before the fence freezes (a background thread)


# -- pure parts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One limit the kernel must stay under, and the meter its usage is read from."""

    limit_bytes: int
    meter: str  # "cgroup:<directory>" | "rss" | "vmdata"
    source: str  # shown to the user: "cgroup v1 /x", "system RAM", "KERNEL_SENTINEL_MEMORY_LIMIT", ...
    kind: str  # "cgroup" | "system RAM" | "configured" | "rlimit"


@dataclass(frozen=True)
class Reading:
    """One fast reading: the process's VmData and RSS, and usage/working set of the cgroups watched."""

    vm_data: int
    rss: int
    cgroups: dict[str, tuple[int, int]] = field(default_factory=dict)  # directory -> (usage, working set)
    untouched: int = 0  # address space taken since the cell started but not yet resident (np.empty, calloc)

    def meter(self, name: str) -> int | None:
        """Return the usage ``name`` measures (None when it could not be read)."""
        if name == "rss":
            return self.rss
        if name == "vmdata":
            return self.vm_data
        if name.startswith("cgroup:"):
            got = self.cgroups.get(name[7:])
            return got[1] if got else None
        return None

    def committed(self, name: str) -> int | None:
        """Return the usage plus what is already allocated but not yet touched: usage once it is touched.

        The fence must count it: otherwise ``np.empty`` of most of the headroom, twice in two ticks (or in
        two threads), passes the fence both times and the touching that follows meets the OOM killer.
        """
        usage = self.meter(name)
        if usage is None or name == "vmdata":
            return usage
        return usage + self.untouched


def candidates_from(
    snap: MemorySnapshot,
    group_dirs: dict[str, str],
    configured: list[tuple[int, str]],
    original_soft: int,
) -> list[Candidate]:
    """Return every limit that applies, from a machine snapshot plus configured limits and the user's rlimit."""
    out: list[Candidate] = []
    for lim in snap.limits:
        if lim.kind.startswith("cgroup"):
            path = lim.source.split(" ", 2)[-1]
            directory = group_dirs.get(path)
            if directory is None:
                continue
            out.append(Candidate(lim.limit_bytes, f"cgroup:{directory}", lim.source, "cgroup"))
        elif lim.kind == "system RAM":
            out.append(Candidate(lim.limit_bytes, "rss", lim.source, "system RAM"))
    machine = snap.budget
    config_meter = "rss"
    if machine is not None and machine.kind.startswith("cgroup"):
        directory = group_dirs.get(machine.source.split(" ", 2)[-1])
        if directory:
            config_meter = f"cgroup:{directory}"
    for nbytes, source in configured:
        out.append(Candidate(int(nbytes), config_meter, source, "configured"))
    if original_soft != INFINITY:
        out.append(Candidate(int(original_soft), "vmdata", "RLIMIT_DATA (set before the guard)", "rlimit"))
    return out


def tightest(
    candidates: list[Candidate], reading: Reading, *, committed: bool = False
) -> tuple[Candidate, int, int] | None:
    """Return (candidate, usage, headroom) for the limit with the least headroom; None with no limit.

    ``committed=True`` counts allocated-but-untouched memory as used (what the fence needs); the
    watchdog's threshold is about memory really in use and uses the plain meters.
    """
    best: tuple[Candidate, int, int] | None = None
    for cand in candidates:
        usage = reading.committed(cand.meter) if committed else reading.meter(cand.meter)
        if usage is None:
            continue
        headroom = cand.limit_bytes - usage
        if best is None or headroom < best[2]:
            best = (cand, usage, headroom)
    return best


def effective_margin(limit: int, reserve: int, fraction: float) -> int:
    """Return the fence's distance below the budget: the reserve, capped so the interrupt comes first.

    The watchdog interrupts at ``fraction`` of the budget; the fence must sit above that, or gradual
    growth would meet the fence (and fail anywhere, in any thread) before the cleaner interrupt.
    """
    return max(0, min(reserve, int(limit * (1 - fraction) * 0.6)))


def interrupt_level(limit: int, fraction: float, start_usage: int) -> int:
    """Return the usage at which the running cell is interrupted.

    ``fraction`` of the budget, unless the cell started above that already (a leak across cells): then
    half of what is left above its start, so ``del x`` in a full kernel still runs, but growth does not.
    """
    base = int(limit * fraction)
    if start_usage < base:
        return base
    return start_usage + max(8 * MiB, (limit - start_usage) // 2)


def poll_factor(limit: int, usage: int, fraction: float) -> int:
    """Return how many poll intervals the watchdog may wait before its next reading.

    Each wake-up costs the watchdog 0.2-0.7 ms of CPU on a busy machine (cold caches, GIL hand-off),
    whatever it then reads. Far below the threshold nothing can cross it in one longer interval (even
    4 GB/s of allocation moves 400 MB in 100 ms, under half of a 1 GiB budget), so it wakes up to 10x
    less often there; the fence, re-set at every reading, still stops any single allocation too big
    for the budget.
    """
    distance = int(limit * fraction) - usage
    if distance > limit * 0.5:
        return 10
    if distance > limit * 0.3:
        return 5
    if distance > limit * 0.15:
        return 2
    return 1


_NUMPY_MSG = re.compile(r"shape \(([\d,\s]*)\) and data type (\w+)")
_SIZE_MSG = re.compile(r"Unable to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB|PiB)")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50}


def requested_bytes(exc: BaseException | None) -> int | None:
    """Return how many bytes a failed allocation asked for, when the exception says so (numpy does)."""
    if exc is None:
        return None
    total = getattr(exc, "_total_size", None)  # numpy's _ArrayMemoryError
    if isinstance(total, int):
        return total
    text = str(exc)
    match = _NUMPY_MSG.search(text)
    if match:
        dims = [int(d) for d in match.group(1).replace(" ", "").split(",") if d]
        try:
            import numpy as np

            itemsize = np.dtype(match.group(2)).itemsize
        except Exception:
            itemsize = None
        if itemsize is not None:
            n = itemsize
            for d in dims:
                n *= d
            return n
    match = _SIZE_MSG.search(text)
    if match:
        return int(float(match.group(1)) * _UNITS[match.group(2)])
    return None


# -- fast meters -----------------------------------------------------------------------------------


class Meters:
    """Reads the fast meters with pread on descriptors opened once: a few microseconds each."""

    def __init__(self) -> None:
        self._statm_fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self._groups: dict[str, tuple[int, int, bytes]] = {}  # dir -> (usage fd, stat fd, inactive key)
        self._lag: dict[str, tuple[int, int, int, float]] = {}  # dir -> (rss, ws, credit, since)
        self.stack_bytes = 0  # statm's data counts the stack too; RLIMIT_DATA does not
        self.untouched_base: int | None = None  # VmData minus resident anonymous memory at the cell's start
        self._last_gap = 0
        self.gap_rose_at = 0.0  # when untouched address space last grew (someone is allocating now)

    def watch(self, directories: list[str], version: int) -> None:
        """Read these cgroup directories from now on (closing those no longer needed)."""
        for d in list(self._groups):
            if d not in directories:
                for fd in self._groups.pop(d)[:2]:
                    os.close(fd)
        for d in directories:
            if d in self._groups:
                continue
            usage_name = "memory.usage_in_bytes" if version == 1 else "memory.current"
            key = b"total_inactive_file " if version == 1 else b"inactive_file "
            try:
                ufd = os.open(os.path.join(d, usage_name), os.O_RDONLY | os.O_CLOEXEC)
                sfd = os.open(os.path.join(d, "memory.stat"), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            self._groups[d] = (ufd, sfd, key)

    def _statm(self) -> tuple[int, int, int]:
        """Return (RSS, VmData, untouched gap = VmData - resident anonymous) from one read of statm."""
        fields = os.pread(self._statm_fd, 256, 0).split()
        rss = int(fields[1]) * PAGE
        vm_data = max(0, int(fields[5]) * PAGE - self.stack_bytes)
        return rss, vm_data, vm_data - (rss - int(fields[2]) * PAGE)  # RSS - file/shmem = resident anonymous

    def read(self) -> Reading:
        """Return one reading whose VmData, untouched space and working sets are safe to combine.

        The fence is VmData + limit - (working set + untouched) - margin, and untouched = VmData - resident
        anonymous - base, so it is in effect "VmData may reach limit + base - margin + (resident anonymous -
        working set)": the process's own figures and the group's must describe the same moment. They are read
        one after the other, and between the reads the watchdog can wait on the GIL for a long C call (a
        thread touching a 300 MB array) while another thread frees an array: its RSS read before the free
        and the group's working set read after it raised the fence by the whole freed size (also while a
        munmap is under way: pages are uncharged long before VmData drops), and threads mapped that much past
        the budget before the next tick (OOM kills in the four-thread stress test). So statm is read again
        after the group's counters and the safe side of each figure is kept: the lowest VmData and the highest
        untouched gap (a mapping or a free in between then lowers the fence, never raises it).
        """
        rss, vm_data, gap = self._statm()
        rss_low = rss
        groups: dict[str, tuple[int, int]] = {}
        for d, (ufd, sfd, key) in self._groups.items():
            try:
                usage = int(os.pread(ufd, 64, 0))
                stat = os.pread(sfd, 8192, 0)
            except (OSError, ValueError):
                continue
            inactive = 0
            if stat.startswith(key):
                start = len(key)
            else:
                at = stat.find(b"\n" + key)
                start = at + 1 + len(key) if at >= 0 else -1
            if start >= 0:
                end = stat.find(b"\n", start)
                inactive = int(stat[start : end if end >= 0 else None])
            ws = max(0, usage - inactive)
            rss_before = rss_low
            try:
                rss_after, vm_after, gap_after = self._statm()
                vm_data = min(vm_data, vm_after)
                gap = max(gap, gap_after)
                rss_low = min(rss_low, rss_after)
            except (OSError, ValueError, IndexError):
                pass
            groups[d] = (usage, max(0, ws - self._lag_credit(d, rss_before, rss_low, ws)))
        if self.untouched_base is None or gap < self.untouched_base:
            self.untouched_base = gap  # freed or touched below the base: the base follows it down
        if gap > self._last_gap + GAP_NOISE:
            self.gap_rose_at = time.monotonic()
        self._last_gap = gap
        return Reading(vm_data, rss, groups, gap - self.untouched_base)

    @property
    def last_gap(self) -> int:
        return self._last_gap

    def rebase(self, quiet_seconds: float = 1.0) -> bool:
        """Forget untouched address space taken so far (at a cell's start), unless it is still growing.

        Without this, memory that malloc_trim() gives back while VmData stays (FACTS.md) would shrink the
        budget for good. But while something allocates untouched memory right now (a thread left running
        by an interrupted cell), forgetting it would let that thread touch it all past the budget.
        Returns True when it rebased.
        """
        self.read()
        if quiet_seconds > 0 and time.monotonic() - self.gap_rose_at < quiet_seconds:
            return False
        self.untouched_base = None
        self.read()
        return True

    def _lag_credit(self, directory: str, rss_before: int, rss_low: int, ws: int) -> int:
        """Return how much of the group's working set is memory we freed that it has not uncharged yet.

        The group's counters lag our own frees (a 700 MB ``del`` showed in RSS at once, in
        memory.usage_in_bytes only some readings later); without this the fence stays shut right after
        the user freed memory. Only what our own RSS dropped counts, for at most a second, and the credit
        shrinks as the group's counter catches up, so nobody else's growth can hide behind it; it is never
        more than the working set exceeds our lowest RSS (the lag itself, as far as it is visible). The drop
        is measured from the lowest RSS of the previous reading (read after its working set too) to the
        RSS read before this working set: a free that the previous working set already showed is no lag.
        """
        now = time.monotonic()
        prev = self._lag.get(directory)
        credit, since = 0, 0.0
        if prev is not None:
            prev_rss, prev_ws, credit, since = prev
            if credit and now - since > 1.0:
                credit = 0
            ws_drop = max(0, prev_ws - ws)
            credit = max(0, credit - ws_drop)
            rss_drop = prev_rss - rss_before
            if rss_drop > GAP_NOISE and rss_drop > ws_drop:
                credit += rss_drop - ws_drop
                since = now
        # A lag shows as a working set above our RSS; once the counter has caught up (while new growth kept
        # the working set from dropping) no credit is left, or it would raise the fence over real usage.
        credit = min(credit, max(0, ws - rss_low))
        self._lag[directory] = (rss_low, ws, credit, since)
        return credit

    def close(self) -> None:
        for ufd, sfd, _ in self._groups.values():
            for fd in (ufd, sfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._groups.clear()
        try:
            os.close(self._statm_fd)
        except OSError:
            pass


# -- the guard -------------------------------------------------------------------------------------


@dataclass
class CellState:
    """What the guard knows about the cell that is running."""

    execution_count: int | None
    start_usage: int
    level: int
    peak: int
    started: float
    interrupts: int = 0
    code: str | None = None
    no_room_seen: bool = False


class Guard:
    """The memory guard of one kernel: budget, fence, watchdog, and the evidence of its last intervention."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.enabled = False
        self.last_failure: dict[str, Any] | None = None
        self.interventions = 0
        self.stepped_aside: str | None = None  # why the watchdog stopped itself, when it did
        self.warnings: list[str] = list(self.settings.warnings)
        self._reader = MemoryReader(rlimits=False)
        self._reader_lock = threading.Lock()
        self._location: CgroupLocation | None = self._reader.location
        self._group_dirs = {g.path: g.directory for g in self._location.groups} if self._location else {}
        self._fence = Fence()
        self._meters = Meters()
        self._override: tuple[int, str] | None = None
        self._candidates: list[Candidate] = []
        self._snapshot: MemorySnapshot | None = None
        self._state: tuple[Candidate, int, int, Reading] | None = None
        self._lock = threading.RLock()
        self._cell: CellState | None = None
        self._ceiling: int | None = None  # absolute fence cap while the watchdog has frozen growth
        self._idle_base: int | None = None  # usage when the last cell ended
        self._idle_noted = False
        self._hold: int | None = None  # absolute fence while the error path runs
        self._reserve: bytearray | None = None
        self._pending: dict[str, Any] | None = None  # what the watchdog saw when it interrupted
        self._sent = False  # a SIGINT from the guard is on its way
        self._handling = False  # the error path of this cell runs (or ran): no more interrupts
        self._sent_at = 0.0
        self._trimmed_at = 0.0
        self._no_room_since: float | None = None
        self._next_stuck_check = 0.0
        self._prev_usage = 0
        self._start_wait_since: float | None = None
        self._next_refresh = 0.0
        self._next_children = 0.0
        self._children = children.ChildAdjuster(self.settings.child_oom_score_adj)
        self._watchdog: Any = None
        self.main_ident = threading.main_thread().ident
        self.ticks = 0
        self.max_tick_gap = 0.0
        self.watchdog_cpu_seconds = 0.0  # CPU time the watchdog thread itself has used
        self._baseline_threads = threading.active_count()
        self.interval_factor = 1  # the watchdog waits this many poll intervals (5 far from the budget)

    # -- public API ------------------------------------------------------------------------------

    def enable(self) -> None:
        """Start the fence, the watchdog and the children's volunteering (again)."""
        from .watchdog import Watchdog

        with self._lock:
            if self.enabled:
                return
            self.stepped_aside = None
            self.refresh()
            self._take_reserve()
            children.enable(self.settings.child_oom_score_adj, self._fence.original)
            self.enabled = True
            self.tick()
            self._watchdog = Watchdog(self, self.settings.poll_interval)
            self._watchdog.start()
            self._baseline_threads = threading.active_count()  # ipykernel's own threads and the watchdog

    def disable(self) -> None:
        """Stop the watchdog, give the user's RLIMIT_DATA back, release the reserve."""
        with self._lock:
            self.enabled = False
            watchdog, self._watchdog = self._watchdog, None
            self._sent = False
        if watchdog is not None:
            watchdog.stop()
        with self._lock:
            self._fence.restore()
            self._ceiling = self._hold = None
            self._reserve = None
            children.disable()

    def step_aside(self, reason: str) -> None:
        """Turn the guard off from inside (the watchdog failed): the user's RLIMIT_DATA comes back."""
        with self._lock:
            self.stepped_aside = reason
            self.warnings.append(reason)
            self.enabled = False
            self._watchdog = None
            self._sent = False
            self._ceiling = self._hold = None
            self._fence.restore()
            children.disable()

    def close(self) -> None:
        """Disable and close the files the meters hold."""
        self.disable()
        self._meters.close()
        self._reader.close()

    @property
    def budget_bytes(self) -> int | None:
        state = self._current()
        return state[0].limit_bytes if state else None

    @property
    def budget_source(self) -> str:
        state = self._current()
        return state[0].source if state else "unknown"

    @property
    def usage_bytes(self) -> int | None:
        state = self._current()
        return state[1] if state else None

    def set_budget(self, nbytes: int | None, source: str = "%sentinel budget") -> None:
        """Replace the configured limit by ``nbytes`` (None: back to the configured one); applied at once."""
        if nbytes is not None and int(nbytes) <= 0:
            raise ValueError(f"a budget must be positive, got {nbytes}")
        with self._lock:
            self._override = None if nbytes is None else (int(nbytes), source)
            self.refresh()
            if self.enabled:
                self.tick()

    def snapshot(self) -> MemorySnapshot:
        """Return a fresh full memory reading (machine view: without the guard's own fence)."""
        with self._reader_lock:
            self._snapshot = self._reader.snapshot()
            return self._snapshot

    def status(self) -> dict[str, Any]:
        """Return the guard's state as plain data for ``%sentinel`` and tests."""
        state = self._current()
        cand, usage, headroom, reading = state if state else (None, None, None, None)
        limit = cand.limit_bytes if cand else None
        return {
            "enabled": self.enabled,
            "budget_bytes": limit,
            "budget_source": cand.source if cand else "unknown",
            "usage_bytes": usage,
            "headroom_bytes": headroom,
            "rss_bytes": reading.rss if reading else None,
            "vm_data_bytes": reading.vm_data if reading else None,
            "interrupt_at_bytes": int(limit * self.settings.interrupt_fraction) if limit else None,
            "margin_bytes": self._margin(limit) if limit else None,
            "fence_bytes": self._fence.current,
            "original_rlimit_data": [_rl(v) for v in self._fence.original],
            "poll_interval": self.settings.poll_interval,
            "watchdog_alive": bool(self._watchdog and self._watchdog.is_alive()),
            "ticks": self.ticks,
            "max_tick_gap_seconds": round(self.max_tick_gap, 4),
            "watchdog_cpu_seconds": round(self.watchdog_cpu_seconds, 4),
            "interventions": self.interventions,
            "reserve_held": self._reserve is not None,
            "stepped_aside": self.stepped_aside,
            "last_failure": self.last_failure,
            "limits": [
                {"source": c.source, "limit_bytes": c.limit_bytes, "kind": c.kind} for c in self._candidates
            ],
            "warnings": list(self.warnings),
        }

    # -- measuring -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the full budget picture (every 2 s): limits, configured budgets, stack size."""
        snap = self.snapshot()
        machine = snap.budget.limit_bytes if snap.budget else None
        configured: list[tuple[int, str]] = []
        if self._override is not None:
            configured.append(self._override)
        else:
            for setting in self.settings.memory_limits:
                try:
                    configured.append((setting.resolve(machine), setting.source))
                except ValueError:
                    continue  # a percentage with no machine budget to take it of
        cands = candidates_from(snap, self._group_dirs, configured, self._fence.original_soft)
        dirs = sorted({c.meter[7:] for c in cands if c.meter.startswith("cgroup:")})
        if self._location is not None:
            self._meters.watch(dirs, self._location.version)
        try:
            fields = os.pread(self._meters._statm_fd, 256, 0).split()
            statm_data = int(fields[5]) * PAGE
            if snap.process.vm_data_bytes is not None:
                self._meters.stack_bytes = max(0, statm_data - snap.process.vm_data_bytes)
        except (OSError, ValueError, IndexError):
            pass
        self._candidates = cands

    def _current(self) -> tuple[Candidate, int, int, Reading] | None:
        if self._state is None or not self.enabled:
            if not self._candidates:
                self.refresh()
            reading = self._meters.read()
            best = tightest(self._candidates, reading)
            if best is None:
                return None
            self._state = (*best, reading)
        return self._state

    def _margin(self, limit: int) -> int:
        return effective_margin(limit, self.settings.reserve_bytes, self.settings.interrupt_fraction)

    # -- the tick --------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Read, decide and act once: re-set the fence; interrupt a cell that crossed its threshold."""
        now = time.monotonic() if now is None else now
        self.ticks += 1
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self.refresh()
            if self._reserve is None and self._hold is None:
                self._retake_reserve_if_room()
        if now >= self._next_children:
            self._next_children = now + CHILDREN_SECONDS
            self._children.adjust_existing()
        reading = self._meters.read()
        best = tightest(self._candidates, reading)
        if best is None:
            return
        cand, usage, headroom = best
        self._state = (cand, usage, headroom, reading)
        margin = self._margin(cand.limit_bytes)
        self.interval_factor = poll_factor(cand.limit_bytes, usage, self.settings.interrupt_fraction)
        committed = tightest(self._candidates, reading, committed=True)
        fence_headroom = committed[2] if committed else headroom
        with self._lock:
            if not self.enabled:
                return
            cell = self._cell
            if cell is not None:
                cell.peak = max(cell.peak, usage)
                # No room left under the fence for a while: something in the cell waits on memory it
                # cannot get (even Thread.start() can hang when its new thread cannot allocate).
                if fence_headroom - margin > 0:
                    self._no_room_since = None
                elif self._no_room_since is None:
                    self._no_room_since = now
                if self._no_room_since is not None:
                    cell.no_room_seen = True
                stuck = self._no_room_since is not None and now - self._no_room_since >= NO_ROOM_SECONDS
                if not stuck and cell.no_room_seen and now >= self._next_stuck_check:
                    self._next_stuck_check = now + 0.5
                    stuck = self._thread_start_hangs(now)
                # Growing fast while ticks stall (a thread holding the GIL between allocations): judge by
                # where usage will be at the next tick, but never earlier than the fence's own distance
                # from the threshold, so one big legitimate allocation is not taken for a runaway loop.
                lead = min(max(usage - self._prev_usage, 0), max(0, cand.limit_bytes - margin - cell.level))
                self._prev_usage = usage
                over = usage + lead >= cell.level or stuck
                if over and self._ceiling is None and self._trim_first(now):
                    # malloc gave its cache of freed memory back to the OS: judge again, at once
                    reading = self._meters.read()
                    best = tightest(self._candidates, reading) or best
                    cand, usage, headroom = best
                    self._state = (cand, usage, headroom, reading)
                    committed = tightest(self._candidates, reading, committed=True)
                    fence_headroom = committed[2] if committed else headroom
                    over = usage >= cell.level or stuck
                if over:
                    if self._ceiling is None:
                        self._ceiling = reading.vm_data + TIGHT_SLACK
                        self._pending = self._evidence("watchdog", reading=reading, best=best)
                    if not self._handling and now - self._sent_at >= RESEND_SECONDS:
                        self._interrupt_main(now)
            else:
                idle_level = int(cand.limit_bytes * self.settings.interrupt_fraction)
                base = self._idle_base if self._idle_base is not None else usage
                if usage >= idle_level and usage > base + IDLE_GROWTH:
                    if self._ceiling is None and self._trim_first(now):
                        return
                    if self._ceiling is None:
                        # Memory grows with no cell running: a background thread. Interrupting the idle
                        # main thread would stop nothing, so growth is frozen instead: the thread's next
                        # allocation fails with MemoryError (in that thread), the kernel lives.
                        self._ceiling = reading.vm_data + TIGHT_SLACK
                        self._note_background(usage, cand)
                elif self._ceiling is not None and usage < idle_level:
                    self._ceiling = None
            ceiling = self._hold if self._hold is not None else self._ceiling
            self._fence.apply(self._fence.compute(reading.vm_data, fence_headroom, margin, ceiling))

    def _thread_start_hangs(self, now: float) -> bool:
        """Return True when the main thread has waited over a second in ``Thread.start()``.

        CPython (3.11/3.12) waits forever in ``Thread.start()`` when the new thread hits MemoryError
        before it signals that it started, which happens when the fence had no room. Only asked after
        the fence had no room during this cell; the interrupt turns the hang into MemoryBudgetError.
        """
        frame = sys._current_frames().get(self.main_ident)  # type: ignore[arg-type]
        inside = False
        depth = 0
        while frame is not None and depth < 12:
            if frame.f_code is _THREAD_START:
                inside = True
                break
            frame = frame.f_back
            depth += 1
        del frame
        if not inside:
            self._start_wait_since = None
            return False
        if self._start_wait_since is None:
            self._start_wait_since = now
        return now - self._start_wait_since >= 1.0

    def _trim_first(self, now: float, force: bool = False) -> bool:
        """Return True when it asked malloc to give freed memory back (at most once a second).

        glibc keeps freed memory of its arenas resident (threads that allocated and freed arrays leave
        hundreds of MB counted as used): before interrupting anyone for usage that is only malloc's cache,
        ``malloc_trim(0)`` returns it, and the next tick judges again.
        """
        if not force and now - self._trimmed_at < 1.0:
            return False
        self._trimmed_at = now
        # What malloc_trim() gives back (RSS down, VmData not) stays counted as untouched: malloc hands
        # those pages out again without VmData growing, i.e. without the fence seeing it, so the fence
        # must keep room for them (forgetting them let a stress test of four threads reach the OOM).
        return malloc_trim()

    def thread_failed(self, thread_name: str, exc: BaseException | None) -> None:
        """A thread other than the main one died of MemoryError (at the fence): stop the running cell too.

        Ticks stall while a thread holds the GIL between big allocations, so such a thread can reach the
        fence before the watchdog's threshold; its death is the evidence. The cell that waits for it
        (``t.join()``) then fails with MemoryBudgetError instead of ending as if nothing happened.
        """
        with self._lock:
            if not self.enabled or self._cell is None or self._handling:
                return
            evidence = self._evidence("fence", exc=exc)
            evidence["thread"] = thread_name
            evidence["background"] = True
            self._pending = evidence
            self._interrupt_main(time.monotonic())

    def _interrupt_main(self, now: float) -> None:
        import signal

        self._sent = True
        self._sent_at = now
        if self._cell is not None:
            self._cell.interrupts += 1
        signal.pthread_kill(self.main_ident, signal.SIGINT)  # type: ignore[arg-type]

    def _note_background(self, usage: int, cand: Candidate) -> None:
        if self._idle_noted:
            return
        self._idle_noted = True
        from ..sizes import format_bytes

        self._pending = self._evidence("watchdog", best=(cand, usage, cand.limit_bytes - usage))
        self._pending["background"] = True
        try:
            print(
                f"kernel-sentinel: memory grew to {format_bytes(usage)} of {format_bytes(cand.limit_bytes)} "
                f"({cand.source}) while no cell was running (a background thread?). Further allocations "
                "fail with MemoryError until memory is freed.",
                file=sys.stderr,
            )
        except Exception:
            pass

    # -- cells and failures (called on the main thread by the extension) ------------------------

    def cell_started(self, execution_count: int | None, code: str | None = None) -> None:
        """A cell starts on the main thread: its interrupt threshold is fixed now."""
        state = self._current() if not self.enabled else None
        # Untouched address space from earlier cells is forgotten at a cell's start once it has stopped
        # growing for a second (a thread left running by an interrupted cell may still be taking it).
        self._meters.rebase(quiet_seconds=1.0)
        reading = self._meters.read()
        best = tightest(self._candidates, reading) or (state[:3] if state else None)
        if best and best[1] >= best[0].limit_bytes * self.settings.interrupt_fraction and self._trim_first(
            time.monotonic(), force=True
        ):
            reading = self._meters.read()  # what is left once malloc's cache of freed memory is returned
            best = tightest(self._candidates, reading) or best
        usage = best[1] if best else 0
        limit = best[0].limit_bytes if best else 0
        with self._lock:
            self._cell = CellState(
                execution_count,
                usage,
                interrupt_level(limit, self.settings.interrupt_fraction, usage) if limit else 1 << 62,
                usage,
                time.monotonic(),
                code=code,
            )
            self._ceiling = None
            self._idle_noted = False
            self._pending = None
            self._sent = False
            self._handling = False
            self._no_room_since = None
        if self.enabled:
            try:
                self.tick()  # the fence as of now, not as of the last tick (memory may just have been freed)
            except Exception:
                pass

    def cell_finished(self) -> None:
        """The cell is over: no interrupt may be sent from now on; growth is free again."""
        with self._lock:
            self._cell = None
            self._sent = False
            self._handling = False
            self._ceiling = None
            self._hold = None
            try:
                self._idle_base = self._meters.read().meter(self._state[0].meter) if self._state else None
            except Exception:
                self._idle_base = None
            state = self._state
        if state is not None and self._idle_base is not None:
            if self._idle_base >= state[0].limit_bytes * self.settings.interrupt_fraction:
                # A full kernel after the cell: give malloc's cache of freed memory back now, so the next
                # cell (and ipykernel's own threads) do not start at the fence.
                if self._trim_first(time.monotonic(), force=True):
                    try:
                        self._idle_base = self._meters.read().meter(state[0].meter)
                    except Exception:
                        pass
        if self._reserve is None and self.enabled:
            self._retake_reserve_if_room()

    @property
    def cell_running(self) -> bool:
        return self._cell is not None

    def consume_interrupt(self) -> bool:
        """Return True (once) when a SIGINT that just arrived was sent by the guard."""
        sent, self._sent = self._sent, False
        return sent

    def begin_failure(self, trigger: str, exc: BaseException | None) -> dict[str, Any]:
        """Return the evidence of this failure; free the reserve and hold the fence so the error can be shown.

        The hold is an absolute fence (VmData after the release plus the reserve's size), set once: room
        for the error path that does not move with VmData, so it cannot creep.
        """
        self._handling = True
        self._reserve = None  # the error path's memory, given back now
        try:
            reading = self._meters.read()
        except Exception:
            reading = None
        with self._lock:
            if reading is not None:
                self._hold = reading.vm_data + max(self.settings.error_reserve_bytes, TIGHT_SLACK)
                try:
                    self._fence.apply(min(self._fence.current or INFINITY, self._hold))
                except (ValueError, OSError):
                    pass
            pending = self._pending
            self._pending = None
        evidence = self._evidence(trigger, reading=reading, exc=exc)
        if pending is not None:
            evidence["watchdog_fired"] = True
            evidence["usage_at_interrupt_bytes"] = pending.get("usage_bytes")
            if pending.get("background"):
                evidence["background"] = True
            if pending.get("thread"):
                # A thread died at the fence and the cell was stopped for it: the fence refused.
                evidence["thread"] = pending["thread"]
                evidence["trigger"] = "fence"
                evidence["exception"] = pending.get("exception")
                evidence["requested_bytes"] = pending.get("requested_bytes")
        self.interventions += 1
        self.last_failure = evidence
        return evidence

    def end_failure(self) -> None:
        """The error has been shown: let the fence follow usage again."""
        with self._lock:
            self._hold = None

    def _evidence(
        self,
        trigger: str,
        reading: Reading | None = None,
        best: tuple[Candidate, int, int] | None = None,
        exc: BaseException | None = None,
    ) -> dict[str, Any]:
        """Return the plain-data evidence dict of an intervention (no references to frames or objects)."""
        if reading is None:
            reading = self._meters.read()
        if best is None:
            best = tightest(self._candidates, reading)
        cand = best[0] if best else None
        cell = self._cell
        ws = None
        for d, (_usage, w) in reading.cgroups.items():
            if cand is not None and cand.meter == f"cgroup:{d}":
                ws = w
        if ws is None and reading.cgroups:
            ws = next(iter(reading.cgroups.values()))[1]
        limit = cand.limit_bytes if cand else None
        return {
            "trigger": trigger,
            "requested_bytes": requested_bytes(exc),
            "budget_bytes": limit,
            "budget_source": cand.source if cand else "unknown",
            "budget_kind": cand.kind if cand else None,
            "usage_bytes": best[1] if best else None,
            "rss_bytes": reading.rss,
            "working_set_bytes": ws,
            "vm_data_bytes": reading.vm_data,
            "fence_bytes": self._fence.current,
            "interrupt_at_bytes": cell.level if cell else (int(limit * self.settings.interrupt_fraction) if limit else None),
            "cell": cell.execution_count if cell else None,
            "code": (cell.code or "")[:2000] if cell else None,
            "usage_at_cell_start_bytes": cell.start_usage if cell else None,
            "peak_usage_bytes": cell.peak if cell else None,
            "exception": f"{type(exc).__name__}: {str(exc)[:300]}" if exc is not None else None,
            "watchdog_fired": trigger == "watchdog",
            "time": time.time(),
        }

    # -- the error path's reserve -----------------------------------------------------------------

    def _take_reserve(self) -> None:
        n = self.settings.error_reserve_bytes
        if n <= 0 or self._reserve is not None:
            return
        try:
            self._reserve = bytearray(n)  # zero-filled: its pages are resident, so freeing it frees memory
        except MemoryError:
            self._reserve = None

    def _retake_reserve_if_room(self) -> None:
        state = self._state
        if state is None:
            self._take_reserve()
            return
        cand, _usage, headroom, _reading = state
        if headroom > self._margin(cand.limit_bytes) + 2 * self.settings.error_reserve_bytes:
            self._take_reserve()


_THREAD_START = threading.Thread.start.__code__


def _rl(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def get_guard(ip: Any = None) -> Guard | None:
    """Return the guard of the running IPython shell (or of ``ip``), or None when there is none."""
    if ip is None:
        try:
            from IPython import get_ipython

            ip = get_ipython()
        except Exception:
            return None
    return getattr(ip, "_kernel_sentinel_guard", None) if ip is not None else None
