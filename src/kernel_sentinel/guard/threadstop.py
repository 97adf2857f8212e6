"""Stopping the cells' own threads: a MemoryBudgetError raised inside a thread that keeps growing.

The watchdog's interrupt stops the main thread only. A thread a cell started (``threading.Thread``, a
pool's worker) can keep allocating after its cell was stopped, until the fence refuses it: by then there
is no room left under the fence and libzmq, which aborts when an allocation fails, takes the kernel down
(FACTS.md; 3 runs in 8 of the thread-growth killer under CI-like load). CPython can raise an exception
in another thread at its next bytecode (``PyThreadState_SetAsyncExc``), which stops such a thread with
room to spare. A thread blocked in C (a lock, a queue, a socket) runs no bytecode: the exception stays
pending, and ``clear`` withdraws it, so an idle pool worker is not hit later for what another did.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Container

from ..errors import MemoryBudgetError

OWN_PREFIXES = ("kernel-sentinel-", "sentinel-")  # the sentinel's own threads are never stopped
STACK_FRAMES = 200  # how deep a thread's stack is searched for a cell's frame


class ThreadMemoryError(MemoryBudgetError):
    """Raised inside a cell's thread that kept growing after the kernel's memory ran short."""

    def __init__(self, *args: object) -> None:
        super().__init__(
            *(
                args
                or (
                    "kernel-sentinel stopped this thread: memory kept growing after its cell was stopped "
                    "(or while no cell was running), and the kernel would have run out of memory.",
                )
            )
        )


def alive() -> set[int]:
    """Return the idents of the threads alive now (the kernel's own at its first cell; those before a cell)."""
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def cell_threads(exclude: set[int] | frozenset[int]) -> list[threading.Thread]:
    """Return the threads running a cell's code now, but not those in ``exclude`` nor the sentinel's own.

    Only a thread with a frame of a cell on its stack (the function the cell gave ``Thread`` or a pool) is
    the cell's work: a library's own threads (multiprocessing.Pool's handlers, a pool's idle workers) are
    left alone; stopping Pool's result handler broke the pool the guard was stopping a cell for.
    """
    cells = _cell_filenames()
    if not cells:
        return []
    frames = sys._current_frames()
    main = threading.main_thread()
    out = []
    for t in threading.enumerate():
        if t is main or t.ident is None or t.ident in exclude or isinstance(t, threading._DummyThread):
            continue
        if t.name.startswith(OWN_PREFIXES):
            continue
        frame = frames.get(t.ident)
        depth = 0
        while frame is not None and depth < STACK_FRAMES:
            if frame.f_code.co_filename in cells:
                out.append(t)
                break
            frame = frame.f_back
            depth += 1
    return out


def _cell_filenames() -> Container[str]:
    """Return the file names IPython compiled cells under (``/tmp/ipykernel_<pid>/<hash>.py``): none without it."""
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip.compile._filename_map if ip is not None else {}
    except Exception:
        return {}


def stop(idents: list[int]) -> list[int]:
    """Return the idents in which ThreadMemoryError is now pending (raised at each one's next bytecode)."""
    done = []
    for ident in idents:
        if _set_async_exc(ident, ThreadMemoryError) == 1:
            done.append(ident)
    return done


def clear(idents: list[int]) -> None:
    """Withdraw the pending exception of threads that have not run since ``stop`` (blocked, so not growing)."""
    for ident in idents:
        _set_async_exc(ident, None)


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> int:
    """Return how many threads CPython's ``PyThreadState_SetAsyncExc`` changed (0: the thread is gone)."""
    try:
        arg = ctypes.py_object(exc) if exc is not None else None  # None: NULL, which clears
        return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), arg))
    except Exception:
        return 0
