"""pandas' model: take a pandas call, return the frame it makes (bytes and rows when known).

``pd.read_csv/read_table/read_json/read_parquet`` of an existing file (the size from a sample read, scaled
by the file's size: ``estimate.estimate_read``), ``pd.DataFrame``/``pd.Series`` of known arrays,
``pd.concat`` of known parts, ``pd.date_range``; live ``DataFrame``/``Series`` by their real footprint.
"""

from __future__ import annotations

import ast
from typing import Any

from ..values import UNHANDLED, Const, Obj
from . import LibraryModel, input_file, limited, read_frame

READERS = {"read_csv", "read_table", "read_json", "read_parquet", "read_feather", "read_excel", "read_pickle",
            "read_hdf", "read_fwf", "read_orc", "read_stata", "read_sas", "read_spss", "read_xml"}


class PandasModel(LibraryModel):
    """The pandas model."""

    MODULE = "pandas"

    def canonical(self, q: str) -> str:
        """Return one name for pandas' aliases (``pandas.core.frame.DataFrame`` -> ``pandas.DataFrame``)."""
        return q.replace("pandas.core.frame.", "pandas.").replace("pandas.io.parsers.", "pandas.")

    def call(self, ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the value of a pandas call: a read file's frame, or a new frame (recorded by ``ev.new``)."""
        if not q.startswith("pandas."):
            return UNHANDLED
        if name in READERS:
            return read(ev, node, q, args, kw)
        return ev.new(frame(ev, q, name, node, args, kw), node)

    def live(self, value: Any, name: str) -> Obj | None:
        """Return an Obj for a live DataFrame or Series (its real footprint, strings included), already paid for."""
        mod = type(value).__module__ or ""
        if mod.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series"):
            from ..estimate import frame_footprint

            df = value if type(value).__name__ == "DataFrame" else value.to_frame()
            kind = "frame" if type(value).__name__ == "DataFrame" else "series"
            return Obj(kind, None, None, None, frame_footprint(df), preexisting=True, label=name, rows=len(value))
        return None


MODEL = PandasModel()


def frame(ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
    """Return the frame (or series, or index) a pandas constructor or ``concat`` makes, or None when unknown."""
    if q == "pandas.concat":
        parts = args[0] if args else None
        if isinstance(parts, list) and parts and all(isinstance(p, Obj) and p.size for p in parts):
            total = sum(p.size for p in parts)  # type: ignore[misc]
            return Obj("frame", None, None, None, total)
        return None
    if q in ("pandas.DataFrame", "pandas.Series"):
        data = ev.arg(args, kw, 0, "data")
        kind = "frame" if name == "DataFrame" else "series"
        if isinstance(data, Obj) and data.size:
            rows = data.shape[0] if data.shape else data.rows
            return Obj(kind, data.shape, data.itemsize, data.dtype, data.size, rows=rows)
        if isinstance(data, dict) and "__dict__" in data:
            vals = [v for _, v in data["__dict__"]]
            objs = [v for v in vals if isinstance(v, Obj) and v.size]
            if objs:
                rows = objs[0].shape[0] if objs[0].shape else objs[0].rows
                # plain Python lists/constants beside known columns: one 8-byte slot per row each
                extra = (len(vals) - len(objs)) * 8 * (rows or 0)
                return Obj(kind, None, None, None, sum(o.size for o in objs) + extra, rows=rows)  # type: ignore[misc]
        return None
    if q == "pandas.date_range":
        n = ev.arg(args, kw, 2, "periods")
        if isinstance(n, Const) and isinstance(n.value, int):
            return Obj("array", (n.value,), 8, "datetime64")
    return None


def read(ev: Any, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
    """Return the frame a reader makes of an existing file (estimated); report a missing input."""
    reader = q.rsplit(".", 1)[-1]
    found = input_file(ev, node, args, kw)
    if found is None:
        return None
    p, full = found
    literal = {k: v.value for k, v in kw.items() if isinstance(v, Const)}
    for k, v in kw.items():
        if isinstance(v, dict) and "__dict__" in v and all(isinstance(a, Const) and isinstance(b, Const) for a, b in v["__dict__"]):
            literal[k] = {a.value: b.value for a, b in v["__dict__"]}
    if "chunksize" in kw or literal.get("iterator"):
        return None  # already streamed
    if reader not in ("read_csv", "read_table", "read_json", "read_parquet"):
        return None
    est = ev.ctx.read_estimator(reader, full, literal)
    if est is None or est.bytes is None:
        return None
    nbytes, rows = limited(est.bytes, est.rows, literal.get("nrows"))
    return read_frame(ev, node, reader, p, est, nbytes, rows)
