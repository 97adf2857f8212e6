"""Inside the kernel: every MemoryBudgetError the guard raises is stored as a memory error (a death avoided).

These rows are the one count of memory errors: ``kernel-sentinel fleet``, the server's REST answer
(``memory_errors``) and its ``kernel_sentinel_memory_errors_total`` all read them.

A ``post_run_cell`` hook looks at the cell's error; when it is the guard's ``MemoryBudgetError`` it stores
the guard's evidence (sizes and budget, never variable values) with the cell's code, on a daemon thread
(started at load, fed through a queue) so that the kernel answers at once whatever the store or the shared
database is doing. It never raises.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

_HOOKED: dict[int, Any] = {}


def load(ip: Any) -> None:
    """Start recording memory errors in this shell (idempotent)."""
    if id(ip) in _HOOKED:
        return

    def post_run_cell(result: Any) -> None:
        try:
            from ..errors import MemoryBudgetError

            err = getattr(result, "error_in_exec", None)
            if isinstance(err, MemoryBudgetError):
                info = getattr(result, "info", None)
                record = memory_error_from(err, getattr(info, "raw_cell", None), getattr(result, "execution_count", None))
                pending.put(record)  # no Thread.start() here: right after a memory error it can hang for good
        except Exception:  # a hook that raises is unregistered by IPython; recording is never worth that
            pass

    # One writer thread, started now while memory is plentiful (cost stream: a thread started in this hook
    # after a MemoryBudgetError hung the kernel in Thread.start(), tests/test_guard_with_checkpoints.py).
    pending: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def drain() -> None:
        while True:
            record = pending.get()
            try:
                _store(record)
            except Exception:
                pass

    threading.Thread(target=drain, name="kernel-sentinel-memory-error", daemon=True).start()
    ip.events.register("post_run_cell", post_run_cell)
    _HOOKED[id(ip)] = post_run_cell


def unload(ip: Any) -> None:
    """Stop recording memory errors in this shell."""
    hook = _HOOKED.pop(id(ip), None)
    if hook is not None:
        try:
            ip.events.unregister("post_run_cell", hook)
        except ValueError:
            pass


def memory_error_from(err: BaseException, code: str | None, execution_count: int | None) -> dict[str, Any]:
    """Return the record of one MemoryBudgetError: kernel, time, sizes from the guard's evidence, the cell."""
    evidence = getattr(err, "evidence", None) or {}
    return {
        "kernel_id": _kernel_id(),
        "at": time.time(),
        "summary": str(err).splitlines()[0][:500] if str(err) else "memory budget exhausted",
        "requested_bytes": evidence.get("requested_bytes"),
        "budget_bytes": evidence.get("budget_bytes"),
        "usage_bytes": evidence.get("usage_at_interrupt_bytes") or evidence.get("usage_bytes"),
        "trigger": evidence.get("trigger"),
        "execution_count": execution_count,
        "code": code,  # user, host, server and notebook: the store's identity() from the kernel's environment
    }


def _kernel_id() -> str:
    """Return this kernel's id by the one rule (``identity``): the server counts its errors by it."""
    try:
        from ..identity import kernel_identity

        return kernel_identity()[0]
    except Exception:
        return f"pid-{os.getpid()}"


def _store(record: dict[str, Any]) -> None:
    try:
        from ..store import Store

        with Store() as store:
            store.add_memory_error(record)
    except Exception:  # the error was shown to the user already; a record lost here costs only a statistic
        pass
