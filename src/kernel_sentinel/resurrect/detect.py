"""Cheap change detection: turn one object into content-addressed parts (pickle + out-of-band buffers).

Every object is pickled with protocol 5 and a ``buffer_callback``: numpy arrays and the numpy blocks of
pandas objects come out as zero-copy buffers (their dtype/shape header stays in the small in-band
pickle), so hashing and writing them costs one pass over the data and no copy. Each part is named by its
xxh3-128 hash plus its length; an object whose part ids did not change since the last checkpoint has
not changed and is not written again.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import Any

try:  # xxh3 runs at ~5 GB/s here, blake2b at ~0.4 GB/s (FACTS.md; bench/bench_checkpoint.py)
    import xxhash

    def _digest(data: Any) -> str:
        return xxhash.xxh3_128(data).hexdigest()

    HASH_NAME = "xxh3_128"
except ImportError:  # pragma: no cover - xxhash is a dependency; keep working without it
    import hashlib

    def _digest(data: Any) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    HASH_NAME = "blake2b_128"

try:  # pickles lambdas, closures and functions/classes defined in the notebook by value
    import cloudpickle as _cloudpickle
except ImportError:  # pragma: no cover - optional
    _cloudpickle = None

OUT_OF_BAND_MIN = 64 * 1024  # smaller buffers stay in-band: thousands of tiny blob files cost more than they save


@dataclass
class Parts:
    """One object ready to store: the in-band pickle, its out-of-band buffers, how it was pickled."""

    method: str  # "pickle5" | "cloudpickle"
    inband: bytes
    buffers: list[memoryview] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return len(self.inband) + sum(b.nbytes for b in self.buffers)


class Unpicklable(Exception):
    """The object cannot be saved; the message says why in one line."""


def blob_id(data: Any) -> str:
    """Return the content address of ``data`` (bytes or a contiguous buffer): hash and length."""
    view = memoryview(data)
    return f"{_digest(view)}-{view.nbytes}"


def blob_size(bid: str) -> int:
    """Return the length recorded in a blob id (used to detect truncated blobs without reading them)."""
    return int(bid.rsplit("-", 1)[1])


def _dumps(dumps: Any, obj: Any) -> tuple[bytes, list[memoryview]]:
    buffers: list[memoryview] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        # returning True keeps the buffer in-band: small ones, and non-contiguous ones (no raw view)
        try:
            raw = buf.raw()
        except BufferError:
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    inband = dumps(obj, protocol=5, buffer_callback=out_of_band)
    return inband, buffers


def serialize(obj: Any) -> Parts:
    """Return ``obj`` as ``Parts``; raise ``Unpicklable`` with a one-line reason when it cannot be saved.

    Plain pickle first (fastest); cloudpickle, when installed, for what plain pickle refuses (lambdas,
    local functions) and for anything that refers to ``__main__``: a function or class defined in the
    notebook pickles by reference, which a fresh kernel could not resolve.
    """
    if isinstance(obj, io.IOBase):  # cloudpickle would save a read-mode file's contents as if they were the file
        raise Unpicklable(f"an open file{' ' + repr(getattr(obj, 'name', '')) if getattr(obj, 'name', None) else ''}: "
                          "a file handle cannot be saved")
    try:
        inband, buffers = _dumps(pickle.dumps, obj)
        if b"__main__" not in inband:
            return Parts("pickle5", inband, buffers)
        first_error = "refers to objects defined in the notebook (__main__)"
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError, ...
        first_error = _one_line(exc)
    if _cloudpickle is None:
        raise Unpicklable(f"{first_error} (install cloudpickle to save functions and lambdas)")
    try:
        inband, buffers = _dumps(_cloudpickle.dumps, obj)
        return Parts("cloudpickle", inband, buffers)
    except Exception as exc:
        raise Unpicklable(_one_line(exc)) from None


def deserialize(method: str, inband: bytes, buffers: list[Any]) -> Any:
    """Return the object stored as ``inband`` + ``buffers`` (cloudpickle output loads with plain pickle)."""
    if method == "cloudpickle" and _cloudpickle is None:
        raise Unpicklable("this object was saved with cloudpickle, which is not installed here")
    return pickle.loads(inband, buffers=buffers)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def big_buffer_bytes(obj: Any) -> int:
    """Return a cheap estimate of the array data ``obj`` holds (numpy / pandas), without touching it.

    The fork writer uses it as the copy-on-write exposure: pages the kernel may rewrite while the
    child still holds them.
    """
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and type(obj).__module__.startswith(("numpy", "pandas")):
        return nbytes
    memory_usage = getattr(obj, "memory_usage", None)
    if memory_usage is not None and type(obj).__module__.startswith("pandas"):
        try:
            usage = memory_usage(index=True, deep=False)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        except Exception:
            return 0
    return 0
