"""Sizes before they exist: dtypes and shapes -> bytes, and data files -> the memory pandas or polars will need.

The dtype and chunk arithmetic is pure. ``estimate_read`` is the I/O edge: it reads a small sample of
the file with the library that will read it (pandas, or polars for ``polars.read_*``; never the whole file,
unless the file is small) and scales it by the file's size (text) or its row count (parquet, Arrow IPC).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_BYTES = 4 << 20  # bytes of a text file read for the sample; files up to this size are read whole
COMPRESSED = (".gz", ".zip", ".bz2", ".xz", ".zst", ".tar")  # suffixes of files whose bytes are not their text
POINTER = 8  # an object column stores one pointer per row

_ITEMSIZE = {  # used when numpy is not importable in the checking process
    "bool": 1, "bool_": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "half": 2,
    "int32": 4, "uint32": 4, "float32": 4, "single": 4, "intc": 4,
    "int64": 8, "uint64": 8, "float64": 8, "double": 8, "int": 8, "float": 8, "int_": 8, "intp": 8,
    "complex64": 8, "complex128": 16, "complex": 16, "longdouble": 16, "object": 8, "object_": 8,
    "datetime64": 8, "timedelta64": 8, "category": 1,
}


def dtype_itemsize(spec: Any) -> int | None:
    """Return the bytes per element of a dtype written as text or a Python type (``'f4'``, ``float``)."""
    if spec is None:
        return 8
    if isinstance(spec, type):
        spec = {bool: "bool", int: "int64", float: "float64", complex: "complex128", object: "object"}.get(spec, None)
        if spec is None:
            return None
    if not isinstance(spec, str):
        return None
    try:
        import numpy as np

        return int(np.dtype(spec).itemsize) or None
    except Exception:
        return _ITEMSIZE.get(spec.lower().split("[")[0])


def nice_floor(n: float) -> int:
    """Return ``n`` rounded down to a number people write (250_000, 40_000, 1_500), at least 1."""
    if n < 1:
        return 1
    magnitude = 10 ** int(math.floor(math.log10(n)))
    for step in (8, 6, 5, 4, 3, 2.5, 2, 1.5, 1):
        if n >= step * magnitude:
            return int(step * magnitude)
    return int(magnitude)


# After ``read_csv`` returns, the process holds more than the DataFrame. The C parser builds every
# column chunk by chunk and concatenates the chunks at the end. Whether the freed chunk arrays go back
# to the OS depends on the allocator's history: glibc returns them while its mmap threshold is still
# at 128 KiB (a fresh process), and keeps them in the heap once any big block has been freed (it then
# raises the threshold to up to 32 MiB: any kernel that has done some work). Measured RSS growth across
# ``read_csv`` in a real kernel against the frame's own footprint: 69 MB numeric CSV: 74 MB fresh, 139 MB used, 64 MB
# footprint; 77 MB mixed CSV: 264 MB fresh, 274 MB used, 197 MB footprint (strings fragment the heap
# either way). So each fixed-width array (a numeric column, or a text column's pointer array) is
# counted 1.6 times: between the two allocator states, within 1.4x of both on these files. The peak
# during the read is higher still; chunk sizes leave room for it (CHUNK_SHARE).
ARRAY_LEFTOVER = 0.6

# A chunk of read_csv needs more than the rows it returns: the tokenizer's buffers and the column
# arrays being built exist at once. Measured on mixed numeric/string CSVs the peak was ~2-3x the
# chunk's final size, so one chunk is sized to a tenth of the budget: room for the peak, for what the
# loop body makes of the chunk, and for the kernel itself.
CHUNK_SHARE = 0.10


def fitting_chunksize(bytes_per_row: float, budget_bytes: int) -> int:
    """Return the chunksize whose chunks (and their parsing peak) fit comfortably in ``budget_bytes``."""
    if bytes_per_row <= 0:
        return 100_000
    return max(1_000, nice_floor(budget_bytes * CHUNK_SHARE / bytes_per_row))


def format_int(n: int) -> str:
    """Return ``250_000`` style integer literals for remedies people paste into code."""
    return f"{n:_}"


# ---- what a DataFrame really takes --------------------------------------------------------------


def column_footprint(values: Any) -> tuple[int, int, int]:
    """Return (bytes, unique objects, unique-object bytes) of one column's values as stored in memory.

    ``memory_usage(deep=True)`` sums ``sys.getsizeof`` per row, but pandas' CSV parser reuses one
    string object for repeated values, so for a low-cardinality text column it overcounts many times
    over. Counting each object once (by identity) gives what the process really holds.
    """
    import numpy as np

    arr = values
    if str(getattr(arr, "dtype", "")) == "category":
        b, u, ub = column_footprint(arr.cat.categories.to_series())
        return int(arr.cat.codes.nbytes) + b, u, ub
    if hasattr(arr, "dtype") and getattr(arr.dtype, "kind", "O") not in "OUST" and str(arr.dtype) not in ("str", "string"):
        return int(getattr(arr, "nbytes", 0) or np.asarray(arr).nbytes), 0, 0
    if getattr(getattr(arr, "dtype", None), "storage", None) == "pyarrow":
        # pandas 3's default ``str`` (and ``string[pyarrow]``): one contiguous UTF-8 buffer plus offsets, no
        # Python objects (converting to objects would count a fresh object per row)
        return int(arr.nbytes), 0, 0
    objs = np.asarray(arr, dtype=object)
    seen: set[int] = set()
    unique_bytes = 0
    for v in objs:
        i = id(v)
        if i not in seen:
            seen.add(i)
            n = sys.getsizeof(v)
            unique_bytes += (n + 15) & ~15 if n <= 512 else n  # pymalloc hands out 16-byte size classes
    return POINTER * len(objs) + unique_bytes, len(seen), unique_bytes


def frame_footprint(df: Any) -> int:
    """Return the bytes a DataFrame holds: numeric buffers plus each Python object counted once."""
    total = int(df.index.memory_usage(deep=True)) if hasattr(df.index, "memory_usage") else 0
    for name in df.columns:
        total += column_footprint(df[name])[0]
    return total


# ---- estimates of reads ---------------------------------------------------------------------------


@dataclass
class ColumnEstimate:
    name: str
    dtype: str
    bytes: int  # estimated for the whole file
    shrunk_bytes: int  # with the suggested dtype
    suggestion: str | None  # e.g. 'category', 'float32', 'int16'


@dataclass
class ReadEstimate:
    """What reading a whole file will cost, and how the number was obtained."""

    bytes: int | None
    rows: int | None
    bytes_per_row: float | None
    basis: str
    columns: list[ColumnEstimate] = field(default_factory=list)
    file_bytes: int = 0
    exact: bool = False
    engine: str = "pandas"  # the library the sample was read with, and that will read the file: its remedies

    @property
    def shrunk_bytes(self) -> int | None:
        if not self.columns or self.bytes is None:
            return None
        return sum(c.shrunk_bytes for c in self.columns)


# keyword arguments of read_csv/read_json that are safe and meaningful for the sample read
_SAMPLE_KW = {
    "sep", "delimiter", "header", "names", "index_col", "usecols", "dtype", "engine", "true_values",
    "false_values", "skipinitialspace", "na_values", "keep_default_na", "na_filter", "parse_dates",
    "date_format", "thousands", "decimal", "lineterminator", "quotechar", "quoting", "escapechar",
    "comment", "encoding", "dtype_backend", "converters", "low_memory", "orient", "lines", "typ", "convert_dates",
    "columns", "skip_blank_lines",
}


def _shrink_suggestion(col: Any, rows_sample: int) -> str | None:
    """Return the dtype that would hold this sample column with the same values, if smaller."""
    import numpy as np

    kind = getattr(col.dtype, "kind", "O")
    if str(col.dtype) in ("str", "string") or kind == "O":
        if _looks_like_dates(col):
            return "datetime64[ns]"  # 8 bytes a row instead of a ~70-byte string object
        nunique = col.nunique(dropna=True)
        if rows_sample >= 50 and nunique <= max(1, rows_sample // 2) and nunique < 10_000:
            return "category"
        return None
    if kind == "f":
        v = col.to_numpy()
        if col.dtype.itemsize > 4 and np.array_equal(v.astype(np.float32).astype(v.dtype), v, equal_nan=True):
            return "float32"
        return None
    if kind in "iu" and len(col):
        lo, hi = int(col.min()), int(col.max())
        for t in ("int8", "int16", "int32") if lo < 0 else ("uint8", "uint16", "uint32"):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max and np.dtype(t).itemsize < col.dtype.itemsize:
                # a sample's range is not the file's: leave headroom by going one size up from int8/uint8
                return {"int8": "int16", "uint8": "uint16"}.get(t, t)
        return None
    return None


def _looks_like_dates(col: Any) -> bool:
    """Return True when a text column holds ISO dates/timestamps (``2023-04-01`` / ``2023-04-01 12:00:00``)."""
    import re

    import pandas as pd

    head = col.dropna().head(200)
    if head.empty or not all(isinstance(v, str) and re.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?", v) for v in head):
        return False
    try:
        pd.to_datetime(head, format="ISO8601")
    except (ValueError, TypeError):
        return False
    return True


def _shrunk_bytes(col_bytes: int, rows: int, dtype: str | None) -> int:
    if dtype is None:
        return col_bytes
    if dtype.startswith("datetime64"):
        return min(col_bytes, rows * 8)
    if dtype == "category":
        return min(col_bytes, rows * 2 + 4096)  # int8/int16 codes + a small category table
    return min(col_bytes, rows * dtype_itemsize(dtype))  # type: ignore[operator]


def _gzip_size(path: Path) -> int | None:
    """Return the uncompressed size a gzip file records in its trailer (exact below 4 GiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]
    except OSError:
        return None
    return isize if path.stat().st_size < (1 << 32) else None


def _text_sample(path: Path, opener: Any = open) -> tuple[bytes, bool]:
    """Return (the first SAMPLE_BYTES of a text file cut at a line's end, whether that is the whole file)."""
    with opener(path, "rb") as f:
        sample = f.read(SAMPLE_BYTES + 1)
    whole = len(sample) <= SAMPLE_BYTES
    if not whole:
        sample = sample[: sample.rfind(b"\n") + 1] or sample
    return sample, whole


def _estimate_text(path: Path, reader: str, kwargs: dict[str, Any]) -> ReadEstimate:
    import pandas as pd

    file_bytes = path.stat().st_size
    total_text = file_bytes
    opener: Any = open
    basis_extra = ""
    if path.suffix == ".gz":
        total_text = _gzip_size(path) or file_bytes * 4
        opener = gzip.open
        basis_extra = " (gzip: uncompressed size from the gzip trailer)"
    elif path.suffix in COMPRESSED:
        return ReadEstimate(None, None, None, f"compressed ({path.suffix}): no sample estimate", file_bytes=file_bytes)
    sample, whole = _text_sample(path, opener)
    kw = {k: v for k, v in kwargs.items() if k in _SAMPLE_KW}
    if reader == "read_json" and not kw.get("lines"):
        if not whole:
            return ReadEstimate(
                None, None, None, "JSON that is not line-delimited cannot be sampled; no estimate", file_bytes=file_bytes
            )
    data = io.BytesIO(sample)
    df = getattr(pd, reader)(data, **kw)
    if isinstance(df, pd.Series):
        df = df.to_frame()
    rows_sample = len(df)
    scale = 1.0 if whole else total_text / max(1, len(sample))
    rows = int(round(rows_sample * scale))
    columns = []
    total = int(df.index.memory_usage(deep=True) * scale) if not isinstance(df.index, pd.RangeIndex) else 0
    for name in df.columns:
        b, uniq, uniq_bytes = column_footprint(df[name])
        if uniq:  # object column: pointers scale with rows; distinct strings with how distinct they are
            grow = max(1.0, scale * uniq / max(1, rows_sample))
            array_bytes = POINTER * rows
            col_bytes = int(array_bytes + uniq_bytes * grow)
        else:
            col_bytes = array_bytes = int(b * scale)
        sugg = _shrink_suggestion(df[name], rows_sample)
        shrunk = _shrunk_bytes(col_bytes, rows, sugg)
        if rows_sample < rows:  # the parser's leftover chunk arrays (see ARRAY_LEFTOVER)
            extra = int(array_bytes * ARRAY_LEFTOVER)
            shrunk += int(extra * min(1.0, shrunk / max(1, col_bytes)))
            col_bytes += extra
        columns.append(ColumnEstimate(str(name), str(df[name].dtype), col_bytes, shrunk, sugg))
        total += col_bytes
    if whole:
        basis = f"read the whole file ({file_bytes:,} bytes) with pandas{basis_extra}"
    else:
        basis = (
            f"pandas read of the first {len(sample):,} bytes ({rows_sample:,} rows, {frame_footprint(df):,} bytes "
            f"in memory) scaled to the file's {total_text:,} bytes{basis_extra}"
        )
    if not whole:
        basis += f"; numeric and pointer arrays x{1 + ARRAY_LEFTOVER} for the parser's chunks left in the heap"
    return ReadEstimate(
        total, rows, total / max(1, rows), basis, columns, file_bytes=file_bytes, exact=whole
    )


def _estimate_parquet(path: Path, kwargs: dict[str, Any]) -> ReadEstimate:
    file_bytes = path.stat().st_size
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return ReadEstimate(
            None, None, None, "no parquet engine (pyarrow) in this environment to sample with", file_bytes=file_bytes
        )
    pf = pq.ParquetFile(path)
    rows = pf.metadata.num_rows
    cols = kwargs.get("columns")
    batch = next(pf.iter_batches(batch_size=min(max(rows, 1), 50_000), columns=cols), None)
    if batch is None:
        return ReadEstimate(0, 0, 0.0, "parquet file with no rows", file_bytes=file_bytes, exact=True)
    df = batch.to_pandas()
    sample_bytes = frame_footprint(df)
    per_row = sample_bytes / max(1, len(df))
    total = int(per_row * rows)
    columns = []
    for name in df.columns:
        b = column_footprint(df[name])[0]
        cb = int(b / max(1, len(df)) * rows)
        sugg = _shrink_suggestion(df[name], len(df))
        columns.append(ColumnEstimate(str(name), str(df[name].dtype), cb, _shrunk_bytes(cb, rows, sugg), sugg))
    basis = f"pandas read of the first {len(df):,} of {rows:,} rows (row count from the parquet footer) scaled by rows"
    return ReadEstimate(total, rows, per_row, basis, columns, file_bytes=file_bytes, exact=len(df) == rows)


# keyword arguments of polars' readers that are safe and meaningful for the sample read
_POLARS_SAMPLE_KW = {
    "columns", "has_header", "separator", "comment_prefix", "quote_char", "skip_rows", "schema", "schema_overrides",
    "null_values", "ignore_errors", "try_parse_dates", "encoding", "new_columns", "infer_schema_length", "eol_char",
    "decimal_comma", "truncate_ragged_lines", "skip_rows_after_header", "row_index_name",
}
POLARS_SAMPLE_ROWS = 50_000  # rows of a parquet or Arrow IPC file read for the sample


def _estimate_polars(reader: str, path: Path, kwargs: dict[str, Any]) -> ReadEstimate | None:
    """Return what ``pl.<reader>(path, **kwargs)`` will take: polars' own ``estimated_size`` of a sample, scaled.

    polars allocates a read's whole output in native code and aborts the process when an allocation fails, so
    this estimate is what the pre-run check refuses a read on. It errs toward allowing: the final frame, not the
    parser's peak (a text file's sample scales by bytes; parquet and IPC by the row count in the file's footer).
    """
    if reader not in ("read_csv", "read_ndjson", "read_parquet", "read_ipc"):
        return None
    try:
        file_bytes = path.stat().st_size
    except OSError as exc:
        return ReadEstimate(None, None, None, f"cannot read the file: {exc.strerror or exc}", engine="polars")
    if path.suffix in COMPRESSED:
        return ReadEstimate(None, None, None, f"compressed ({path.suffix}): no sample estimate", file_bytes=file_bytes,
                            engine="polars")
    try:
        import polars as pl

        kw = {k: v for k, v in kwargs.items() if k in _POLARS_SAMPLE_KW}
        if reader in ("read_csv", "read_ndjson"):
            sample, whole = _text_sample(path)
            if reader == "read_ndjson":
                kw = {k: v for k, v in kw.items() if k in ("schema", "schema_overrides", "ignore_errors", "infer_schema_length")}
            df = getattr(pl, reader)(io.BytesIO(sample), **kw)
            scale = 1.0 if whole else file_bytes / max(1, len(sample))
            what = f"the first {len(sample):,} bytes ({df.height:,} rows)" if not whole else f"the whole file ({file_bytes:,} bytes)"
            basis = f"polars read of {what}, sized by polars' estimated_size()" + ("" if whole else f", scaled to the file's {file_bytes:,} bytes")
        else:
            scan = pl.scan_parquet if reader == "read_parquet" else pl.scan_ipc
            rows = int(scan(path).select(pl.len()).collect().item())
            cols = {k: v for k, v in kw.items() if k == "columns"}
            df = getattr(pl, reader)(path, n_rows=min(max(rows, 1), POLARS_SAMPLE_ROWS), **cols)
            whole = df.height >= rows
            scale = rows / max(1, df.height)
            basis = (f"polars read of the first {df.height:,} of {rows:,} rows (row count from the file's footer), "
                     "sized by polars' estimated_size()" + ("" if whole else " and scaled by rows"))
    except ImportError as exc:
        return ReadEstimate(None, None, None, f"cannot sample: {exc}", file_bytes=file_bytes, engine="polars")
    except Exception as exc:  # a file polars cannot parse: the read will fail too, but not kill the kernel
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return ReadEstimate(None, None, None, f"polars could not parse a sample: {first}", file_bytes=file_bytes,
                            engine="polars")
    rows_total = int(round(df.height * scale))
    sizes = {name: int(df[name].estimated_size() * scale) for name in df.columns}
    columns = [ColumnEstimate(str(name), str(df[name].dtype), sizes[name], sizes[name], None) for name in df.columns]
    total = int(df.estimated_size() * scale)
    return ReadEstimate(total, rows_total, total / max(1, rows_total), basis, columns, file_bytes=file_bytes,
                        exact=whole, engine="polars")


def estimate_npy(path: Path) -> tuple[tuple[int, ...], str, int] | None:
    """Return (shape, dtype, bytes) from a .npy file's header without reading its data."""
    try:
        import numpy as np

        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        return tuple(shape), str(dtype), int(math.prod(shape) * dtype.itemsize)
    except Exception:
        return None


def estimate_read(reader: str, path: Path, kwargs: dict[str, Any]) -> ReadEstimate | None:
    """Return what ``pd.<reader>(path, **kwargs)`` (``polars.<reader>``: polars') will take in memory, or None
    when it cannot be told.

    Never raises: a file the library cannot parse yields an estimate with ``bytes=None`` and the reason.
    """
    if reader.startswith("polars."):
        return _estimate_polars(reader[7:], path, kwargs)
    try:
        if reader in ("read_csv", "read_table", "read_json"):
            if reader == "read_table" and "sep" not in kwargs and "delimiter" not in kwargs:
                kwargs = {**kwargs, "sep": "\t"}
            return _estimate_text(path, "read_json" if reader == "read_json" else "read_csv", kwargs)
        if reader == "read_parquet":
            return _estimate_parquet(path, kwargs)
    except ImportError as exc:
        return ReadEstimate(None, None, None, f"cannot sample: {exc}")
    except Exception as exc:  # a file pandas cannot parse: the read will fail too, but not kill the kernel
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return ReadEstimate(None, None, None, f"pandas could not parse a sample: {first}")
    return None


def fs_free(path: Path) -> tuple[int | None, str | None, str | None]:
    """Return (bytes free to unprivileged writers, mount point, filesystem type) for ``path``'s filesystem."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None, None, None
    free = st.f_bavail * st.f_frsize
    mount, fstype = None, None
    try:
        best = ""
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mp = parts[1].replace("\\040", " ")
                    if (str(p) == mp or str(p).startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                        best, fstype = mp, parts[2]
        mount = best or None
    except OSError:
        pass
    return free, mount, fstype
