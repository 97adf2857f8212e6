"""May a thread start whose stack the fence refused? Re-fence at once and retry, or say it was memory.

A new thread takes its whole stack (RLIMIT_STACK, 8 MiB) as address space under RLIMIT_DATA and touches a
few KB of it. The meters credit the stacks of running threads, but the fence moves only at the next tick:
a cell starting 150 threads at once (1.2 GB of stacks) met it in a 1 GiB group where a stock kernel starts
300, and the RuntimeError ("can't start new thread") broke IPython's formatter before libzmq aborted the
kernel with no room left. ``threading``'s start function is wrapped: before a start, a fence within a stack
(and a little more) of VmData is re-set from a fresh reading (the new stacks credited), and a refused start
re-fences and tries again; when the memory really is short the start fails with a
MemoryError, which the guard explains as the budget's; when the fence was not why (a pids limit), the
RuntimeError is left as it was.
"""

from __future__ import annotations

import threading
from typing import Any

ATTEMPTS = 8  # re-fences per start: each lets ~(budget left) / (stack size) more threads start
_NAMES = ("_start_joinable_thread", "_start_new_thread")  # Python 3.13+, then 3.11-3.12


def install(guard: Any) -> bool:
    """Wrap ``threading``'s start function for ``guard``; return False where this Python has none we know."""
    for name in _NAMES:
        start = getattr(threading, name, None)
        if start is None:
            continue
        if getattr(start, "_kernel_sentinel", False):
            return True
        wrapped = _wrap(start, guard)
        setattr(threading, name, wrapped)
        return True
    return False


def uninstall() -> None:
    """Put ``threading``'s own start function back."""
    for name in _NAMES:
        start = getattr(threading, name, None)
        if getattr(start, "_kernel_sentinel", False):
            setattr(threading, name, start.__wrapped__)  # type: ignore[union-attr]


def _wrap(start: Any, guard: Any) -> Any:
    def start_thread(*args: Any, **kwargs: Any) -> Any:
        try:
            guard.before_thread_start()
        except Exception:
            pass
        for _ in range(ATTEMPTS):
            try:
                return start(*args, **kwargs)
            except RuntimeError as exc:
                if "can't start new thread" not in str(exc):
                    raise
                try:
                    verdict = guard.thread_start_refused()
                except Exception:  # the guard must never be what breaks a thread start
                    verdict = None
                if verdict is None:
                    raise
                if verdict is False:
                    raise MemoryError(
                        "can't start new thread: its stack does not fit in what is left of the memory budget"
                    ) from exc
        return start(*args, **kwargs)

    start_thread._kernel_sentinel = True  # type: ignore[attr-defined]
    start_thread.__wrapped__ = start  # type: ignore[attr-defined]
    return start_thread
