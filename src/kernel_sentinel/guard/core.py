"""The guard: keeps the kernel under its memory budget with a fence (RLIMIT_DATA) and a watchdog thread.

Split by job: ``policy`` (pure: limits, fence, interrupt line), ``meters`` (one cheap reading per tick),
``controller`` (the ``Guard``: reads, decides, acts; its opening table says which thread touches what).
This module keeps the names other modules and tests import from ``guard.core``.
"""

from __future__ import annotations

from .controller import CellState, Guard, get_guard
from .meters import Meters
from .policy import (
    Candidate,
    Reading,
    candidates_from,
    cell_level,
    fence_margin,
    growth_lead,
    interrupt_line,
    poll_factor,
    requested_bytes,
    tightest,
)

__all__ = [
    "Candidate",
    "CellState",
    "Guard",
    "Meters",
    "Reading",
    "candidates_from",
    "cell_level",
    "fence_margin",
    "get_guard",
    "growth_lead",
    "interrupt_line",
    "poll_factor",
    "requested_bytes",
    "tightest",
]
