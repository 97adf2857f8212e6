"""The guard's meters: one consistent, cheap ``Reading`` of the process and its cgroups per watchdog tick.

Reads through ``kernel_sentinel.memory.linux`` (the one per-tick reader, shared with the runner's
sampler) and adds what only the guard needs: untouched address space since the cell started (less the
other threads' stacks), and a bounded credit for the cgroup counters' lag after our own frees.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import deque
from typing import Any

from ..memory.linux import PAGE, GroupMeter, StatmMeter, ThreadCounter, pread
from .policy import MiB, Reading
from .reclaim import trim_window

GAP_NOISE = 4 * MiB  # untouched address space moving by less than this is not "someone allocating"
THREADS_SECONDS = 0.5  # how often the thread count (for the stacks' credit) is re-read
FORGIVE_SECONDS = 0.25  # address space left untouched this long is a reservation, not an allocation in flight
SETTLED_SECONDS = 0.1  # ... or this long, when it alone would make the watchdog interrupt a cell


def _thread_stack_size() -> int:
    """Return the stack glibc gives a new thread: RLIMIT_STACK's soft limit, 8 MiB when unlimited or unread."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    except (ValueError, OSError):
        return 8 * MiB
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 8 * MiB  # glibc's default for an unlimited stack is architecture-specific; 8 MiB is common
    return min(int(soft), 64 * MiB)


class Meters:
    """The guard's per-tick reading: statm and the budget's cgroups through ``memory.linux``'s meters.

    Read by the watchdog's tick and by the main thread (cell start and end, the error path): ``read`` and
    ``rebase`` take the meters' own lock, since each reading moves the untouched base and the lag credits.
    """

    def __init__(self) -> None:
        self._statm_meter = StatmMeter()
        self._statm_fd = self._statm_meter.fd
        self._read_lock = threading.Lock()  # read() updates the base, the gap and the lag credits
        self._thread_counter = ThreadCounter()
        self._status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        self._groups: dict[str, GroupMeter] = {}
        self._lag: dict[str, tuple[int, int, int, float]] = {}  # dir -> (rss, ws, credit, since)
        self.stack_bytes = 0  # statm's data counts the main stack too; RLIMIT_DATA does not
        self.thread_stack_bytes = _thread_stack_size()
        self._threads_count = 1
        self._threads_next = 0.0
        self._vm_data_at_count = 0  # VmData when the threads were last counted
        self.untouched_base: int | None = None  # the gap that counts as no one's allocation in flight
        self.pinned: int | None = None  # gap before a malloc_trim(): pages it returned stay counted
        self.forgive = True  # False while the cell's own threads run: their arenas reuse pages unseen
        self._last_gap = 0
        self._last_vm_data = 0
        self._last_read_at = 0.0
        self.gap_rose_at = 0.0  # when untouched address space last grew (someone is allocating now)
        self._gaps: deque[tuple[float, int]] = deque()  # (when, gap) of the readings of the last SETTLED_SECONDS

    def main_stack_bytes(self, process: Any = None) -> int:
        """Return the main thread's stack (VmStk), which statm's data field counts and RLIMIT_DATA does not.

        ``process``: the ``ProcessMemory`` of a snapshot just read (the guard's 2 s refresh reads
        /proc/self/status there): its ``stack_bytes`` is VmStk itself, and the file is not read a second time.
        Read as such, not as statm's data less /proc/self/status's VmData read a moment apart: a thread's stack
        mapped or unmapped, or a killer's growth, between the two made it 8-14 MiB (the stack is 132 KiB), and
        every fence was that much tighter than the guard believed: an error path held 16 MiB of room had 2-8
        MiB, and the explanation failed, then the reply (1 run in 10 of a killer run again, watchdog late).
        """
        stack = getattr(process, "stack_bytes", None)
        if stack is not None:
            return stack
        raw = pread(self._status_fd, 4096)
        start = raw.index(b"VmStk:") + 6
        return int(raw[start : raw.index(b"kB", start)]) * 1024

    def watch(self, directories: list[str], version: int) -> None:
        """Read these cgroup directories from now on (closing those no longer needed)."""
        for d in list(self._groups):
            if d not in directories:
                self._groups.pop(d).close()
        for d in directories:
            if d in self._groups:
                continue
            try:
                self._groups[d] = GroupMeter(d, version)
            except OSError:
                continue

    def _statm(self, now: float) -> tuple[int, int, int]:
        """Return (RSS, VmData, untouched gap) from one read of statm (``now``: the reading's monotonic time).

        gap = VmData - resident anonymous memory - the stacks of the other threads: a thread reserves its
        whole stack (RLIMIT_STACK, 8 MiB) as data address space and touches a few KB of it, so without the
        credit every thread ipykernel, BLAS or OpenMP starts would shrink the fence by 8 MiB (an import of
        scikit-learn in a 256 MiB group then hung: its OpenMP threads could not start).
        """
        # StatmMeter.read() and the thread count's clock inlined: this runs twice a tick, and in a kernel busy in
        # a cell each Python call of a tick costs several times what it costs warm (caches the cell evicted).
        fields = pread(self._statm_fd, 256).split()
        rss = int(fields[1]) * PAGE
        vm_data = int(fields[5]) * PAGE - self.stack_bytes
        if vm_data < 0:
            vm_data = 0
        stack = self.thread_stack_bytes
        if abs(vm_data - self._vm_data_at_count) >= stack:
            # Address space moved by a stack or more since the threads were counted: count again now, or a
            # burst of new threads (150 in one cell) looks like 1.2 GB taken and the watchdog stops the cell.
            self._threads_next = 0.0
        threads = self._threads_count if now < self._threads_next else self._threads(vm_data, now)
        stacks = (threads - 1) * stack if threads > 1 else 0
        # Never below 0: the stacks of threads that just ended, still credited, made it -2.2 GB; the untouched
        # base followed, and once the threads were counted again 2.3 GB looked freshly taken (a cell stopped).
        gap = vm_data - (rss - int(fields[2]) * PAGE) - stacks  # RSS - file/shmem = resident anonymous
        return rss, vm_data, gap if gap > 0 else 0

    def _threads(self, vm_data: int, now: float) -> int:
        """Return the number of threads of this process (``ThreadCounter``: /proc/self/stat's 20th field), 1 when
        unreadable; ``vm_data`` is VmData now, remembered with the count.

        Re-read at most every ``THREADS_SECONDS`` while VmData has not moved by a stack since: the count once cost
        more than the rest of a tick (/proc/self/stat; a statx of /proc/self/task now), and a stale count only
        leaves a new thread's stack counted as untouched a little longer (the safe side).
        """
        if now < self._threads_next:
            return self._threads_count
        self._threads_next = now + THREADS_SECONDS
        self._vm_data_at_count = vm_data
        try:
            self._threads_count = self._thread_counter.read()
        except (OSError, ValueError, IndexError):
            self._threads_count = 1
        return self._threads_count

    def vm_data(self) -> int:
        """Return VmData now (one statm read, no cgroup file): what RLIMIT_DATA, the fence, is checked against."""
        return max(0, self._statm_meter.read()[1] - self.stack_bytes)

    def recount_threads(self) -> None:
        """Make the next reading count the threads afresh (a burst of new threads' stacks, credited at once)."""
        self._threads_next = 0.0

    def read(self) -> Reading:
        """Return one reading (any thread; serialised by the meters' own lock)."""
        with self._read_lock:
            return self._read()

    def _read(self, quiet_seconds: float | None = None) -> Reading:
        """Return one reading whose VmData, untouched space and working sets are safe to combine; ``quiet_seconds``
        (``rebase``): forget the untouched space in the same reading unless it grew that recently.

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
        # One clock read for the statm reads and the lag credits (each a Python call more in a cold tick); the
        # untouched gap's own times below are taken after the group's files, as before.
        start = time.monotonic()
        rss, vm_data, gap = self._statm(start)
        rss_low = rss
        groups: dict[str, tuple[int, int]] = {}
        for d, group in self._groups.items():
            try:
                usage, ws = group.read()  # ws: in use, i.e. usage minus the cache an OOM would drop first
            except (OSError, ValueError):
                continue
            rss_before = rss_low
            try:
                rss_after, vm_after, gap_after = self._statm(start)
                # the safe side of each (plain comparisons: min/max calls are a tick's most frequent calls)
                if vm_after < vm_data:
                    vm_data = vm_after
                if gap_after > gap:
                    gap = gap_after
                if rss_after < rss_low:
                    rss_low = rss_after
            except (OSError, ValueError, IndexError):
                pass
            ws -= self._lag_credit(d, rss_before, rss_low, ws, start)
            groups[d] = (usage, ws if ws > 0 else 0)
        now = time.monotonic()
        last_gap = self._last_gap
        # The part of the gap's rise that VmData did not make is pages handed back (RSS down, VmData not) when our
        # own malloc_trim() (glibc's, Arrow's) ran since the last reading. Nobody is taking memory there while only
        # the main thread runs; with the cell's threads running it is their arenas giving back what they take again
        # unseen, and it counts as before (forgotten sooner, it let a growing thread kill the kernel in CI). Not
        # without a trim: an array unmapped and a fresh one mapped between two readings look the same, and the
        # fresh one is an allocation in flight (``reclaim.trim_window``).
        returned = 0
        if self.forgive:
            trim_start, trim_end = trim_window()
            if trim_start <= now and trim_end >= self._last_read_at:
                grew = vm_data - self._last_vm_data
                returned = gap - last_gap - (grew if grew > 0 else 0)
                if returned < 0:
                    returned = 0
        if gap - returned > last_gap + GAP_NOISE:
            self.gap_rose_at = now
        self._last_gap = gap
        self._last_vm_data = vm_data
        self._last_read_at = now
        gaps = self._gaps
        gaps.append((now, gap))
        while len(gaps) > 1 and gaps[1][0] <= now - SETTLED_SECONDS:
            gaps.popleft()  # the newest reading at least SETTLED_SECONDS old is kept
        self.untouched_base = self._base(gap, now, returned)
        if quiet_seconds is not None and (quiet_seconds <= 0 or now - self.gap_rose_at >= quiet_seconds):
            self.pinned = None
            self.untouched_base = gap  # all of it forgiven: what a second read would have set
        return Reading(vm_data, rss, groups, gap - self.untouched_base)

    def _base(self, gap: int, now: float, returned: int = 0) -> int:
        """Return the gap that is no one's allocation in flight: today's once nothing took more for a while.

        Untouched address space counts against the fence while something is taking it: ``np.empty`` of
        most of the headroom, twice in two ticks (or two threads), must not pass the fence both times
        before it is touched; and pages a thread's malloc arena gave back (``MADV_DONTNEED``: RSS down,
        VmData not) are taken again without VmData growing, unseen by any fence. Space that stays untouched
        while nothing allocates for FORGIVE_SECONDS is a reservation (BLAS buffers, arenas): counting it for good
        made scipy's OpenBLAS retry malloc forever inside ``import scipy`` in a 256 MiB group. Pages
        malloc_trim() returned stay counted (``pin``) while the cell's own threads run, until they are taken
        again: those threads reuse them unseen by any fence; a single thread's reuse shows in its usage,
        which the watchdog sees (a pin kept after an append loop's ``del`` refused the next small cells).
        For the same reason, without the cell's threads, pages our own trim handed back (``returned``) are
        forgiven at once rather than after FORGIVE_SECONDS: the guard's own trim at a cell's start, after an
        append loop's ``del``, raised the gap by 780 MiB and refused the 150 MiB cell that followed.
        """
        base = self.untouched_base
        quiet = self.forgive and now - self.gap_rose_at >= FORGIVE_SECONDS
        if base is None or gap < base or quiet:
            base = gap  # freed or touched below the base (it follows down), or quiet: forgiven
        elif self.forgive and returned:
            base = min(gap, base + returned)
        if self.pinned is not None:
            if gap <= self.pinned or self.forgive:
                self.pinned = None  # the returned pages were taken again (or freed): nothing pinned is left
            else:
                base = min(base, self.pinned)
        return base

    def fresh_untouched(self, now: float) -> int:
        """Return the part of the untouched space taken in the last SETTLED_SECONDS (watchdog's second look).

        Before the watchdog interrupts a cell for committed memory, only an allocation in flight still counts:
        what stayed untouched longer while the cell went on is a reservation (OpenBLAS takes ~97 MiB at
        `import numpy` and ~116 MiB more at `import sklearn`, and touches it later), and a fill of older space
        runs in one C call no interrupt can stop. All of it counts while the cell's threads run (their arenas
        reuse pages unseen), with pages pinned by a malloc_trim(), or with no reading that old yet. The base,
        and so the fence, is left as it is.
        """
        with self._read_lock:
            base = self.untouched_base
            untouched = max(0, self._last_gap - base) if base is not None else 0
            if not self.forgive or self.pinned is not None or base is None:
                return untouched
            then = None
            for t, gap in self._gaps:
                if t > now - SETTLED_SECONDS:
                    break
                then = gap
            if then is None:
                return untouched
            return min(untouched, max(0, self._last_gap - max(base, then)))

    def pin(self) -> None:
        """Keep today's gap as the base until the cell ends: called just before malloc_trim()."""
        with self._read_lock:
            self.pinned = self._last_gap if self.pinned is None else min(self.pinned, self._last_gap)

    @property
    def last_gap(self) -> int:
        return self._last_gap

    def rebase(self, quiet_seconds: float = 1.0) -> Reading:
        """Forget untouched address space taken so far (at a cell's start), unless it is still growing; return
        the reading, as it stands once forgotten (one read: the files cost ~50 us each at every cell's start).

        Drops the pin of malloc_trim()'s pages and the last second's window. But while something allocates
        untouched memory right now (a thread left running by an interrupted cell), forgetting it would let
        that thread touch it all past the budget.
        """
        # Forgiven within the reading (one lock hold): the reading is built once, where ``dataclasses.replace`` of
        # it built a second (~3 us warm, several times that at a cell's start, cold)
        with self._read_lock:
            return self._read(quiet_seconds)

    def _lag_credit(self, directory: str, rss_before: int, rss_low: int, ws: int, now: float) -> int:
        """Return how much of the group's working set is memory we freed that it has not uncharged yet.

        The group's counters lag our own frees (a 700 MB ``del`` showed in RSS at once, in
        memory.usage_in_bytes only some readings later); without this the fence stays shut right after
        the user freed memory. Only what our own RSS dropped counts, for at most a second, and the credit
        shrinks as the group's counter catches up, so nobody else's growth can hide behind it; it is never
        more than the working set exceeds our lowest RSS (the lag itself, as far as it is visible). The drop
        is measured from the lowest RSS of the previous reading (read after its working set too) to the
        RSS read before this working set: a free that the previous working set already showed is no lag.
        """
        prev = self._lag.get(directory)
        credit, since = 0, 0.0
        if prev is not None:
            prev_rss, prev_ws, credit, since = prev
            if credit and now - since > 1.0:
                credit = 0
            ws_drop = prev_ws - ws if prev_ws > ws else 0
            credit = credit - ws_drop if credit > ws_drop else 0
            rss_drop = prev_rss - rss_before
            if rss_drop > GAP_NOISE and rss_drop > ws_drop:
                credit += rss_drop - ws_drop
                since = now
        # A lag shows as a working set above our RSS; once the counter has caught up (while new growth kept
        # the working set from dropping) no credit is left, or it would raise the fence over real usage.
        lag = ws - rss_low if ws > rss_low else 0
        if credit > lag:
            credit = lag
        self._lag[directory] = (rss_low, ws, credit, since)
        return credit

    def close(self) -> None:
        for group in self._groups.values():
            group.close()
        self._groups.clear()
        self._statm_meter.close()
        self._thread_counter.close()
        try:
            os.close(self._status_fd)
        except OSError:
            pass
