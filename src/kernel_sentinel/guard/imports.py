"""Is a module being loaded right now? Libraries reserve address space while they load, and never touch most of it.

OpenBLAS maps a 32 MiB buffer per BLAS thread (one per CPU, up to 64) when numpy or scipy loads it: ~83 MiB
of VmData on two CPUs at ``import numpy``, ~93 MiB more at the first ``import scipy.linalg``; ~2 GiB on a
64-CPU host. Untouched, that is address space, not memory: a stock kernel in a 256 MiB group imports scipy
with 200 MiB in use. The fence (RLIMIT_DATA) cannot tell such a reservation from ``np.empty``; refused, the
loader's ``mmap`` fails, and OpenBLAS retries it forever holding the GIL (the kernel hung; the watchdog, a
Python thread, never ran again), or the import fails half-way (SIGSEGV, SystemError, ImportError).

So while an extension module loads (importlib's ``_load_unlocked`` of a shared library: its ``dlopen`` runs
the libraries' constructors), the guard lets VmData grow past the room the budget has
(``Guard.import_started``); what stays untouched from it is forgiven when the outermost such load ends
(``Guard.import_ended``). Memory a load really touches still counts: the watchdog sees it, as in any cell.
A Python module's code runs under the fence as before, and only real loads pass here (a module already
in ``sys.modules`` costs nothing).
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
from typing import Any

_BOOTSTRAP = "_frozen_importlib"  # the importlib the interpreter's import statement calls into
_NAME = "_load_unlocked"  # Python 3.10-3.13: _find_and_load_unlocked -> _load_unlocked(spec), a module global
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES) or (".so",)
_state = threading.local()  # per thread: ``inside`` while the guard's own hook runs (its imports pass through)


class _Depth:
    """How many loads run in each thread (any thread may import; the lock guards the counts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, int] = {}

    def enter(self) -> bool:
        """Count a load of this thread; return True when it is the only one running (the first of all threads)."""
        ident = threading.get_ident()
        with self.lock:
            first = not self.by_thread
            self.by_thread[ident] = self.by_thread.get(ident, 0) + 1
        return first

    def leave(self) -> bool:
        """Count a load of this thread as ended; return True when no load runs any more, in any thread."""
        ident = threading.get_ident()
        with self.lock:
            left = self.by_thread.get(ident, 0) - 1
            if left > 0:
                self.by_thread[ident] = left
            else:
                self.by_thread.pop(ident, None)
            return not self.by_thread

    def forget(self, ident: int) -> bool:
        """Drop the loads counted for thread ``ident``; return True when that ended the last load running."""
        with self.lock:
            had = self.by_thread.pop(ident, None) is not None
            return had and not self.by_thread


_depth = _Depth()


def install(guard: Any, loaded: Any = None) -> bool:
    """Wrap importlib's module load for ``guard``; return False where this Python has none we know.

    ``loaded(name)`` is called after each extension module's load (whichever thread imported it): the
    extension learns of duckdb's exception classes in the cell that imports duckdb, not a cell later.
    """
    bootstrap = sys.modules.get(_BOOTSTRAP)
    load = getattr(bootstrap, _NAME, None)
    if load is None:
        return False
    if getattr(load, "_kernel_sentinel", False):
        return True
    setattr(bootstrap, _NAME, _wrap(load, guard, loaded))
    return True


def uninstall() -> None:
    """Put importlib's own load back."""
    bootstrap = sys.modules.get(_BOOTSTRAP)
    load = getattr(bootstrap, _NAME, None)
    original = getattr(load, "_kernel_sentinel_original", None)
    if original is not None:
        setattr(bootstrap, _NAME, original)


def _wrap(load: Any, guard: Any, loaded: Any = None) -> Any:
    def _load_unlocked(spec: Any) -> Any:
        if getattr(_state, "inside", False) or not _native(spec):
            return load(spec)  # (the guard's own work below imported something: no recursion)
        first = _depth.enter()
        try:
            if first:
                _notify(guard.import_started)
            module = load(spec)
        finally:
            if _depth.leave():
                _notify(guard.import_ended)
        if loaded is not None:
            _notify(lambda: loaded(getattr(spec, "name", "")))
        return module

    _load_unlocked._kernel_sentinel = True  # type: ignore[attr-defined]
    _load_unlocked._kernel_sentinel_original = load  # type: ignore[attr-defined]
    return _load_unlocked


def main_thread_loads_nothing(guard: Any) -> None:
    """End, at a cell's start (main thread), a load of the main thread that is still counted: none can run then.

    The guard's interrupt (a KeyboardInterrupt raised between two bytecodes) can land between a load's count and
    its ``try``, or in its ``finally`` before the count goes down: the load then counted for good, and the fence
    kept the room it gives a load (``IMPORT_ROOM``, 4 GiB) for the rest of the kernel's life.
    """
    if _depth.forget(threading.get_ident()):
        _notify(guard.import_ended)


def _native(spec: Any) -> bool:
    """Return True for an extension module (a shared library the load ``dlopen``s, with its constructors).

    Only those: a Python module's own code runs under the fence as any cell does (a user's module that
    builds a 10 GB array at import must still get a MemoryError, not the OOM killer).
    """
    origin = getattr(spec, "origin", None)
    return isinstance(origin, str) and origin.endswith(_SUFFIXES)


def _notify(hook: Any) -> None:
    """Call the guard's hook; whatever it does (or fails to do) must not fail the user's import."""
    _state.inside = True
    try:
        hook()
    except Exception:
        pass
    finally:
        _state.inside = False
