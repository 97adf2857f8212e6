"""The fence: a soft RLIMIT_DATA that makes one allocation too big for the budget fail with MemoryError.

RLIMIT_DATA caps the process's data address space (VmData). Allocations that would cross it fail with
ENOMEM, which numpy, pandas, ctypes and CPython turn into ``MemoryError`` while the process stays healthy
(FACTS.md). A fixed limit is wrong: VmData counts untouched address space and does not shrink after
every free, so the fence is recomputed every watchdog tick as

    fence = VmData + (headroom - margin)        headroom = budget - usage (e.g. the cgroup's working set)

i.e. "you may take as much more address space as the budget still has room for". There is no fixed floor
such as "always allow VmData + 8 MB": a floor lets a fast loop walk past the budget one floor per tick
("creeping"). The lowest fence is VmData itself (no growth at all) and that stays true however often it
is recomputed. One exception, for a kernel that is not growing (between cells, or a cell that has not
grown since it started): it may take ``last_room`` of what the margin keeps, never more than leaves
``last_room`` of the budget free, so ipykernel can send the reply of a cell the fence stopped and the next
cell can ``del`` what filled the budget (a fence at VmData failed a `del x` cell after a killer: "while
explaining: MemoryError"). The hard limit is never touched (a lowered hard limit cannot be raised again),
and the user's own soft limit, when there was one, is never exceeded.
"""

from __future__ import annotations

import resource
import threading

INFINITY = resource.RLIM_INFINITY
_RAISE_STEP = 1 << 20  # raising by less than this is not worth a syscall; lowering always is
LAST_ROOM = 4 << 20  # a reply, a traceback, a `del` cell: what a kernel that is not growing may take of the margin


def fence_limit(
    vm_data: int,
    headroom: int,
    margin: int,
    *,
    original_soft: int = INFINITY,
    hard: int = INFINITY,
    ceiling: int | None = None,
    last_room: int = 0,
) -> int:
    """Return the RLIMIT_DATA soft limit for this moment: VmData plus the room left under the budget.

    ``ceiling`` is an absolute cap set once (the watchdog's "tight" fence, the error path's hold); it never
    moves with VmData, which is what keeps it from creeping. Never above the user's own soft limit or the
    hard limit, never below VmData (below it every allocation would fail without stopping more growth).
    """
    limit = vm_data + max(0, headroom - margin, min(last_room, headroom - last_room))
    if ceiling is not None:
        limit = min(limit, max(ceiling, 0))
    if original_soft != INFINITY:
        limit = min(limit, original_soft)
    if hard != INFINITY:
        limit = min(limit, hard)
    return max(limit, 0)


class Fence:
    """Owns this process's RLIMIT_DATA soft limit while the guard is on; ``restore()`` gives it back."""

    def __init__(self) -> None:
        self.original = resource.getrlimit(resource.RLIMIT_DATA)  # (soft, hard) as the user had them
        self.current: int | None = None  # the soft limit we set last; None while not applied
        self._lock = threading.Lock()

    @property
    def original_soft(self) -> int:
        return self.original[0]

    @property
    def hard(self) -> int:
        return resource.getrlimit(resource.RLIMIT_DATA)[1]

    def compute(
        self, vm_data: int, headroom: int, margin: int, ceiling: int | None = None, last_room: int = 0
    ) -> int:
        """Return the fence for these figures, bounded by the user's own limits."""
        return fence_limit(
            vm_data,
            headroom,
            margin,
            original_soft=self.original[0],
            hard=self.original[1],
            ceiling=ceiling,
            last_room=last_room,
        )

    def apply(self, soft: int) -> int:
        """Set the soft limit to ``soft`` (lowering at once, raising in steps of 1 MiB); return what is set."""
        with self._lock:
            cur = self.current
            if cur is not None and cur <= soft < cur + _RAISE_STEP:
                return cur
            hard = self.original[1]
            soft = min(soft, hard) if hard != INFINITY else soft
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
            self.current = soft
            return soft

    def restore(self) -> None:
        """Give the user's original soft limit back (the hard limit was never changed)."""
        with self._lock:
            if self.current is None:
                return
            soft, hard = self.original
            try:
                resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
            except (ValueError, OSError):
                # Only possible if someone lowered the hard limit meanwhile: keep the highest soft allowed.
                now_hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
                resource.setrlimit(resource.RLIMIT_DATA, (now_hard, now_hard))
            self.current = None
