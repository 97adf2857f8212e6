"""The Finding record: one line of code that may kill the kernel, with the numbers and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Kinds, stable strings (tools match on them). See advise/__init__.py for what each one means.
SYNTAX_ERROR = "syntax_error"
BIG_ALLOCATION = "big_allocation"
BIG_READ = "big_read"
MISSING_FILE = "missing_file"
MEMMAP_DISK = "memmap_exceeds_disk"
GROWS_IN_LOOP = "grows_in_loop"
UNBOUNDED_GROWTH = "unbounded_growth"
KEPT_BY_OUT = "kept_by_out"
HELD_AFTER_USE = "held_after_use"

KINDS = (
    SYNTAX_ERROR,
    BIG_ALLOCATION,
    BIG_READ,
    MISSING_FILE,
    MEMMAP_DISK,
    GROWS_IN_LOOP,
    UNBOUNDED_GROWTH,
    KEPT_BY_OUT,
    HELD_AFTER_USE,
)


@dataclass
class Finding:
    """One kernel killer: where it is, how big it is, what it was compared with, and what to write instead.

    ``cell`` is the index of the cell in the notebook's list of cells (0-based, markdown cells counted, as
    nbformat numbers them), or None for a .py file; ``line`` is 1-based within that cell (or file).
    ``severity`` is "error" (will not fit / will crash) or "warning" (takes a large part of the budget).
    """

    path: str
    cell: int | None
    line: int
    kind: str
    message: str
    remedy: str
    estimate_bytes: int | None = None
    budget_bytes: int | None = None
    severity: str = "error"
    basis: str | None = None  # how the estimate was made, in words
    code: str | None = None  # the source line the finding is about
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific numbers (chunksize, rows, ...)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form promised in DESIGN.md (extra keys beside the required ones)."""
        return asdict(self)

    @property
    def where(self) -> str:
        """Return ``path:cell 3:line 2`` (or ``path:12`` for .py files) for humans."""
        if self.cell is None:
            return f"{self.path}:{self.line}"
        return f"{self.path} cell {self.cell} line {self.line}"
