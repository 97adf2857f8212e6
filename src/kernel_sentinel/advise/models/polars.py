"""polars' model: take a polars call, return the frame it makes (bytes and rows when known).

``pl.read_csv/read_ndjson/read_parquet/read_ipc`` of an existing file, and ``pl.scan_*(path)...collect()`` (the
steps between, below), are sized from a sample read with polars itself, scaled by the
file (``estimate.estimate_read``). polars allocates such a read's output in native code and aborts the
process when an allocation fails, so this is what the pre-run check refuses a read on. Between scan and
collect, steps that keep every row and every column (``with_columns``, ``sort``, ``fill_null``...) keep the
estimate (a lower bound: what they add is not counted); a step that may keep a sliver of the file (a filter,
a select, a group-by, a head, a join) makes the query unsized, since an estimate must err toward allowing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from typing import Any

from ..estimate import ReadEstimate
from ..values import UNHANDLED, Const, Obj
from . import LibraryModel, input_file, limited, read_frame

READERS = ("read_csv", "read_ndjson", "read_parquet", "read_ipc")
KEEPS_ALL = frozenset({"with_columns", "with_row_index", "sort", "fill_null", "fill_nan", "rename", "reverse",
                       "shift", "cache", "interpolate", "set_sorted", "with_columns_seq"})  # every row, every column
SCANS = {"scan_csv": "read_csv", "scan_ndjson": "read_ndjson", "scan_parquet": "read_parquet", "scan_ipc": "read_ipc"}


@dataclass(eq=False)
class Scan(Obj):
    """A lazy scan of a whole file: nothing allocated until ``collect()``, which makes the estimated frame."""

    reader: str = ""
    path: str = ""
    estimate: ReadEstimate | None = None


class PolarsModel(LibraryModel):
    """The polars model."""

    MODULE = "polars"

    def call(self, ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the frame a reader makes of an existing file (estimated), a scan of one, or None (unknown)."""
        if not q.startswith("polars."):
            return UNHANDLED
        if name in READERS:
            found = _estimate(ev, node, name, args, kw)
            if found is None:
                return None
            p, est, nbytes, rows = found
            return read_frame(ev, node, name, p, est, nbytes, rows)
        if name in SCANS:
            found = _estimate(ev, node, SCANS[name], args, kw)
            if found is None:
                return None
            p, est, nbytes, rows = found
            return Scan("lazy", label=ast.unparse(node), rows=rows, reader=SCANS[name], path=p,
                        estimate=replace(est, bytes=nbytes, rows=rows))
        return None

    def method(self, ev: Any, base: Obj, attr: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the frame ``scan.collect()`` makes of the whole file; None for any other step of a lazy query."""
        if not isinstance(base, Scan):
            return UNHANDLED
        if attr == "collect" and base.estimate is not None and base.estimate.bytes is not None:
            return read_frame(ev, node, base.reader, base.path, base.estimate, base.estimate.bytes, base.rows)
        if attr in KEEPS_ALL:
            return Scan("lazy", label=ast.unparse(node), rows=base.rows, reader=base.reader, path=base.path,
                        estimate=base.estimate)
        return None


MODEL = PolarsModel()


def _estimate(ev: Any, node: ast.Call, reader: str, args: list[Any], kw: dict[str, Any]) -> tuple[str, ReadEstimate, int, int | None] | None:
    """Return (path, estimate, bytes, rows) of reading an existing file whole, or None when it cannot be told."""
    found = input_file(ev, node, args, kw)
    if found is None:
        return None
    p, full = found
    literal = {k: v.value for k, v in kw.items() if isinstance(v, Const)}
    est = ev.ctx.read_estimator(f"polars.{reader}", full, literal)
    if est is None or est.bytes is None:
        return None
    nbytes, rows = limited(est.bytes, est.rows, literal.get("n_rows"))
    return p, est, nbytes, rows
