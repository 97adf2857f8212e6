"""The finding record: one line of code that may kill the kernel, the advisor's output (``check --json``).

Producers: ``advise`` (static checks, and live in a kernel). Consumers: ``check``, ``%sentinel check``,
the guard's pre-run check, the Lab extension. ``to_dict`` is DESIGN.md's list item, every field written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Record, described, required

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
class Finding(Record):
    """One kernel killer: where it is, how big it is, what it was compared with, and what to write instead.

    ``cell`` is the index of the cell in the notebook's list of cells (0-based, markdown cells counted, as
    nbformat numbers them), or None for a .py file; ``line`` is 1-based within that cell (or file).
    ``severity`` is "error" (will not fit / will crash) or "warning" (takes a large part of the budget).
    """

    SCHEMA_ID: ClassVar[str] = "https://events.kernel-sentinel.dev/schemas/finding"
    TITLE: ClassVar[str] = "kernel-sentinel finding (one item of check --json)"
    REQUIRED: ClassVar[tuple[str, ...]] = ("path", "cell", "line", "kind", "estimate_bytes", "budget_bytes", "message", "remedy")

    path: str = required(description="the file, or <cell>/<session> in a kernel")
    cell: int | None = required(description="cell index in the notebook (0-based), execution count in a kernel, null for .py")
    line: int = required(description="1-based line in the cell or file")
    kind: str = required(enum=list(KINDS), description="what kind of killer")
    message: str = required(description="what is wrong, with the numbers")
    remedy: str = required(description="what to write instead")
    estimate_bytes: int | None = described(description="the estimated memory, when known")
    budget_bytes: int | None = described(description="the budget it was compared with")
    severity: str = described("error", enum=["error", "warning"], description="error: will not fit; warning: a large part")
    basis: str | None = described(description="how the estimate was made, in words")
    code: str | None = described(description="the source line the finding is about")
    details: dict[str, Any] = described({}, description="kind-specific numbers (chunksize, rows, ...)")

    @property
    def where(self) -> str:
        """Return ``path:cell 3:line 2`` (or ``path:12`` for .py files) for humans."""
        if self.cell is None:
            return f"{self.path}:{self.line}"
        return f"{self.path} cell {self.cell} line {self.line}"
