"""The guard's controller: reads the meters, asks the policy, moves the fence and interrupts the cell.

Measure -> decide -> act. ``Guard.tick()`` (the watchdog thread, every ~10 ms) takes a ``Reading``
(``meters.py``), asks ``policy.py`` for the fence and the interrupt line, re-sets RLIMIT_DATA and sends
SIGINT to the main thread when a cell's committed memory crosses the line. The full budget picture
(``MemoryReader`` with ``rlimits=False``, so the guard never mistakes its own fence for the budget) is
re-read every two seconds; that is also when the kernel's children are made OOM volunteers. Threads running
a cell's code that keep growing once the main thread was stopped (or while no cell runs) are stopped in
their own thread (``threadstop.py``), before they take the room the kernel's own machinery needs.

Which thread may touch what (the code obeys this; "lock" is ``Guard._lock``):

=====================  ===========================================================================
thread                 may touch
=====================  ===========================================================================
any                    the meters (``Meters.read`` has its own lock)
watchdog (``tick``)    candidates, ``_state``, growth rates (and ``_rate_samples``), the fence (``Fence``
                       has its own lock), the thread-stops (``_stopping``, ``threads_stopped``), the running
                       cell's notes ``retouchable``/``retaking``/``base_seen``/``step_over``/``step_strikes`` (plain
                       writes: only whoever ticks writes them once the cell started); under the lock:
                       ``_cell`` (peak, ``vm_seen``, ``committed_seen``), ``_ceiling``, ``_pending``,
                       ``_sent``, ``_no_room_since``; the reserve only through ``_retake_reserve_if_room`` under the lock and never while
                       ``_handling`` or ``_hold`` is set
main (cell hooks,      ``cell_started``/``cell_finished``/``begin_failure``/``end_failure``: all of the
error handler,         above under the lock, and ``_after_stop``, ``_kernel_threads``, ``_free_asked``,
magics)                ``_free_fresh_cells`` (main thread only, no lock); ``_reserve`` is
                       released only in ``begin_failure``, under the lock, after ``_hold`` and
                       ``_handling`` are set (so no tick can take it back); runs a ``tick()`` itself
                       (``_refence``) at a cell's start, after its error and at its end when the freeze
                       or the hold went, so the fence never waits for the watchdog's next tick; wakes the
                       watchdog (``Watchdog.nudge``) when a cell's start shortened its wait
a thread starting      ``before_thread_start``/``thread_start_refused``: read the meters and run ``_refence``
a thread               (a ``tick()``, as the main thread does at a cell's start); set ``_cell.threaded``
signal handler         ``consume_interrupt``, ``interrupt_raised``, ``note_recursion``: plain attribute
(main thread)          writes (``_sent``, ``_raised_at``, ``_recursion``, ``_user_interrupt``), never the lock: the handler runs
                       between two bytecodes of the main thread, which may hold the lock at that moment
dying thread           ``thread_failed``: under the lock, sets ``_pending`` and sends the interrupt;
(``excepthook``)       ``thread_stopped``: appends to ``threads_stopped`` (a list: one append is atomic)
native stop            ``native_stop(code)`` (set once by the extension before the first cell): called by
(watchdog)             the watchdog right after each SIGINT it sends, under the lock; it must only flag
                       a library's own interrupt (duckdb's ``interrupt()``), never block or allocate
forked child           nothing: ``children.py``'s at-fork hook gives the child the user's RLIMIT_DATA
                       back; the child never ticks (the watchdog thread does not survive a fork)
=====================  ===========================================================================

The budget is the tightest of: every cgroup limit on the way to the root (measured against what the group
has in use: its usage less the page cache the kernel drops before an OOM kill), system RAM (the kernel's
RSS plus MemAvailable), a configured limit (``KERNEL_SENTINEL_MEMORY_LIMIT``, ``SentinelGuard.memory_limit``,
``%sentinel budget``: measured like the machine's budget), and the user's own RLIMIT_DATA from before the
guard (measured against VmData).
"""

from __future__ import annotations

import mmap
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..memory import MemoryReader, MemorySnapshot
from ..memory.linux import OomKillMeter
from ..memory.reader import CgroupLocation
from . import children, imports, threadstop
from .config import GuardSettings
from .fence import INFINITY, LAST_ROOM, Fence
from .meters import FORGIVE_SECONDS, SETTLED_SECONDS, Meters
from .policy import (
    ERROR_ROOM,
    UNSEEN_ROOM,
    MiB,
    Candidate,
    Reading,
    candidates_from,
    cell_level,
    fence_margin,
    growth_lead,
    interrupt_line,
    poll_factor,
    recursion_level,
    requested_bytes,
    retouch_margin,
    sustained_rate,
    threaded_margins,
    tightest,
)
from .reclaim import heap_slack_bytes, malloc_free_bytes, malloc_trim
from .recursion import RECURSION_FRAMES, recurses

REFRESH_SECONDS = 2.0  # full budget re-read (limits, MemAvailable): ~0.2-0.7 ms, so not at every tick
CHILDREN_SECONDS = 2.0  # children scan
OOM_CHECK_SECONDS = 0.05  # the kernel's group's OOM-kill counter, read while a cell runs
RESEND_SECONDS = 0.1  # a cell that keeps growing after an interrupt gets another one
UNWIND_SECONDS = 2.0  # ... unless one was raised this recently: it is still unwinding
TIGHT_SLACK = 8 * MiB  # room left when the watchdog freezes growth, so the interrupt itself can unwind
NO_ROOM_SECONDS = 2.0  # a cell that has had no room under the fence this long is interrupted
IDLE_GROWTH = 32 * MiB  # growth with no cell running before the fence freezes (a background thread)
GROWTH_NOISE = 4 * MiB  # committed memory moving less than this did not grow (meters' noise)
RATE_SECONDS = 0.05  # ... within this long: a growth sample is this long at least, unless it grew more
RECURSION_CHECK_SECONDS = 0.05  # how often a growing cell's main thread is looked at for a recursion
DELIVERY_SECONDS = 0.005  # from pthread_kill to the handler running, between two bytecodes (FACTS.md)
RESERVATION_RATIO = 4  # fresh untouched space this many times what in-use memory grew by in a tick: a reservation
THREAD_START_ROOM = 8 * MiB  # beyond a new thread's stack: what it allocates before it reports it started
IMPORT_ROOM = 4 << 30  # OpenBLAS maps 32 MiB per BLAS thread at load, up to 64 threads, in numpy and again in scipy
ROOM_SHARE = 8  # a cell whose fence is squeezed by reservations keeps 1/8 of its budget (_settled_credit)
SLACK_MIN = 1 * MiB  # forgiven untouched space below this holds no slack worth asking glibc about
# The most of that slack the fence leaves out: one block takes at most one heap's worth (glibc's HEAP_MAX_SIZE on
# 64-bit); more is for the watchdog (the cell's retake count). Uncapped, a kernel after a soak's killers had 200+ MiB
# of slack, and a 560 MiB array with 200 MiB of 1 GiB in use was refused (75 refusals of cells that fit in 10 minutes).
SLACK_FENCED = 64 * MiB
POOL_ERROR = 8  # malloc's free count may be 1/8 short of what a loop takes back (151 MiB where it said 138)
# What a count asked afresh while a cell takes the heap back may miss: that count is at most one tick old, so no
# share of a big pool, only what moves between two readings unseen by VmData (``UNSEEN_ROOM``).
FRESH_POOL_ERROR = UNSEEN_ROOM
RETAKE_MIN = 16 * MiB  # freed heap less than this is malloc's usual slack, not a risk worth a margin
STOP_PENDING_SECONDS = 0.2  # a thread-stop not taken by then is withdrawn: that thread was blocked, not growing
FREE_ASK_SECONDS = 1.0  # mallinfo2 at a cell's start (~25-210 us: it walks every free chunk): at most this often...
FRESH_CELLS = 3  # ... except at the next cells' starts after a memory error or a cell that took much: their `del`


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
    recursion: bool = False  # the main thread is deep in a recursion that grows memory
    others_at_start: int = 0  # the group's in-use bytes beyond our own RSS when the cell started
    threads_at_start: frozenset[int] = frozenset()  # threads alive before the cell: not its own
    retouchable: int = 0  # freed heap, forgiven, malloc may hand out again unseen by the fence (asked at the start)
    slack: int = 0  # the threads' heaps' slack at the start: glibc grows into it with no RLIMIT_DATA check at all
    base_at_start: int = 0  # the forgiven untouched space when it started: below it, that heap is retaken
    retaking: bool = False  # it grew while taking that heap again (watchdog only)
    base_seen: int = 0  # the forgiven untouched space at the last tick, and when (whoever ticks)
    base_seen_at: float = 0.0
    error_shown: bool = False  # its memory error was shown (end_failure, main thread): it grows no more
    threaded: bool = False  # it started threads of its own (set by whoever started one, or seen at a tick)
    step_over: int | None = None  # committed memory once one step that stopped took it over its level (tick)
    rate_mark: int = 0  # the guard's count of growth rates when it started
    step_strikes: int = 0  # ticks in a row that saw it past that step (tick)
    vm_at_start: int = 0  # VmData when it started: what it took since bounds what it can fill (_fill_fits)
    vm_seen: int = 0  # VmData and committed memory at the last tick (whoever ticks)
    committed_seen: int = 0

    def untaken(self, found: int, base_now: int) -> int:
        """Return what is left of ``found`` bytes of forgiven space (free heap, slack) the cell found at its start.

        Taken is what the forgiven untouched space fell by since the start (``found`` is part of it); never more
        than is forgiven now.
        """
        return max(0, min(base_now, found - max(0, self.base_at_start - base_now)))


def retakable_now(base: int) -> int | None:
    """Return how much of the forgiven untouched space ``base`` a cell may still take back unseen, asked of malloc now.

    glibc's free bytes and its threads' heaps' slack, with ``FRESH_POOL_ERROR``; None where glibc cannot say. Asked
    only while a cell takes the heap back and the start's count says it may not fit (~65 us: mallinfo2 walks the
    free chunks, malloc_info the heaps).
    """
    free = malloc_free_bytes()
    if free is None:
        return None
    return min(base, free + (heap_slack_bytes() or 0) + FRESH_POOL_ERROR)


def usage_of(reading: Reading, meter: str, default: int) -> int:
    """Return what ``meter`` reads in use in ``reading`` (untouched address space left out); ``default`` if unread."""
    usage = reading.meter(meter)
    return default if usage is None else usage


def running_threads() -> int:
    """Return how many Python threads run: ``threading.active_count()`` less threads that never started.

    A thread whose start the fence refused (its first allocations failed before it could leave threading's
    start-up table) stays in that table for good: counted, it made every later cell look threaded (untouched
    space never forgiven, wide margins). After the four-thread stress minute, eight such threads left the fence
    at VmData and refused a 300 MiB cell with 131 MiB of the 1 GiB group in use.
    """
    limbo = getattr(threading, "_limbo", None)
    try:
        return threading.active_count() - (len(limbo) if limbo is not None else 0)
    except Exception:  # the table changed size while read: the plain count (the safe side)
        return threading.active_count()


def threads_alive() -> frozenset[int]:
    """Return the idents of the Python threads alive now (``threadstop.alive()``), without building their list.

    Taken at every cell's start (the threads that are not the cell's own): ``threading.enumerate()`` and a set
    built in Python took ~30 us of a cell's start on a busy kernel; threading's table of started threads is
    keyed by ident already (one C-level copy under the GIL), and threads still starting are few.
    """
    active = getattr(threading, "_active", None)
    limbo = getattr(threading, "_limbo", None)
    if not isinstance(active, dict) or not isinstance(limbo, dict):
        return frozenset(threadstop.alive())
    try:
        alive = set(active)
        if limbo:
            alive.update(t.ident for t in list(limbo.values()) if t.ident is not None)
    except Exception:  # a table changed size while read: the plain way
        return frozenset(threadstop.alive())
    return frozenset(alive)


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
        self._reserve: mmap.mmap | None = None
        self._pending: dict[str, Any] | None = None  # what the watchdog saw when it interrupted
        self._sent = False  # a SIGINT from the guard is on its way
        self._handling = False  # the error path of this cell runs (or ran): no more interrupts
        self._sent_at = 0.0
        self._trimmed_at = 0.0
        self._no_room_since: float | None = None
        self._next_stuck_check = 0.0
        self._next_recursion_check = 0.0
        self._raised_at = 0.0  # when the signal handler last raised the guard's interrupt
        self._user_interrupt = False  # a SIGINT that was not the guard's reached this cell (the user's)
        self._rates: tuple[float, ...] = (0.0, 0.0, 0.0)  # committed growth (bytes/s) over the last ticks
        self._rate_samples = 0  # how many rates were taken so far (a cell's own are those since its start)
        self._last_tick_at = 0.0
        # (when, committed, VmData, in use, forgiven untouched space where the fence covers a retaken pool) the growth
        # sample being measured from
        self._rate_anchor: tuple[float, int, int, int, int | None] = (0.0, 0, 0, 0, None)
        self._unseen_rates: tuple[float, ...] = (0.0, 0.0, 0.0)  # of that growth, what VmData did not grow with
        self._stall = 0.0  # how late ticks come, smoothed (GIL stalls on a busy machine)
        self.reaction_seconds = self.settings.poll_interval + DELIVERY_SECONDS
        self.line_bytes: int | None = None  # the interrupt line of the last tick
        self._recursion: dict[str, Any] | None = None  # set by the signal handler when it stopped a recursion
        self._last_threaded = False  # the last cell started threads of its own (main thread)
        self._importing = False  # a module loads (any thread, guard/imports.py): its reservations pass the fence
        self._usage_prev = 0  # in-use memory at the last tick, and how much it grew since the one before
        self._usage_grew = 0
        self._reserved_since: float | None = None  # when only fresh untouched space first put the cell over
        # Asks native code that never polls SIGINT to stop (duckdb's fetch runs on): see _interrupt_main.
        self.native_stop: Any = None
        self._start_wait_since: float | None = None
        self._next_refresh = 0.0
        self._next_children = 0.0
        self._next_oom_check = 0.0
        self._oom_meter: OomKillMeter | None = None
        self._oom_seen: int | None = None  # the counter as of the last check (watchdog only)
        if self._location is not None:
            try:
                self._oom_meter = OomKillMeter(self._location.leaf.directory, self._location.version)
            except OSError:
                self._oom_meter = None
        self._children = children.ChildAdjuster(self.settings.child_oom_score_adj)
        self._watchdog: Any = None
        self.main_ident = threading.main_thread().ident
        self.ticks = 0
        self.max_tick_gap = 0.0
        self.watchdog_cpu_seconds = 0.0  # CPU time the watchdog thread itself has used
        self._baseline_threads = running_threads()
        self._kernel_threads: set[int] = threadstop.alive()  # main thread, at the first cell
        self._after_stop: int | None = None  # committed when the cell's error path began (lock)
        self._stopping: list[int] = []  # threads a ThreadMemoryError is pending in (watchdog only)
        self._stopping_at = 0.0
        self.threads_stopped: list[str] = []  # the cells' threads it stopped (their excepthook appends)
        self._first_cell_seen = False
        # (when, malloc's free bytes, its threads' heaps' slack, VmData) as last asked
        self._free_asked: tuple[float, int | None, int, int] | None = None
        self._free_fresh_cells = 0  # the next cell starts that ask malloc afresh (main thread only)
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
            self._baseline_threads = running_threads()  # ipykernel's own threads and the watchdog

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
        if self._oom_meter is not None:
            self._oom_meter.close()
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
            "interrupt_at_bytes": self._line_now(limit) if limit else None,
            "margin_bytes": self._margin(limit) if limit else None,
            "reaction_seconds": round(self.reaction_seconds, 4),
            "fence_bytes": self._fence.current,
            "original_rlimit_data": [_rl(v) for v in self._fence.original],
            "poll_interval": self.settings.poll_interval,
            "watchdog_alive": bool(self._watchdog and self._watchdog.is_alive()),
            "ticks": self.ticks,
            "max_tick_gap_seconds": round(self.max_tick_gap, 4),
            "watchdog_cpu_seconds": round(self.watchdog_cpu_seconds, 4),
            "interventions": self.interventions,
            "threads_stopped": list(self.threads_stopped),
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
            self._meters.stack_bytes = self._meters.main_stack_bytes(snap.process)  # VmStk as just read
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

    def _line_now(self, limit: int) -> int:
        """Return the interrupt line as of the last tick (without growth: a fresh one when none ran yet)."""
        if self.line_bytes is not None:
            return self.line_bytes
        return interrupt_line(limit, self._margin(limit), 0, self.settings.interrupt_fraction)

    def _margin(self, limit: int) -> int:
        return fence_margin(limit, self.settings.reserve_bytes)

    # -- the tick --------------------------------------------------------------------------------

    def _line(
        self,
        limit: int,
        margin: int,
        committed: int,
        vm_data: int,
        now: float,
        fraction: float,
        in_use: int,
        base: int | None = None,
    ) -> int:
        """Return the interrupt line now, after folding this reading into the growth rates (watchdog only).

        The lead follows only growth the fence cannot see: committed memory that grew while VmData did not
        (freed heap taken again, reservations filled, shared memory), and any growth while an extension module
        loads (the fence then lets VmData past the budget's room; of that, only memory touched: what a load
        reserves and leaves untouched is no danger, and counted it put the line under the cell's start). Growth
        that takes new address space meets the fence, re-set at every tick, however late the next tick comes: a
        loop of 4 MiB arrays at 1.2-3.5 GB/s was stopped 37-96 MiB under the line's place with that lead (its 89.8%
        of what stock could use), where the fence alone stops it with a MemoryError at the budget's margin, as it
        stops one allocation too big.
        The lead is judged at full polling speed (near the line the watchdog polls every interval), and
        ``poll_factor`` keeps the wait short while growth is sustained, so the lead holds for the next tick.
        ``base``: the forgiven untouched space now, given while the fence leaves out what is left of the freed heap a
        cell takes again (its fall since the last sample is that retaking: bounded, so no lead), None otherwise.
        """
        dt = now - self._last_tick_at if self._last_tick_at else 0.0
        if 0 < dt < 5.0:
            expected = self.settings.poll_interval * self.interval_factor
            self._stall = 0.8 * self._stall + 0.2 * max(0.0, dt - expected)
        self._last_tick_at = now
        # One growth sample spans at least GROWTH_NOISE of growth, or RATE_SECONDS: near the line ticks come
        # every 10 ms, and a loop's tick that moved less than the noise (a list's pointer array moved, a GC
        # pass) counted as "no growth" took the lead away for three ticks; a string-building loop at 600 MB/s
        # then crossed a line 30 MiB higher and reached the OOM killer under CI's load.
        since, start, vm_start, used_start, base_start = self._rate_anchor
        span = now - since if since else 0.0
        if not 0 < span < 5.0:
            self._rate_anchor = (now, committed, vm_data, in_use, base)
        else:
            delta = committed - start
            if delta > GROWTH_NOISE or span >= RATE_SECONDS or delta < -GROWTH_NOISE:
                self._rates = (*self._rates[1:], delta / span if delta > GROWTH_NOISE else 0.0)
                # While an extension module loads the fence lets VmData past the budget (IMPORT_ROOM): all memory it
                # touches is unseen. Not its reservations: `import numpy, pandas` under load (ticks 0.5 s late) had
                # a lead of ~150 MiB from OpenBLAS's untouched buffers and was stopped at 81 MiB of a 256 MiB group.
                unseen = in_use - used_start if self._importing else delta - max(0, vm_data - vm_start)
                if base is not None and base_start is not None:
                    unseen -= max(0, base_start - base)
                self._unseen_rates = (*self._unseen_rates[1:], unseen / span if unseen > GROWTH_NOISE else 0.0)
                self._rate_anchor = (now, committed, vm_data, in_use, base)
                self._rate_samples += 1
        reaction = self.settings.poll_interval + self._stall + DELIVERY_SECONDS
        self.reaction_seconds = reaction
        return interrupt_line(limit, margin, growth_lead(self._unseen_rates, reaction), fraction)

    def tick(self, now: float | None = None, reading: Reading | None = None, chores: bool = True) -> None:
        """Read, decide and act once: re-set the fence; interrupt a cell that crossed its line (watchdog).

        ``reading``: one the main thread took a moment ago at a cell's start (instead of reading again).
        ``chores=False`` (``_refence``: a cell's start, a thread's start) leaves the periodic ones (the budget's
        re-read, the children's scan, the OOM-kill counter) to the watchdog's next tick, due within its interval:
        they move no fence now, and the budget's re-read alone (0.2-0.7 ms) fell on a cell's start every 2 s.
        """
        now = time.monotonic() if now is None else now
        self.ticks += 1
        if chores and now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self.refresh()
        if chores and now >= self._next_children:
            self._next_children = now + CHILDREN_SECONDS
            self._children.adjust_existing()
        if chores and self._oom_meter is not None and now >= self._next_oom_check:
            self._next_oom_check = now + OOM_CHECK_SECONDS
            self._check_oom_kills(now)
        if reading is None:
            reading = self._meters.read()
        best = tightest(self._candidates, reading)
        if best is None:
            return
        cand, usage, headroom = best
        self._state = (cand, usage, headroom, reading)
        self._usage_grew, self._usage_prev = usage - self._usage_prev, usage  # for _over's reservations
        committed_best = tightest(self._candidates, reading, committed=True) or best
        ccand, committed, fence_headroom = committed_best
        if self._reserve is None and self._hold is None and not self._handling and self._reserve_wanted():
            with self._lock:
                if self._reserve is None and self._hold is None and not self._handling and self.enabled:
                    # At the first tick with room, not at the 2 s refresh: a killer cell run again frees its last
                    # run's memory only once it runs (`x = []`), and refilled it before the refresh came round:
                    # its second error then had no reserve and the kernel died formatting it (7 of 7 runs with a
                    # late watchdog; begin_failure's hold now also covers a failure with no reserve held).
                    self._retake_reserve_if_room(fence_headroom)
        limit = ccand.limit_bytes
        margin = self._margin(limit)
        fraction = self.settings.interrupt_fraction
        # Threads of the cell's own (beyond ipykernel's and ours) cannot be interrupted, nor can children
        # (a pool worker, a shell command) whose memory grows in our group beyond our own RSS: wider
        # margins for both (a pool worker at 800 MB/s reached the OOM killer with the narrow ones).
        threaded = self._cell_threads_run()
        if threaded and self._cell is not None:
            self._cell.threaded = True
        others = max(0, usage - reading.rss) if ccand.meter.startswith("cgroup:") else 0
        cell = self._cell
        foreign = cell is not None and others > cell.others_at_start + IDLE_GROWTH
        if threaded or foreign:
            margin, cap = threaded_margins(limit, margin, self.settings.reserve_bytes)
            fraction = min(fraction, cap)
        self._meters.forgive = not threaded
        unseen = 0  # freed heap the cell may still take again without VmData growing: no fence holds that growth
        widened = 0  # how much nearer the fence and the line came for it
        covered = 0  # ... or, where all of it fits, how much the fence leaves out for it instead
        retaken_from = None  # the forgiven untouched space now, while ``covered``: its fall is no lead for the line
        if cell is not None and cell.retouchable:
            base_now = self._meters.untouched_base or 0
            # Margins only once the cell grows into space forgiven before it started (below that space's size at
            # the start): filling its own allocation (`base * 2` near the limit, an `np.empty` forgiven while filled)
            # grows the same way but never below it, and must not be stopped.
            below = cell.base_at_start - base_now
            if below > GROWTH_NOISE and not cell.retaking:
                cell.retaking = sum(r > 0 for r in self._rates) >= 2
            unseen = cell.untaken(cell.retouchable, base_now)  # free at the start less what was taken
            # Retaken since the last tick at a rate that may take the rest before the next one: the fence and the
            # line come down by what that rate covers in two reaction times (at most what is left), at once, not
            # after the two ticks of growth ``retaking`` waits for: with the watchdog at 0.1 s a loop took 250 MiB
            # of a 384 MiB group back between two ticks.
            fell, span = min(cell.base_seen, cell.base_at_start) - base_now, now - cell.base_seen_at
            taking = fell > GROWTH_NOISE and 0 < span < 5.0
            pool = min(base_now, unseen + unseen // POOL_ERROR)
            fresh = None  # what is left to take, by a count asked at this tick
            alone = not (threaded or foreign)
            fits = (taking or cell.retaking) and alone and fence_headroom - pool >= margin
            if (taking or cell.retaking) and alone and not fits:
                # The start's count, less what was taken, with its error of an eighth: 918 MiB of freed heap "did
                # not fit" in a 1 GiB group until 712 MiB were taken back, and under load (ticks late, the lead
                # below ~300-500 MiB) a loop that fits was stopped at 470-700 MiB (2 of 7 kernels beside four CPU
                # burners; once in CI). malloc's count now, while it is being taken, has no eighth to allow for.
                fresh = retakable_now(base_now)
                if fresh is not None:
                    pool = fresh
                    fits = fence_headroom - pool >= margin
            if fits:
                # All that is left of it fits under the margin: the fence leaves it out, so retaking it and growing
                # to the fence stays under the margin, and its retaking is no lead for the line. A fast loop that
                # fits (4 MiB arrays into 820 MiB of freed heap that a thread's block kept from going back) was
                # stopped at 466 MiB of 1 GiB by the margins below, which are for a pool that does not fit.
                covered, retaken_from, extra = pool, base_now, 0
            else:
                extra = retouch_margin(limit, min(cell.retouchable, base_now), cell.retaking)
            if taking and not fits:
                # While it is being taken, what malloc called free at the start is no bound: a loop of 1.6 MB arrays
                # took 151 MiB back where malloc had said 138, and the tick that thought it done waited five
                # intervals. Its count at this tick is.
                unseen = base_now if fresh is None else pool
                extra = max(extra, min(unseen, int(fell / span * self.reaction_seconds * 2)))
            cell.base_seen, cell.base_seen_at = base_now, now
            if extra:
                widened = max(0, self._margin(limit) + extra - margin)
                margin += widened
        in_use = usage_of(reading, ccand.meter, committed)
        line = self._line(limit, margin, committed, reading.vm_data, now, fraction, in_use, retaken_from)
        self.line_bytes = line
        if cell is not None and not threaded:
            fence_headroom += self._settled_credit(limit, margin, fence_headroom, reading, now)
        with self._lock:
            if not self.enabled:
                return
            cell = self._cell
            level = cell_level(line + widened, limit, cell.start_usage) if cell is not None else line
            if widened:
                # Not "started above the line, so half of what is left" (a leak across cells): a line brought under
                # the cell's start by growth into freed heap stops it at once (it was let take 250 MiB more).
                level = min(level, line)
            if cell is not None and not cell.recursion and self._rates[-1] > 0 and now >= self._next_recursion_check:
                self._next_recursion_check = now + RECURSION_CHECK_SECONDS
                cell.recursion = self._main_recurses()
            if cell is not None and cell.recursion:
                level = min(level, recursion_level(limit, margin, cell.start_usage))
            # Heap freed before the cell that it may take again counts as already taken for the wait: that growth
            # moves no VmData, so no fence set at this tick holds it. More of it than the fence's margin and the
            # fence is no backstop at all (what it still lets through comes on top): every interval then. A loop
            # retook 132 MiB of a 384 MiB group and went on into fresh space the stale fence allowed, all before
            # a tick five intervals away (the OOM killer, 6 of 6 kernels with the watchdog at 0.1 s).
            self.interval_factor = 1 if unseen > self._margin(limit) else poll_factor(
                level, committed + unseen, limit, sustained_rate(self._rates), self.settings.poll_interval
            )
            if cell is not None:
                cell.level = level
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
                if not stuck and now >= self._next_stuck_check:
                    self._next_stuck_check = now + 0.5
                    stuck = self._thread_start_hangs(now, cell.no_room_seen)
                # Committed memory (in use plus taken-but-untouched) is judged, so a big allocation the fence
                # let through and that is being filled is not growth; the line is lowered by sustained growth.
                over = self._over(reading, committed_best, level, stuck, now)
                if committed >= level and cell.step_over is None:
                    self._note_step(cell, committed)
                if over and self._one_step_fits(cell, committed, limit - margin, threaded or foreign or stuck):
                    over = False
                if over and self._fill_fits(cell, reading.vm_data, committed, limit - margin, threaded or foreign or stuck):
                    over = False
                cell.vm_seen, cell.committed_seen = reading.vm_data, committed
                if over and self._ceiling is None and self._trim_first(now):
                    # malloc gave its cache of freed memory back to the OS: judge again, at once
                    reading, best, fence_headroom, over = self._judge_again(best, level, stuck, now)
                    if not threaded:
                        fence_headroom += self._settled_credit(limit, margin, fence_headroom, reading, now)
                    # Growth is measured from here on: the drop the trim made is no "tick without growth",
                    # which took the lead and the re-take margin away from a loop for three ticks.
                    self._rate_anchor = (
                        now, reading.committed(ccand.meter) or committed, reading.vm_data,
                        usage_of(reading, ccand.meter, committed), None,
                    )
                if over:
                    if self._ceiling is None and not cell.recursion and (threaded or not self._handling):
                        # (unwinding a recursion needs memory for every frame: no freeze for it; nor once
                        # the interrupt has reached a cell without threads of its own: nothing of it runs)
                        self._ceiling = reading.vm_data + TIGHT_SLACK
                        self._pending = self._evidence("watchdog", reading=reading, best=best)
                    # Another interrupt only for a cell that still grows (or is stuck): one unwinding 2.5 M
                    # frames of a recursion, or formatting their traceback, is over the line without growing,
                    # and each resend restarted that work (a 180 s livelock in a 384 MiB group).
                    if (
                        not self._handling
                        and now - self._sent_at >= RESEND_SECONDS
                        and now - self._raised_at >= UNWIND_SECONDS
                        and (cell.interrupts == 0 or stuck or sustained_rate(self._rates) > 0)
                    ):
                        self._interrupt_main(now)
                        if threaded:
                            # The cell's own threads would keep growing into the room its error path needs
                            # (libzmq aborted the kernel 3 times in 8): they stop with it.
                            self._stop_cell_threads(now, self._kernel_threads | cell.threads_at_start)
                if (
                    self._handling
                    and self._after_stop is not None
                    and committed >= level
                    and committed > self._after_stop + GROWTH_NOISE
                ):
                    # The main thread is stopped, memory still grows: the cell's threads. Stopped now, while
                    # there is room left under the fence for the kernel's own machinery.
                    self._stop_cell_threads(now, self._kernel_threads)
            else:
                base = self._idle_base if self._idle_base is not None else committed
                if committed >= line and committed > base + GROWTH_NOISE:
                    # growth above the line with no cell running: a thread left running by a cell
                    self._stop_cell_threads(now, self._kernel_threads)
                if committed >= line and committed > base + IDLE_GROWTH:
                    if self._ceiling is None and self._trim_first(now):
                        return
                    if self._ceiling is None:
                        # Memory grows with no cell running: a background thread. Interrupting the idle
                        # main thread would stop nothing, so growth is frozen instead: the thread's next
                        # allocation fails with MemoryError (in that thread), the kernel lives.
                        self._ceiling = reading.vm_data + TIGHT_SLACK
                        self._note_background(usage, cand)
                elif self._ceiling is not None and committed < line:
                    self._ceiling = None
            if self._stopping and now - self._stopping_at >= STOP_PENDING_SECONDS:
                threadstop.clear(self._stopping)
                self._stopping = []
            ceiling = self._hold if self._hold is not None else self._ceiling
            # Not growing (idle, or a cell still at its start, like `del x` after a killer): a little of the margin;
            # never while threads of a cell run (idle or not, they take memory unseen: the stress minute's OOM kill).
            # A cell whose error was shown is over but for its reply: a fence left at VmData after a stop at the fence
            # (its peak far above its start) gave libzmq nothing for the next request until the next tick, up to
            # 0.5 s away on a loaded machine ("FATAL ERROR: OUT OF MEMORY", SIGABRT: 8 of 54 kernels; 0 of 69 since).
            still = not threaded and (cell is None or cell.error_shown or cell.peak < cell.start_usage + LAST_ROOM)
            last_room = LAST_ROOM if still else 0
            if self._importing:
                fence_headroom += IMPORT_ROOM  # reservations; what an import touches, the watchdog sees
            alone = not (threaded or cell is None or cell.threaded or self._handling or ceiling is not None)
            if alone and cell is not None and cell.slack:
                # The main thread's loop only: a cell's threads have the wide margins, a thread about to start needs
                # room for its stack under the fence (leaving the slack out there hung the stress minute), and a
                # stopped cell's error path needs the room its hold hands over (a hold caps the fence, lifts nothing).
                fence_headroom -= self._slack_left(cell)
            fence_headroom -= covered
            self._fence.apply(self._fence.compute(reading.vm_data, fence_headroom, margin, ceiling, last_room))

    def _judge_again(
        self, best: tuple[Candidate, int, int], level: int, stuck: bool, now: float
    ) -> tuple[Reading, tuple[Candidate, int, int], int, bool]:
        """Return (reading, best, fence headroom, over) read afresh, once memory was given back (watchdog)."""
        reading = self._meters.read()
        best = tightest(self._candidates, reading) or best
        self._state = (*best, reading)
        committed_best = tightest(self._candidates, reading, committed=True) or best
        return reading, best, committed_best[2], self._over(reading, committed_best, level, stuck, now)

    def _over(
        self, reading: Reading, committed_best: tuple[Candidate, int, int], level: int, stuck: bool, now: float
    ) -> bool:
        """Return True when the running cell is over its level (watchdog): committed memory, looked at twice.

        The second look counts, of the untouched address space, only what was taken in the last
        SETTLED_SECONDS (an allocation in flight): what stayed untouched longer while the cell went on is a
        reservation (OpenBLAS takes ~116 MiB during `import sklearn` and touches it later). The fence keeps
        counting all of it (forgiven there too, duckdb's threads reached the OOM killer in the soak).
        """
        cand, committed, _headroom = committed_best
        if stuck:
            return True
        if committed < level:
            self._reserved_since = None
            return False
        if reading.untouched and cand.meter != "vmdata":
            in_use = committed - reading.untouched
            fresh = 0 if self._importing else self._meters.fresh_untouched(now)
            if in_use + fresh < level:
                self._reserved_since = None
                return False
            if in_use >= level or fresh <= RESERVATION_RATIO * max(0, self._usage_grew) + GROWTH_NOISE:
                return True
            # Only space taken just now, far more than what is in use grew by, puts the cell over: a loop's
            # next array is filled as fast as it is taken, a reservation is not (scipy's OpenBLAS buffers at
            # its first import inside a cell: 65 MiB taken while 1 MiB more came in use, 256 MiB group,
            # line 232, 168 MiB in use: the cell was stopped where stock completes). It gets SETTLED_SECONDS
            # to become one; the fence counts it meanwhile.
            if self._reserved_since is None:
                self._reserved_since = now
            return now - self._reserved_since >= SETTLED_SECONDS
        return True

    def _note_step(self, cell: CellState, committed: int) -> None:
        """Remember where the cell's committed memory first crossed its level, if one step took it there (watchdog).

        Not a loop: growth in each of the cell's last three growth samples (a step and the noise of its filling
        make two; the steps of cells before, each one allocation, are no loop).
        """
        own = self._rate_samples - cell.rate_mark
        if not (own >= len(self._rates) and sustained_rate(self._rates) > 0):
            cell.step_over = committed

    def _one_step_fits(self, cell: CellState, committed: int, fence_at: int, unseen: bool) -> bool:
        """Return True while a cell is over its level by one step that stopped, with room left (watchdog).

        One allocation the fence let through (``np.ones`` of 93-96% of a 1 GiB group) lands between the
        interrupt line and the fence: stopped once filled, it was a MemoryBudgetError where stock completes
        it. The line keeps ``THREAD_ROOM`` for the kernel's own threads below the fence against a loop's
        growth; a cell that stays within that step (filling it: untouched space forgiven while it is filled
        then shows as growth) and leaves them ``LAST_ROOM`` is let be. Not once the cell grows past the step
        (two ticks in a row), was interrupted, or runs threads or children that grow unseen (``unseen``).
        """
        if unseen or cell.interrupts or cell.recursion or cell.step_over is None:
            return False
        if fence_at - committed >= LAST_ROOM and committed <= cell.step_over + 2 * GROWTH_NOISE:
            cell.step_strikes = 0
            return True
        # Twice in a row: one reading taken while a fill runs counts the pages touched between its reads
        # twice (the fence's safe side), 30 MiB once at ~3 GB/s.
        cell.step_strikes += 1
        return cell.step_strikes < 2

    @staticmethod
    def _fill_fits(cell: CellState, vm_data: int, committed: int, fence_at: int, unseen: bool) -> bool:
        """Return True while a cell fills address space it took itself, and all it took fits (whoever ticks).

        A preallocated array filled piece by piece (``a = np.empty(n)``, then chunks written or read into it)
        grows in use at every tick like a loop, while VmData stands still: its untouched space is forgiven as
        a reservation while it is filled, and the growth lead then stopped it below the fence (900 MiB filled
        in 1-8 MiB chunks in a 1 GiB group: stopped at 921-960 MiB in 3 runs of 4; stock completes it; a slow
        ``np.ones`` on a loaded machine the same). Without growing VmData a cell can fill no more than it
        took: its committed memory at the start plus its VmData growth since (``reach``). Let be while VmData
        did not grow with it since the last tick, the cell is within that reach, and the reach leaves the
        kernel ``LAST_ROOM`` under the fence. A loop takes new space as it grows (judged by the line, at most a
        tick later); growth into heap freed before the cell (taken again unseen) goes past the reach.
        """
        if unseen or cell.interrupts or cell.recursion or not cell.vm_seen:
            return False
        grew = max(0, committed - cell.committed_seen)
        if vm_data - cell.vm_seen > grew // RESERVATION_RATIO + MiB:
            return False  # taking space as it grows: a loop's next allocation
        reach = cell.start_usage + max(0, vm_data - cell.vm_at_start)
        return committed <= reach + GROWTH_NOISE and reach <= fence_at - LAST_ROOM

    def _cell_threads_run(self) -> bool:
        """Return True while threads beyond the kernel's own (ipykernel's and the guard's) run: cells started them."""
        return running_threads() > self._baseline_threads

    def _slack_left(self, cell: CellState) -> int:
        """Return how much of the threads' heaps' slack the cell found at its start it has not taken yet (tick).

        The fence leaves it out. A heap of a thread's arena grows back into the size it once had (its writable
        ``mprotect`` size) without asking the kernel, so RLIMIT_DATA sees only what goes beyond; and a block the
        fence refuses the main thread is retried in such an arena (a dead thread's is first on glibc's free list).
        A loop of 8 MiB arrays took a dead thread's 47 MiB of slack past the fence line and reached the OOM killer
        (2 of 2 kernels in a 256 MiB group, watchdog at 0.5 s); a loop of 32 MiB arrays got one block half from 16
        MiB of slack, half from what the fence allowed: 0.8 MiB left of a 256 MiB group (the only one of nine such
        loops that started with slack; fence margin 16 MiB). With the fence that much lower, what falls back into
        the slack still ends under the line. Taken is what the forgiven untouched space fell by since the start
        (the slack is part of it); a fresh kernel has none, and neither had kernels after numpy and pandas cells.
        At most ``SLACK_FENCED``, and left out only while the main thread alone runs the cell (the tick says when).
        """
        return min(SLACK_FENCED, cell.untaken(cell.slack, self._meters.untouched_base or 0))

    def _settled_credit(self, limit: int, margin: int, fence_headroom: int, reading: Reading, now: float) -> int:
        """Return how much settled untouched space the fence stops counting, so a cell keeps ROOM_SHARE of its budget.

        Untouched space that stayed so for SETTLED_SECONDS while the cell went on is a reservation (scipy's
        OpenBLAS took 65 MiB of buffers at its first import inside a cell, 256 MiB group, 169 MiB in use);
        the fence counted it until FORGIVE_SECONDS of quiet, which left the rest of the import 2 MiB: it
        failed, and once the kernel died (03.11 of the handbook, ~45% of runs). Only what the cell needs to
        keep that room, never more than was reserved: filled later in one native call, at most that share
        can pass the fence unseen. Not with the cell's own threads (their arenas reuse pages unseen).
        """
        short = limit // ROOM_SHARE - (fence_headroom - margin)
        if short <= 0 or not reading.untouched:
            return 0
        settled = reading.untouched - self._meters.fresh_untouched(now)
        return max(0, min(settled, short))

    def _main_recurses(self) -> bool:
        """Return True when the main thread runs the same function thousands of frames deep (watchdog).

        Since 3.11 Python frames live on the heap, so a runaway recursion under a raised recursion limit
        is a memory loop; only asked while memory grows, every 0.2 s, and it looks at 2,000 frames at most.
        """
        frame = sys._current_frames().get(self.main_ident)  # type: ignore[arg-type]
        codes: list[Any] = []
        while frame is not None and len(codes) < RECURSION_FRAMES:
            codes.append(frame.f_code)
            frame = frame.f_back
        del frame
        return recurses(codes)

    def _thread_start_hangs(self, now: float, no_room_seen: bool) -> bool:
        """Return True when the main thread has waited over a second in ``Thread.start()`` for nothing (watchdog).

        CPython (3.11/3.12) waits forever in ``Thread.start()`` when the new thread ends before it signals that
        it started: a MemoryError at the fence, or an exception raised in it asynchronously. After the fence
        had no room in this cell, a second's wait is enough; otherwise only a thread that is gone counts (the
        four-thread stress minute hung so, 2 runs in ~40 under load, with room under the fence at every tick).
        The interrupt turns the hang into MemoryBudgetError.
        """
        frame = sys._current_frames().get(self.main_ident)  # type: ignore[arg-type]
        depth = 0
        while frame is not None and depth < 12 and frame.f_code is not _THREAD_START:
            frame = frame.f_back
            depth += 1
        starting = frame.f_locals.get("self") if frame is not None and frame.f_code is _THREAD_START else None
        del frame
        if starting is None:
            self._start_wait_since = None
            return False
        if self._start_wait_since is None:
            self._start_wait_since = now
        if now - self._start_wait_since < 1.0:
            return False
        ident = getattr(starting, "_ident", None)
        return no_room_seen or (ident is not None and ident not in sys._current_frames())

    def oom_kills(self) -> int | None:
        """Return the kernel's memory group's OOM-kill counter (any thread: one pread), None when unreadable."""
        try:
            return self._oom_meter.read() if self._oom_meter is not None else None
        except (OSError, ValueError):
            return None

    def _check_oom_kills(self, now: float) -> None:
        """Stop the running cell when the OOM killer just ended one of its children (watchdog).

        A pool worker growing at 800 MB/s can reach the group's limit between two ticks; the OOM killer
        then ends it (children volunteer), the kernel lives, and ``Pool.map`` waits forever for the task
        that died with it, as in a stock kernel. The counter moving is the evidence; the cell is
        interrupted only when a child this cell had is gone, so a kill elsewhere in a shared group (another
        kernel in the same container) never stops our cell.
        """
        kills = self.oom_kills()
        if kills is None:
            return
        before, self._oom_seen = self._oom_seen, kills
        if before is None or kills <= before or self._cell is None:
            return
        try:
            child = children.child_report()
        except Exception:
            child = None
        if not child or child.get("alive"):
            return
        with self._lock:
            if not self.enabled or self._cell is None or self._handling or self._sent:
                return
            evidence = self._evidence("watchdog")
            evidence["child_killed"] = True
            self._pending = evidence
            self._interrupt_main(now)

    def _trim_first(self, now: float, force: bool = False) -> bool:
        """Return True when it asked malloc to give freed memory back (at most once a second).

        glibc keeps freed memory of its arenas resident (threads that allocated and freed arrays leave
        hundreds of MB counted as used): before interrupting anyone for usage that is only malloc's cache,
        ``malloc_trim(0)`` returns it, and the next tick judges again.
        """
        if not force and now - self._trimmed_at < 1.0:
            return False
        self._trimmed_at = now
        # What malloc_trim() gives back (RSS down, VmData not) stays counted as untouched while the cell's
        # threads run: malloc hands those pages out again without VmData growing, i.e. without the fence
        # seeing it (forgetting them let a stress test of four threads reach the OOM).
        if self._cell_threads_run():
            self._meters.pin()
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

    def _stop_cell_threads(self, now: float, exclude: set[int] | frozenset[int]) -> None:
        """Raise ThreadMemoryError in the cells' threads that run Python now (watchdog, under the lock).

        Threads blocked in C (waiting on a lock, a queue, a socket) do not take it: ``clear`` withdraws it
        after STOP_PENDING_SECONDS, so only threads that ran meanwhile (the one growing among them) stop.
        """
        if now - self._stopping_at < RESEND_SECONDS:
            return
        idents = [t.ident for t in threadstop.cell_threads(exclude)]
        if not idents:
            return
        stopped = threadstop.stop(idents)
        self._stopping = sorted(set(self._stopping) | set(stopped))
        self._stopping_at = now

    def thread_stopped(self, thread_name: str) -> None:
        """A cell's thread ended with the guard's ThreadMemoryError (its excepthook): remember its name."""
        self.threads_stopped.append(thread_name)
        del self.threads_stopped[:-20]

    def _interrupt_main(self, now: float) -> None:
        import signal

        self._sent = True
        self._sent_at = now
        if self._cell is not None:
            self._cell.interrupts += 1
        signal.pthread_kill(self.main_ident, signal.SIGINT)  # type: ignore[arg-type]
        # duckdb converting a result (fetchnumpy, fetchdf) never looks at SIGINT, and with address space its
        # allocator kept from an earlier query it grows without VmData growing, unseen by the fence: a stock
        # kernel given that SIGINT was OOM-killed 375 ms later; duckdb's own interrupt() stops it.
        stop = self.native_stop
        if stop is not None:
            try:
                stop(self._cell.code if self._cell is not None else None)
            except BaseException:  # noqa: BLE001 - the watchdog must keep ticking
                pass

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
        """A cell starts on the main thread: the usage it starts from fixes how its line is judged."""
        imports.main_thread_loads_nothing(self)
        state = self._current() if not self.enabled else None
        if not self._first_cell_seen:
            # ipykernel starts some of its threads after the extension loads: the kernel's own threads are
            # those alive when the first cell starts; any more are the cells' (threaded margins).
            self._first_cell_seen = True
            self._baseline_threads = max(self._baseline_threads, running_threads())
            self._kernel_threads = threadstop.alive()
        # Untouched address space from earlier cells is forgotten at a cell's start: at once after a cell
        # that started no threads (it has ended: what it left untouched is a reservation; cells sent back to
        # back, as nbclient and "Run All" do, had import pandas' 125 MiB counted against the next cells and
        # `import matplotlib.pyplot` refused with 121 MiB of 256 in use); after one that did, once it has
        # stopped growing for FORGIVE_SECONDS (pages trimmed from its threads' arenas are taken again by the
        # next cell's threads without VmData growing: the stress minute's kernel died when they were
        # forgiven at once); for a second while threads of earlier cells still run (a thread left running by
        # an interrupted cell may still be taking it: the stress test hung without this).
        threads_left = self._cell_threads_run()
        if self._idle_noted:
            self._free_fresh_cells = FRESH_CELLS  # memory was frozen while no cell ran: deletes will follow
        quiet = 1.0 if threads_left else FORGIVE_SECONDS if self._last_threaded else 0.0
        try:
            reading = self._meters.rebase(quiet_seconds=quiet)
        except MemoryError:
            # The reading allocates (a buffer per file). Refused (seen after a killer cell run again with the
            # watchdog late: the guard's own pre_run_cell failed, a second traceback), the fence moves up by
            # what the last tick knew to be free, and the meters are read again.
            up = self._fence_up_without_reading()
            if up is not None:
                self._set_fence(up)
            reading = self._meters.rebase(quiet_seconds=quiet)
        best = tightest(self._candidates, reading, committed=True) or (state[:3] if state else None)
        # Half full at a cell's start: give malloc's cache of freed memory back first (a few ms), or arenas of threads that have ended keep it counted and refuse a cell that fits.
        now = time.monotonic()
        limit = best[0].limit_bytes if best else 0
        trim = best is not None and self._trim_at_start(best[1], limit, threads_left, now, reading.vm_data)
        if trim and self._trim_first(now, force=True):
            reading = self._meters.read()  # what is left once malloc's cache of freed memory is returned
            best = tightest(self._candidates, reading, committed=True) or best
        usage = best[1] if best else 0
        limit = best[0].limit_bytes if best else 0
        # Freed heap, handed back, may be taken again unseen by the fence only where much was forgiven (after
        # `import numpy` that is mostly OpenBLAS's buffers, not malloc's). How much malloc holds free is asked here,
        # as ``_malloc_free`` allows (cached for a quick run; the trim's check may just have asked), not at the
        # watchdog's first tick: that tick, ten intervals away, came after a loop had retaken 132 MiB of a 384 MiB
        # group and gone on into fresh space; knowing it now, the first tick comes at that growth's pace. The
        # threads' heaps' slack counts too (``heap_slack_bytes``: the main thread's own arena once the fence refused it).
        base = self._meters.untouched_base or 0
        retouch = slack = 0
        if limit and base >= SLACK_MIN:
            free, slack = self._malloc_free(now, reading.vm_data, max(RETAKE_MIN, limit // 16))
            if base > limit // 16:
                retouch = min(base, (free or 0) + slack)
                retouch = retouch if retouch >= RETAKE_MIN else 0
            slack = min(base, slack)
        with self._lock:
            level = cell_level(self._line_now(limit), limit, usage) if limit else 1 << 62
            self._release_cell_states()
            self._idle_noted = False
            self._next_recursion_check = 0.0  # the new cell's first growth is looked at at once
            self._cell = CellState(execution_count, usage, level, usage, time.monotonic(), code=code)
            self._cell.threads_at_start = threads_alive()
            self._cell.rate_mark = self._rate_samples
            self._cell.retouchable = retouch
            self._cell.slack = slack
            self._cell.base_at_start = self._cell.base_seen = self._meters.untouched_base or 0
            self._cell.base_seen_at = now
            self._cell.vm_at_start = self._cell.vm_seen = reading.vm_data
            self._cell.committed_seen = usage
            if best and best[0].meter.startswith("cgroup:"):
                plain = reading.meter(best[0].meter)
                self._cell.others_at_start = max(0, (plain or 0) - reading.rss)
        # The fence as of now, not as of the last tick (memory may just have been freed); the tick it runs also
        # takes a user's error reserve back as of now (the last cell's end saw a tick that may predate its `del`).
        self._refence(reading)
        watchdog = self._watchdog
        if watchdog is not None and self.interval_factor < watchdog.waiting_factor:
            # The watchdog's wait began while no cell ran (up to ten intervals); this cell may grow unseen by the
            # fence (heap freed before it) faster than that: its first tick comes at this cell's pace.
            watchdog.nudge()

    def _trim_at_start(self, usage: int, limit: int, threads_left: bool, now: float, vm_data: int) -> bool:
        """Return True when a cell should start with malloc's freed memory given back (main thread).

        From half the budget in use, always. From a quarter, when glibc holds a sixteenth of the budget free
        and no thread of an earlier cell runs: the ten-minute soak's last refusals (a 560 MiB array refused
        with 464-510 MiB of 1 GiB in use) came after a killer's variables were deleted into malloc's free
        lists; the refusal's own trim then gave ~200 MiB back. Not with threads of earlier cells running:
        pages a trim returns are taken again by threads without VmData growing (the stress test hung).
        How much glibc holds free is asked as ``_malloc_free`` says (not at every cell of a quick run).
        """
        if usage >= limit // 2:
            return True
        if threads_left or usage < limit // 4:
            return False
        threshold = max(RETAKE_MIN, limit // 16)
        free = self._malloc_free(now, vm_data, threshold)[0]  # the heaps' slack is no longer resident: no trim for it
        return free is not None and free >= threshold

    def _malloc_free(self, now: float, vm_data: int, moved: int) -> tuple[int | None, int]:
        """Return (the bytes glibc holds free, its threads' heaps' slack), asked at most once every FREE_ASK_SECONDS.

        Asked afresh the next FRESH_CELLS times after a memory error or a cell that took much, and once VmData grew
        by ``moved`` since the last answer (main thread, a cell's start).

        mallinfo2 walks every free chunk of every arena: 210 us a call on a heap fragmented by 200k small
        objects, at every cell of a quick run ("Run All", nbclient) half the guard's cost of a cell's start
        (bench_default_cost.py). Within a second of the last answer only a `del` can have made much more
        free, and what is deleted is what a cell took: after a memory error (the killer's variables), or after
        a cell that took a sixteenth of the budget (the trim's threshold), the next cells ask afresh: the
        soak deletes a killer's variables in one cell and starts the next cell at once. Heap a cell took and
        freed between two ticks (its peak unseen) still shows: freed heap below the top keeps VmData.
        """
        asked = self._free_asked
        if asked is not None and asked[0] == now:
            return asked[1], asked[2]  # asked already at this cell's start (the trim's question, then the retake's)
        if self._free_fresh_cells > 0:
            self._free_fresh_cells -= 1
        elif asked is not None and 0 <= now - asked[0] < FREE_ASK_SECONDS and vm_data < asked[3] + moved:
            return asked[1], asked[2]
        free, slack = malloc_free_bytes(), heap_slack_bytes() or 0
        self._free_asked = (now, free, slack, vm_data)
        return free, slack

    def cell_finished(self) -> None:
        """The cell is over: no interrupt may be sent from now on; every state that tightened the fence goes."""
        with self._lock:
            cell = self._cell
            self._last_threaded = cell is not None and cell.threaded
            self._cell = None
            tightened = self._ceiling is not None or self._hold is not None
            self._release_cell_states()
            try:
                self._idle_base = self._meters.read().committed(self._state[0].meter) if self._state else None
            except Exception:
                self._idle_base = None
            state = self._state
        if cell is not None and state is not None:
            took = max(cell.peak, self._idle_base or 0) - cell.start_usage
            if took >= max(RETAKE_MIN, state[0].limit_bytes // 16):
                self._free_fresh_cells = FRESH_CELLS  # what it took, deleted, may land in malloc's free lists
        if state is not None and self._idle_base is not None:
            if self._idle_base >= state[0].limit_bytes // 2:
                # A full kernel after the cell: give malloc's cache of freed memory back now, so the next
                # cell (and ipykernel's own threads) do not start at the fence.
                if self._trim_first(time.monotonic(), force=True):
                    try:
                        self._idle_base = self._meters.read().committed(state[0].meter)
                    except Exception:
                        pass
        with self._lock:
            if self._reserve is None and self.enabled:
                self._retake_reserve_if_room()
        if tightened:
            self._refence()  # not at the next tick: ipykernel sends the reply under the fence right now

    def _release_cell_states(self) -> None:
        """Drop every state a cell's trouble set (main thread, under the lock): none may outlive its cell.

        The freeze (``_ceiling``), the error path's hold, the pending evidence, the interrupt on its way,
        the no-room and Thread.start() timers: each tightens the fence or leads to an interrupt, so one
        left behind would refuse the next, innocent cell (issue: legitimate cells refused after killers).
        The last interrupt's times go too: "still unwinding, no resend" is about the cell that was
        interrupted, and carried over it kept the watchdog silent for the next cell's first two seconds
        (a string-building killer right after an interrupted one reached the OOM killer).
        """
        self._ceiling = None
        self._hold = None
        self._pending = None
        self._sent = False
        self._sent_at = 0.0
        self._raised_at = 0.0
        self._user_interrupt = False
        self._handling = False
        self._after_stop = None
        self._no_room_since = None
        self._start_wait_since = None

    @property
    def cell_running(self) -> bool:
        return self._cell is not None

    def note_recursion(self, depth: int, function: str, filename: str, line: int) -> None:
        """Remember how deep the recursion the guard just stopped went (signal handler, main thread)."""
        self._recursion = {"depth": depth, "function": function, "file": filename, "line": line}

    def interrupt_raised(self) -> None:
        """The signal handler raised the guard's interrupt in the cell: no resend while it unwinds."""
        self._raised_at = time.monotonic()

    def consume_interrupt(self) -> bool:
        """Return True (once) when a SIGINT that just arrived was sent by the guard."""
        sent, self._sent = self._sent, False
        return sent

    def note_user_interrupt(self) -> None:
        """A SIGINT that was not the guard's reached the running cell (signal handler, main thread)."""
        self._user_interrupt = True

    def stopped_a_library(self) -> bool:
        """Return True when the guard interrupted the running cell and the user did not (main thread).

        polars hooks SIGINT itself (signal_hook, chained before Python's handler): the guard's SIGINT aborts
        its query, which returns a bare ``KeyboardInterrupt`` of its own before the guard's handler can raise
        ``GuardInterrupt`` (that one then lands outside the cell and is dropped as late). Such an interrupt is
        the guard's stop, to be explained as memory, unless the user interrupted too.
        """
        cell = self._cell
        return cell is not None and cell.interrupts > 0 and not self._user_interrupt

    def begin_failure(self, trigger: str, exc: BaseException | None) -> dict[str, Any]:
        """Return the evidence of this failure; free the reserve and hold the fence so the error can be shown.

        The hold is an absolute fence (VmData after the release plus the reserve's size, or less: what is really
        left less LAST_ROOM), set once: room for the error path that does not move with VmData, so it cannot creep.
        """
        with self._lock:
            # Order matters: _handling first, so no tick can take the reserve back once it is given up
            # (a tick retakes it only under this lock, and never while _handling or _hold is set).
            self._handling = True
            held = self._reserve is not None
            self._reserve = None  # the error path's memory, given back now
            self._free_fresh_cells = FRESH_CELLS  # the failed cell's variables get deleted next: malloc is asked
            try:
                reading = self._meters.read()
            except Exception:
                reading = None
            if reading is None:
                self._hold_without_reading(held)
            else:
                room = max(self.settings.error_reserve_bytes, ERROR_ROOM)
                best = tightest(self._candidates, reading, committed=True)
                if best is not None:
                    # No more than is really left, less LAST_ROOM; but that much even when no reserve was held
                    # (none taken again since the last failure): a fence left at VmData here failed the
                    # explanation, and then ipykernel's reply, which ended the kernel.
                    room = min(room, max(0, best[2] - LAST_ROOM))
                self._hold = reading.vm_data + room
                self._after_stop = reading.committed(self._state[0].meter) if self._state else None
                if self._cell_threads_run():  # they would take it first
                    self._set_fence(min(self._fence.current or INFINITY, self._hold))
                else:
                    self._set_fence(self._hold)
            pending = self._pending
            self._pending = None
        evidence = self._evidence(trigger, reading=reading, exc=exc)
        recursion, self._recursion = self._recursion, None
        if recursion is not None:
            evidence["recursion_depth"] = recursion["depth"]
            evidence["recursion_function"] = recursion["function"]
        if pending is not None:
            evidence["watchdog_fired"] = True
            evidence["usage_at_interrupt_bytes"] = pending.get("usage_bytes")
            if pending.get("background"):
                evidence["background"] = True
            if pending.get("child_killed"):
                evidence["child_killed"] = True
            if pending.get("thread"):
                # A thread died at the fence and the cell was stopped for it: the fence refused.
                evidence["thread"] = pending["thread"]
                evidence["trigger"] = "fence"
                evidence["exception"] = pending.get("exception")
                evidence["requested_bytes"] = pending.get("requested_bytes")
        self.interventions += 1
        self.last_failure = evidence
        return evidence

    def _hold_without_reading(self, reserve_freed: bool) -> None:
        """Hold the fence above where it stands by what is known to be free, when the reading itself was
        refused at the fence (main thread, under the lock).

        The meters' read allocates (a buffer per file): at a fence with no room it fails, and without a hold
        the error path then had none either; the kernel died formatting the error (exit code 1, a killer cell
        run again with the watchdog late). The fence was set ``margin`` below the budget, and the reserve just
        freed is room too, so that much less LAST_ROOM is there to take.
        """
        hold = self._fence_up_without_reading(self.settings.error_reserve_bytes if reserve_freed else 0)
        if hold is None:
            return
        self._hold = hold
        if self._cell_threads_run():
            return  # they would take it first (as with a reading)
        self._set_fence(self._hold)

    def _set_fence(self, value: int) -> None:
        """Move the fence to ``value``; where setrlimit refuses, it stays where it stands (a cell's start and
        the error path: the guard never fails a cell over its own fence)."""
        try:
            self._fence.apply(value)
        except (ValueError, OSError):
            pass

    def _fence_up_without_reading(self, extra: int = 0) -> int | None:
        """Return the fence moved up by what is known to be free without a reading (the margin less LAST_ROOM,
        plus ``extra`` just given back), or None with no fence or budget to move it from.

        The last tick set the fence ``margin`` below the budget; whatever was taken since was taken under it.
        """
        fence, state = self._fence.current, self._state
        if fence is None or state is None:
            return None
        return fence + max(0, self._margin(state[0].limit_bytes) - LAST_ROOM) + extra

    def end_failure(self) -> None:
        """The error has been shown: let the fence follow usage again, at once.

        The freeze goes too unless the cell's own threads still run: it was there to stop growth until the
        interrupt arrived, and kept until the next cell it left ipykernel a few MB for the reply and the
        idle status, so libzmq aborted the kernel after a stopped append loop (its arrays still held).
        """
        with self._lock:
            self._hold = None
            if self._cell is not None:
                self._cell.error_shown = True
            if self._ceiling is not None and not self._cell_threads_run():
                self._ceiling = None
        self._refence()

    def import_started(self) -> None:
        """A module starts loading (the first of nested loads, any thread): let its reservations pass the fence now.

        Not at the next tick: ``import numpy`` maps OpenBLAS's buffers in its first milliseconds.
        """
        if not self.enabled:
            return
        self._importing = True
        self._refence()

    def import_ended(self) -> None:
        """The last load ended: what it left untouched is a reservation, forgiven (without the cell's threads)."""
        if not self._importing:
            return
        self._importing = False
        if not self.enabled:
            return
        reading = None
        if not self._cell_threads_run():
            try:
                reading = self._meters.rebase(quiet_seconds=0.0)
            except Exception:
                reading = None
        self._refence(reading)

    def before_thread_start(self) -> None:
        """Re-set the fence now if it leaves less than a new thread needs (any thread that starts threads).

        Between two ticks the fence stays where it was while each new thread maps its stack: the thread that
        took the last of it could not allocate in its own start-up, died before saying it had started, and
        ``Thread.start()`` waited for it forever (1 run in 7 of 300 threads started at once).
        """
        cell = self._cell
        if cell is not None:
            cell.threaded = True
        self._room_for_thread()

    def thread_start_refused(self) -> bool | None:
        """Return whether a thread start that failed may be tried again: True once the fence has room for its
        stack again (re-set now, the new threads' stacks credited), False when memory is short, None when
        the fence was not why (it had room: a pids limit, say). Any thread that starts threads calls it.
        """
        return self._room_for_thread()

    def _room_for_thread(self) -> bool | None:
        """Return None when the fence leaves a new thread room (or there is none); else re-set it now, the
        stacks just mapped credited rather than counted as taken, and return whether it leaves room since."""
        if not self.enabled or self._fence.current is None:
            return None
        need = self._meters.thread_stack_bytes + THREAD_START_ROOM
        if self._fence.current - self._meters.vm_data() >= need:
            return None
        self._meters.recount_threads()
        self._refence()
        fence = self._fence.current
        return fence is not None and fence - self._meters.vm_data() >= need

    def _refence(self, reading: Reading | None = None) -> None:
        """Re-set the fence from a fresh reading (or one just taken) now, not at the next tick (main thread)."""
        if self.enabled:
            try:
                self.tick(reading=reading, chores=False)
            except Exception:
                pass

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
        usage = best[1] if best else None
        committed = reading.committed(cand.meter) if cand is not None else None
        return {
            "trigger": trigger,
            "requested_bytes": requested_bytes(exc),
            "budget_bytes": limit,
            "budget_source": cand.source if cand else "unknown",
            "budget_kind": cand.kind if cand else None,
            "usage_bytes": usage,
            "unfilled_bytes": committed - usage if committed is not None and usage is not None and committed > usage else 0,
            "rss_bytes": reading.rss,
            "working_set_bytes": ws,
            "vm_data_bytes": reading.vm_data,
            "fence_bytes": self._fence.current,
            "interrupt_at_bytes": cell.level if cell else (self._line_now(limit) if limit else None),
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
        """Hold ``error_reserve_bytes`` of resident memory, freed when a cell fails so the error can be shown.

        Off by default (0): the error path's room (``ERROR_ROOM``) is kept in the fence's margin as address
        space, and ``begin_failure``'s hold hands it over (never the last ``LAST_ROOM``). The 16 MiB held here
        until 2026-11-30 was the same room, resident: 16 MiB of the kernel's RSS more (issue 11). It was kept
        resident because, with it as room in the margins, a growth loop that overshot its line aborted the
        kernel in one run of three; the main stack was then miscounted by 8-14 MiB (1dd131f), which took the
        margin's room away. Since, 110 stopped killers in 1 GiB and 256 MiB groups with 4 KiB of reserve and the
        old margins (watchdog at 10 ms and 0.5 s) all showed their error; in 384 MiB the old 8 MiB margin
        alone let one fast killer of four reach the OOM killer, hence the margin's ``ERROR_ROOM``. Held, when a
        user sets one, only in a memory cgroup with a limit, where what the kernel frees is the kernel's alone.
        """
        n = self.settings.error_reserve_bytes
        if self._reserve is not None or not self._reserve_wanted():
            return
        try:
            self._reserve = _resident_block(n)
        except (MemoryError, OSError, ValueError):
            self._reserve = None

    def _reserve_wanted(self) -> bool:
        """Return whether an error reserve is held at all: only in a memory cgroup with a limit.

        Under the machine's RAM alone what it frees is anyone's (and the OOM killer is the whole machine's);
        the kernel's RSS stays within a few MiB of stock's, as issue 11 asks.
        """
        return self.settings.error_reserve_bytes > 0 and any(c.kind == "cgroup" for c in self._candidates)

    def _retake_reserve_if_room(self, committed_headroom: int | None = None) -> None:
        """Take the error reserve again when the fence keeps its margin and another reserve's room beside it
        (under the lock, never while ``_handling`` or ``_hold`` is set).

        Judged on committed memory too, as the fence is: taken on the group's room alone, right after a stopped
        killer whose untouched space still counts, it could take the fence's own last room. ``committed_headroom``:
        the tick's own, from the reading in ``_state`` (not worked out a second time).
        """
        state = self._state
        if state is None:
            self._take_reserve()
            return
        cand, _usage, headroom, reading = state
        if committed_headroom is None:
            committed = tightest(self._candidates, reading, committed=True)
            committed_headroom = committed[2] if committed is not None else headroom
        headroom = min(headroom, committed_headroom)
        if headroom > self._margin(cand.limit_bytes) + 2 * self.settings.error_reserve_bytes:
            self._take_reserve()


_THREAD_START = threading.Thread.start.__code__


def _resident_block(size: int) -> mmap.mmap:
    """Return ``size`` bytes of private memory, every page touched, that dropping gives back to the group at once.

    A mapping of its own, not malloc's: glibc raises its mmap threshold to the size of a mapped block once
    that block is freed, so the second reserve (a bytearray) came from the heap, and freeing it in the error
    path gave the group nothing back. A killer stopped at the fence then left ipykernel no room to send its
    reply, and the kernel died (3 runs of 3 with the watchdog ticking every 0.5 s).
    """
    block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # counted in VmData, like the heap
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1  # resident now: what it gives back is memory, not address space
    return block


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
