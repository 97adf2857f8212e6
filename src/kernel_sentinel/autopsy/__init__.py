"""The autopsy: every kernel death explained (flight recorder, supervisor, classification, store).

Public API: ``death_report(kernel_id=None, *, wait=0.0)`` returns the ``why`` JSON dict of DESIGN.md for
that kernel's newest death (newest of all with None), waiting up to ``wait`` seconds for it to be recorded.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # typing costs ~10 ms to import: not on the launcher's way to forking the kernel
if TYPE_CHECKING:
    from typing import Any

__all__ = ["death_report"]


def death_report(kernel_id: str | None = None, *, wait: float = 0.0) -> dict[str, Any] | None:
    """Return the why-report of the newest death (of ``kernel_id``), or None when none is recorded in time.

    Sweeps first, so that a death nobody witnessed (a SIGKILLed supervisor, a kernel without one) is found
    too. Never raises for a missing or unreadable store: that is "no report".
    """
    from ..store import Store, StoreError, home_dir
    from .sweep import sweep

    home = home_dir()
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            sweep(home, kernel_id)
        except Exception:
            pass
        try:
            with Store(home / "store.db", create=False) as store:
                row = store.death(kernel_id)
        except StoreError:
            row = None
        if row is not None:
            return {**row["report"], "death_id": row["id"], "shown": row["shown_at"] is not None}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
