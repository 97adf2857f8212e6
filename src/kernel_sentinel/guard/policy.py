"""The guard's pure policy: which limits apply, how much room is left, where the fence and the interrupt go.

Numbers in, numbers out: no I/O, no clock, no threads. The meters (``meters.py``) produce a ``Reading``;
the controller (``controller.py``) asks these functions what to do with it.

- The fence (RLIMIT_DATA) = VmData + (budget - committed - ``fence_margin``): one allocation bigger than
  what is left fails with MemoryError. Committed = memory in use (page cache the kernel drops before an
  OOM kill is not in use) plus address space taken in this cell and not yet touched, less thread stacks.
- The interrupt line = budget - ``fence_margin`` - ``THREAD_ROOM`` - ``growth_lead``: a loop growing fast
  where the fence cannot see it (freed heap taken again, a reservation filled) is stopped earlier; one that
  takes new address space as it grows meets the fence however late the watchdog comes, and may use nearly
  all of the budget, as may a slow one; one big allocation that fits is never taken for a runaway loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .fence import INFINITY

if TYPE_CHECKING:
    from ..memory import MemorySnapshot

MiB = 1 << 20
UNSEEN_ROOM = 8 * MiB  # what moves a group's usage without VmData between two readings (page tables, sockets)
ERROR_ROOM = 16 * MiB  # what a failure's error path is given (begin_failure's hold): a traceback, the reply, a `del`
MIN_MARGIN = UNSEEN_ROOM + ERROR_ROOM  # the fence's least distance from the budget
THREAD_ROOM = 16 * MiB  # between the interrupt line and the fence: two thread stacks and libzmq's buffers


@dataclass(frozen=True)
class Candidate:
    """One limit the kernel must stay under, and the meter its usage is read from."""

    limit_bytes: int
    meter: str  # "cgroup:<directory>" | "rss" | "vmdata"
    source: str  # shown to the user: "cgroup v1 /x", "system RAM", "KERNEL_SENTINEL_MEMORY_LIMIT", ...
    kind: str  # "cgroup" | "system RAM" | "configured" | "rlimit"


@dataclass(frozen=True)
class Reading:
    """One fast reading: the process's VmData and RSS, and usage/in-use bytes of the cgroups watched."""

    vm_data: int
    rss: int
    cgroups: dict[str, tuple[int, int]] = field(default_factory=dict)  # directory -> (usage, in use)
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


def fence_margin(limit: int, reserve: int) -> int:
    """Return the fence's distance below the budget: about 1.5% of it, at least 24 MiB, at most ``reserve``.

    What the fence cannot see moves the group's usage without VmData (page tables, socket buffers, the
    cgroup counters' lag after a free): a few MB per tick, not a fixed tenth of the budget. And a cell the
    fence stops needs room to show its error, reply and run a `del`: ``ERROR_ROOM``, kept here as address
    space (it was a resident 16 MiB reserve until 2026-11-30: the same room, 16 MiB of RSS more; margins of
    8 MiB and no reserve let a 384 MiB group reach the OOM killer in 1 of 4 runs with the watchdog late).
    Every byte kept here is a byte the user cannot use, and a stock kernel uses nearly all of its group (FACTS.md).
    """
    return max(0, min(reserve, max(MIN_MARGIN, limit // 64)))


def threaded_margins(limit: int, margin: int, reserve: int) -> tuple[int, float]:
    """Return (fence margin, interrupt fraction) while threads the watchdog cannot interrupt run in the cell.

    The interrupt stops only the main thread: worker threads keep allocating and freeing (their arenas
    give pages back and take them again unseen by RLIMIT_DATA) until the fence refuses them, so the fence
    keeps the old distance (6% of the budget, at most ``reserve``) and the line stays at 90%: a random
    four-thread stress test reached the OOM killer with the single-threaded margins.
    """
    return max(margin, min(reserve, int(limit * 0.06))), 0.9


def retouch_margin(limit: int, retouchable: int, growing: bool) -> int:
    """Return the extra distance fence and line keep while a cell grows with freed heap it may take again.

    Pages malloc holds free and handed back (a deleted list of arrays, ``malloc_trim``'d) are taken again
    without VmData growing: the fence does not see that growth, only the watchdog does, and under load its
    tick comes late. A string-building loop after ``del parts`` (1 GB of such pages) reached the OOM
    killer with its fence 59 MB away. The margin is what may be retaken, at most 6% of the budget (the
    threaded margin), and only once ``growing`` (the controller: the cell grew in two of the last three ticks
    into space forgiven before it started): a single allocation that fits, or its filling, is not touched.
    """
    if not growing or retouchable <= 0:
        return 0
    return min(retouchable, int(limit * 0.06))


def growth_lead(rates: tuple[float, ...], reaction_seconds: float) -> int:
    """Return how far below the fence the interrupt must come: sustained growth times the reaction time, twice.

    ``rates`` are the growth (bytes/s) over the last ticks of the committed usage the fence does not see
    (the controller passes what grew beyond VmData's growth), each 0 when its tick moved less than the
    meters' noise; their minimum is the sustained rate: one big step (an allocation the
    fence already allowed, then filled) is not a trend and must not make the watchdog stop a cell that
    fits, while a loop grows at every tick. Twice the measured reaction time (tick interval, GIL stalls,
    signal delivery) covers a tick that comes late.
    """
    sustained = max(0.0, min(rates))
    return int(sustained * reaction_seconds * 2)


def sustained_rate(rates: tuple[float, ...]) -> float:
    """Return the growth rate every one of the last ticks kept up (0 when any of them did not grow)."""
    return max(0.0, min(rates))


def interrupt_line(limit: int, margin: int, lead: int, fraction: float = 1.0) -> int:
    """Return the usage at which a growing cell is interrupted: below the fence by the growth lead and room
    for the kernel's own threads, and never above ``fraction`` of the budget when the user set one.

    ``THREAD_ROOM`` keeps the fence from being met by gradual growth before the interrupt: at the fence a
    new thread's stack (8 MiB of address space) is refused, and libzmq aborts when its IO thread's
    allocation fails (FACTS.md), so the kernel's own machinery must still have room when the cell stops.
    """
    line = limit - margin - THREAD_ROOM - lead
    if fraction < 1.0:
        line = min(line, int(limit * fraction))
    return max(0, line)


def cell_level(line: int, limit: int, start_usage: int) -> int:
    """Return the usage at which the running cell is interrupted, given where it started.

    The line, unless the cell started above it already (a leak across cells): then half of what is left
    above its start, so ``del x`` in a full kernel still runs, but growth does not.
    """
    if start_usage < line:
        return line
    return start_usage + max(8 * MiB, (limit - start_usage) // 2)


def recursion_level(limit: int, margin: int, start_usage: int) -> int:
    """Return where a runaway recursion is interrupted: when it holds a quarter of what the cell had left.

    Unwinding needs memory for every frame it passes (a frame object and a traceback entry, about 1.5x
    what the frame itself took), so stopping a recursion at the usual line leaves no room to unwind:
    CPython then aborts ("Cannot recover from MemoryErrors while normalizing exceptions"); at 40% a
    512 MiB group still ran out while unwinding.
    """
    room = max(0, limit - margin - start_usage)
    return start_usage + room // 4


FAST_GROWTH = 16 << 30  # bytes/s: faster than a cell's threads fault pages in (one thread: 1-4 GB/s)
MAX_POLL_FACTOR = 50  # the longest wait far below a big budget: 0.5 s at the default 10 ms


def poll_factor(level: int, usage: int, limit: int, rate: float = 0.0, interval: float = 0.01) -> int:
    """Return how many poll intervals the watchdog may wait before its next reading.

    Each wake-up costs the watchdog 0.2-0.7 ms of CPU on a busy machine (cold caches, GIL hand-off),
    whatever it then reads. Far below the line nothing can cross it in one longer interval (even
    4 GB/s of allocation moves 400 MB in 100 ms, under half of a 1 GiB budget), so it wakes up to 10x
    less often there; the fence, re-set at every reading, still stops any single allocation too big
    for the budget. A sustained ``rate`` that would cover half the distance in the longer wait keeps it short.

    Further away than a budget's half in absolute terms (a machine's RAM, a big group), it waits longer still,
    up to ``MAX_POLL_FACTOR``, as long as growth at ``FAST_GROWTH`` would cover at most half the distance in
    that wait. Under 1 GiB this never exceeds the 10x above; with 22 GB left of a machine's 24 GiB it is 50x
    (the watchdog's wake-ups during the cost bench's cells, 0.5% of the kernel's CPU, were ten a second).
    """
    distance = level - usage
    if distance > limit * 0.5:
        factor = 10
        if interval > 0:
            factor = max(factor, min(MAX_POLL_FACTOR, int(distance / (2 * FAST_GROWTH * interval))))
    elif distance > limit * 0.3:
        factor = 5
    elif distance > limit * 0.15:
        factor = 2
    else:
        return 1
    while factor > 1 and rate * interval * factor * 2 > distance:
        factor //= 2
    return max(1, factor)


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
