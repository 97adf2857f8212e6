"""The Finding record and its kinds, as the advisor's modules name them (the record lives in ``records``)."""

from __future__ import annotations

from ..records.finding import (  # noqa: F401  (re-exported: the checks write ``F.BIG_READ``)
    BIG_ALLOCATION,
    BIG_READ,
    GROWS_IN_LOOP,
    HELD_AFTER_USE,
    KEPT_BY_OUT,
    KINDS,
    MEMMAP_DISK,
    MISSING_FILE,
    SYNTAX_ERROR,
    UNBOUNDED_GROWTH,
    Finding,
)

__all__ = ["KINDS", "Finding"]
