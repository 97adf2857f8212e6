"""``shrink(df)``: the same DataFrame in less memory (smaller numbers, categories), and what it saved.

Values never change: every converted column is compared with the original, value by value, and a
column that would not come back identical is left as it was. Bytes are counted as the process holds
them (each Python object once, see ``estimate.frame_footprint``), not ``memory_usage(deep=True)``,
which counts a shared string once per row and so overstates what categories save.

One thing does change, as with any downcast: arithmetic on an int16 column happens in int16. Cast back
(``df['qty'].astype('int64')``) before multiplying values that could overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sizes import format_bytes
from .estimate import column_footprint

CATEGORY_MAX_SHARE = 0.5  # a text column becomes categorical when at most half its values are distinct


@dataclass
class ShrinkResult:
    """The smaller frame and a per-column table of what changed; unpacks as ``(frame, report)``."""

    frame: Any
    report: Any  # DataFrame: column, before, after, bytes_before, bytes_after, saved_bytes
    bytes_before: int
    bytes_after: int

    def __iter__(self):
        yield self.frame
        yield self.report

    @property
    def saved_bytes(self) -> int:
        return self.bytes_before - self.bytes_after

    def __str__(self) -> str:
        lines = [f"shrink: {format_bytes(self.bytes_before)} -> {format_bytes(self.bytes_after)} "
                 f"(saved {format_bytes(self.saved_bytes)})"]
        for row in self.report.itertuples(index=False):
            if row.before != row.after:
                lines.append(f"  {row.column!s:<24} {row.before:>10} -> {row.after:<10} "
                             f"{format_bytes(row.bytes_before):>10} -> {format_bytes(row.bytes_after):<10}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython display
        p.text(str(self))


def _smallest_int(lo: int, hi: int, nullable: bool) -> str | None:
    import numpy as np

    for t in ("int8", "int16", "int32", "int64"):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return t.capitalize() if nullable else t
    return None


def _candidate(col: Any) -> Any | None:
    """Return a smaller version of one column, or None when nothing smaller holds the same values."""
    import numpy as np
    import pandas as pd

    dtype = col.dtype
    n = len(col)
    if n == 0:
        return None
    if isinstance(dtype, pd.CategoricalDtype) or str(dtype) == "bool" or pd.api.types.is_datetime64_any_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        nullable = isinstance(dtype, pd.api.extensions.ExtensionDtype)
        if col.isna().all():
            return None
        lo, hi = int(col.min()), int(col.max())
        target = _smallest_int(lo, hi, nullable)
        if target is None or pd.api.types.pandas_dtype(target).itemsize >= dtype.itemsize:
            return None
        return col.astype(target)
    if pd.api.types.is_float_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        if dtype.itemsize <= 4:
            return None
        small = col.astype(np.float32)
        if np.array_equal(small.to_numpy().astype(dtype), col.to_numpy(), equal_nan=True):
            return small
        return None
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        values = col.dropna()
        if not all(isinstance(v, str) for v in values.head(1000)):
            return None
        distinct = values.nunique()
        if n >= 2 and distinct <= CATEGORY_MAX_SHARE * n:
            return col.astype("category")
    return None


def _same_values(a: Any, b: Any) -> bool:
    """Return True when two columns hold exactly the same values (NaN equal to NaN), whatever their dtypes."""
    import numpy as np

    if len(a) != len(b) or not a.index.equals(b.index):
        return False
    na, nb = a.isna().to_numpy(), b.isna().to_numpy()
    if not np.array_equal(na, nb):
        return False
    va = a.to_numpy(dtype=object)[~na]
    vb = b.to_numpy(dtype=object)[~nb]
    return bool(all(x == y and type(x) is type(y) or (x == y and isinstance(x, (int, float)) and isinstance(y, (int, float)))
                    for x, y in zip(va, vb)))


def shrink(df: Any) -> ShrinkResult:
    """Return a smaller copy of ``df`` (downcast numbers, categories for repetitive text) and a table of savings.

    The input is not modified. Every converted column is checked value by value against the original;
    a column that would change is kept as it was.
    """
    import pandas as pd

    if isinstance(df, pd.Series):
        result = shrink(df.to_frame())
        return ShrinkResult(result.frame.iloc[:, 0], result.report, result.bytes_before, result.bytes_after)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"shrink() takes a pandas DataFrame or Series, not {type(df).__name__}")
    out = df.copy(deep=False)
    rows = []
    for i, name in enumerate(df.columns):
        col = df.iloc[:, i]
        before = column_footprint(col)[0]
        new = _candidate(col)
        if new is not None and _same_values(col, new):
            after = column_footprint(new)[0]
            if after < before:
                out.isetitem(i, new)
                rows.append((name, str(col.dtype), str(new.dtype), before, after))
                continue
        rows.append((name, str(col.dtype), str(col.dtype), before, before))
    report = pd.DataFrame(rows, columns=["column", "before", "after", "bytes_before", "bytes_after"])
    report["saved_bytes"] = report["bytes_before"] - report["bytes_after"]
    index_bytes = int(df.index.memory_usage(deep=True))
    return ShrinkResult(out, report, int(report["bytes_before"].sum()) + index_bytes,
                        int(report["bytes_after"].sum()) + index_bytes)
