"""The advisor's abstract values: what the evaluator knows about a name (a constant, a module, a sized object).

Also the thresholds (shares of the budget, one place so the docs and the tests agree) and ``Context``:
everything the checks need besides the code. Pure data and small shape arithmetic; no I/O.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .estimate import ReadEstimate, estimate_npy, estimate_read, format_int, fs_free

LARGE_SHARE = 0.5
# A notebook's code does not get the whole budget: the kernel itself (ipykernel with numpy and pandas
# imported: 80 MiB RSS measured here) is already there. Static checks compare with what is left; the
# live check gets the headroom from the running kernel and subtracts nothing.
KERNEL_OVERHEAD = 96 << 20
LIVE_SHARE = 0.10
HELD_SHARE = 0.25


class _Unhandled:
    """The type of ``UNHANDLED``."""

    def __repr__(self) -> str:
        return "UNHANDLED"


UNHANDLED: Any = _Unhandled()  # a library model's "not mine": the evaluator asks the next one


@dataclass
class Context:
    """Everything the checks need besides the code: where paths resolve, the budget, and the I/O edges."""

    path: str
    base_dir: Path
    budget_bytes: int
    budget_source: str = "memory budget"
    notebook: bool = True  # IPython's Out cache exists (False for .py files run with python)
    namespace: dict[str, Any] | None = None  # live objects for %sentinel check
    read_estimator: Callable[[str, Path, dict[str, Any]], ReadEstimate | None] = estimate_read
    fs_info: Callable[[Path], tuple[int | None, str | None, str | None]] = fs_free
    npy_header: Callable[[Path], tuple[tuple[int, ...], str, int] | None] = estimate_npy

# ---- abstract values ------------------------------------------------------------------------------

@dataclass
class Const:
    value: Any


@dataclass
class Ref:
    """A module, function, class or instance we know by its qualified name (``numpy.random.Generator``)."""

    qual: str


@dataclass(eq=False)
class Obj:
    """An object whose size (or shape and dtype) is known."""

    kind: str  # array | frame | series | list | str
    shape: tuple[int | None, ...] | None = None
    itemsize: int | None = None
    dtype: str | None = None
    nbytes: int | None = None
    label: str = ""
    preexisting: bool = False  # lives in the kernel already (live check): already paid for
    fatal: bool = False  # reported as not fitting at all: later checks assume the user fixes that line
    rows: int | None = None

    @property
    def size(self) -> int | None:
        if self.nbytes is not None:
            return self.nbytes
        if self.shape is not None and self.itemsize is not None and all(d is not None for d in self.shape):
            return int(math.prod(self.shape)) * self.itemsize  # type: ignore[arg-type]
        return None


Pos = tuple[int, int]  # (cell sequence number, line): orders events across cells


@dataclass
class Binding:
    name: str
    obj: Obj
    defined: Pos
    cell: int | None
    last_use: Pos
    last_use_cell: int | None
    last_use_line: int
    displayed: tuple[int | None, int] | None = None  # (cell, line) where it was the cell's result


@dataclass
class Alloc:
    size: int
    node: ast.AST
    obj: Obj


def prod(shape: tuple[int | None, ...]) -> int | None:
    """Return the number of elements of ``shape``, or None when a dimension is unknown."""
    if any(d is None for d in shape):
        return None
    return int(math.prod(shape))  # type: ignore[arg-type]


def broadcast(a: tuple | None, b: tuple | None) -> tuple | None:
    """Return numpy's broadcast of two shapes, or None when unknown or when it would raise."""
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        else:
            return None  # would raise: not our business
    return tuple(out)


def shape_text(shape: tuple | None) -> str:
    """Return ``shape`` as people write it: ``(20,000, 20,000)``, ``(5,)``, ``?`` when unknown."""
    if not shape:
        return "?"
    inner = ", ".join("?" if d is None else format_int(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def matmul(a: Obj, b: Obj) -> Obj | None:
    """Return the result of ``a @ b`` (None for a scalar or an unknown shape)."""
    if a.shape is None or b.shape is None or len(a.shape) < 1 or len(b.shape) < 1:
        return None
    if len(a.shape) == 1 and len(b.shape) == 1:
        return None
    rows = a.shape[:-1]
    cols = b.shape[-1:] if len(b.shape) >= 2 else ()
    return Obj("array", tuple(rows) + tuple(cols), max(a.itemsize or 8, b.itemsize or 8), None)


def reduce_obj(o: Obj, axis: Any) -> Obj | None:
    """Return the result of a reduction of ``o`` along ``axis`` (None for a scalar or unknown)."""
    if o.shape is None:
        return None
    if axis is None:
        return None  # a scalar
    if isinstance(axis, Const) and isinstance(axis.value, int):
        ax = axis.value % len(o.shape) if o.shape else 0
        return Obj("array", tuple(d for i, d in enumerate(o.shape) if i != ax), o.itemsize, o.dtype)
    return None
