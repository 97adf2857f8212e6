"""Cheap change detection: turn one object into content-addressed parts (pickle + out-of-band buffers).

Every object is pickled with protocol 5 and a ``buffer_callback``: numpy arrays and the numpy blocks of
pandas objects come out as zero-copy buffers (their dtype/shape header stays in the small in-band
pickle), so hashing and writing them costs one pass over the data and no copy. Each part is named by its
xxh3-128 hash plus its length; an object whose part ids did not change since the last checkpoint has
not changed and is not written again.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any

try:  # xxh3 runs at ~5 GB/s here, blake2b at ~0.4 GB/s (FACTS.md; bench/bench_checkpoint.py)
    import xxhash

    def _digest(data: Any) -> str:
        return xxhash.xxh3_128(data).hexdigest()

    _hasher = xxhash.xxh3_128
    HASH_NAME = "xxh3_128"
except ImportError:  # pragma: no cover - xxhash is a dependency; keep working without it
    import hashlib

    def _digest(data: Any) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def _hasher() -> Any:
        return hashlib.blake2b(digest_size=16)

    HASH_NAME = "blake2b_128"



def _cloudpickle() -> Any:
    """Return the cloudpickle module (a dependency): it pickles lambdas, closures and notebook-defined code by value.

    Imported on first need, in the writer, not when the kernel starts: most namespaces pickle without it.
    """
    import cloudpickle

    return cloudpickle

OUT_OF_BAND_MIN = 64 * 1024  # smaller buffers stay in-band: thousands of tiny blob files cost more than they save


@dataclass
class Parts:
    """One object ready to store: the in-band pickle (bytes, or a spilled temp file), its buffers, the method."""

    method: str  # "pickle5" | "cloudpickle"
    inband_id: str
    inband: bytes | None  # None when spilled to ``inband_path``
    inband_path: str | None = None
    buffers: list[memoryview] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)  # other variables this object holds (stored by reference)

    @property
    def nbytes(self) -> int:
        return blob_size(self.inband_id) + sum(b.nbytes for b in self.buffers)

    def discard(self) -> None:
        """Remove a spilled temp file that was not used."""
        if self.inband_path:
            try:
                os.unlink(self.inband_path)
            except OSError:
                pass


SPILL_BYTES = 8 << 20  # an in-band pickle bigger than this goes to a temp file as it is made: memory stays flat


class Cancelled(BaseException):
    """The writer was told to give up (a cell started while a thread writer read the live objects).

    A BaseException: no ``except Exception`` on the way (a user's ``__reduce__``) may swallow it.
    """


class _Sink:
    """The pickler's file: hashes as it goes, keeps small pickles in memory, spills big ones to disk."""

    def __init__(self, spill_dir: str | None, cancelled: Any = None) -> None:
        self.spill_dir = spill_dir
        self.cancelled = cancelled  # asked at every write (pickle frames are 64 KiB): gives up within one
        self.hasher = _hasher()
        self.size = 0
        self.buf = bytearray()
        self.fd: int | None = None
        self.path: str | None = None
        self.tail = b""
        self.mentions_main = False

    def write(self, data: Any) -> int:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.hasher.update(view)
        self.size += n
        if not self.mentions_main:  # scanned in 1 MiB slices: a huge in-band bytes object is not copied whole
            self.mentions_main = b"__main__" in self.tail + bytes(view[:8])
            for start in range(0, n, 1 << 20):
                if self.mentions_main or b"__main__" in bytes(view[start:start + (1 << 20) + 8]):
                    self.mentions_main = True
                    break
            self.tail = bytes(view[-8:])
        if self.fd is None:
            self.buf += view
            if len(self.buf) > SPILL_BYTES and self.spill_dir is not None:
                os.makedirs(self.spill_dir, exist_ok=True)
                self.fd, self.path = tempfile.mkstemp(prefix=".inband-", dir=self.spill_dir)
                _write_all(self.fd, memoryview(self.buf))
                self.buf = bytearray()
        else:
            _write_all(self.fd, view)
        return n

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def abandon(self) -> None:
        self.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < view.nbytes:
        done += os.write(fd, view[done:])


class Unpicklable(Exception):
    """The object cannot be saved; the message says why in one line."""


def blob_id(data: Any) -> str:
    """Return the content address of ``data`` (bytes or a contiguous buffer): hash and length."""
    view = memoryview(data)
    return f"{_digest(view)}-{view.nbytes}"


def blob_size(bid: str) -> int:
    """Return the length recorded in a blob id (used to detect truncated blobs without reading them)."""
    return int(bid.rsplit("-", 1)[1])


def _dump(
    pickler_class: Any, obj: Any, spill_dir: str | None, refs: dict[int, str] | None = None, used: set[str] | None = None,
    cancelled: Any = None,
) -> tuple[_Sink, list[memoryview]]:
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

    sink = _Sink(spill_dir, cancelled)
    pickler = pickler_class(sink, protocol=5, buffer_callback=out_of_band)
    if refs:
        own = id(obj)

        def persistent_id(o: Any) -> Any:
            # a big variable held inside another one is stored once and restored as the same object
            key = refs.get(id(o))
            if key is None or id(o) == own:
                return None
            if used is not None:
                used.add(key)
            return ("ks-ref", key)

        pickler.persistent_id = persistent_id
    try:
        pickler.dump(obj)
    except BaseException:
        sink.abandon()
        raise
    sink.close()
    return sink, buffers


def _parts(method: str, sink: _Sink, buffers: list[memoryview], used: set[str]) -> Parts:
    bid = f"{sink.hasher.hexdigest()}-{sink.size}"
    if sink.path:
        return Parts(method, bid, None, sink.path, buffers, sorted(used))
    return Parts(method, bid, bytes(sink.buf), None, buffers, sorted(used))


def serialize(obj: Any, spill_dir: str | None = None, refs: dict[int, str] | None = None, cancelled: Any = None) -> Parts:
    """Return ``obj`` as ``Parts``; raise ``Unpicklable`` with a one-line reason when it cannot be saved.

    Plain pickle first (fastest); cloudpickle for what plain pickle refuses (lambdas,
    local functions) and for anything that refers to ``__main__``: a function or class defined in the
    notebook pickles by reference, which a fresh kernel could not resolve. The pickle streams through a
    hash into memory, or into a temp file under ``spill_dir`` once it passes 8 MiB: pickling a big
    Python object never needs a second copy of it in memory. ``refs`` maps ``id()`` of big variables to
    their names: inside another object they are stored as references (``Parts.refs``), not again.
    ``cancelled()``, asked at every write, raises ``Cancelled`` when it says so.
    """
    if isinstance(obj, io.IOBase):  # cloudpickle would save a read-mode file's contents as if they were the file
        raise Unpicklable(f"an open file{' ' + repr(getattr(obj, 'name', '')) if getattr(obj, 'name', None) else ''}: "
                          "a file handle cannot be saved")
    try:
        used: set[str] = set()
        sink, buffers = _dump(pickle.Pickler, obj, spill_dir, refs, used, cancelled)
        if not sink.mentions_main:
            return _parts("pickle5", sink, buffers, used)
        sink.abandon()
        first_error = "refers to objects defined in the notebook (__main__)"
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError, ...
        first_error = _one_line(exc)
    try:
        cloudpickle = _cloudpickle()
    except ImportError:
        raise Unpicklable(f"{first_error} (cloudpickle, which saves functions and lambdas, is missing: "
                          "reinstall kernel-sentinel)") from None
    try:
        used = set()
        sink, buffers = _dump(cloudpickle.Pickler, obj, spill_dir, refs, used, cancelled)
        return _parts("cloudpickle", sink, buffers, used)
    except Exception as exc:
        raise Unpicklable(_one_line(exc)) from None


def deserialize(method: str, inband: bytes, buffers: list[Any], resolve: Any = None) -> Any:
    """Return the object stored as ``inband`` + ``buffers``; ``resolve(name)`` supplies referenced variables.

    cloudpickle's output loads with plain pickle (cloudpickle must be importable for what it pickled).
    """
    if method == "cloudpickle":
        try:
            _cloudpickle()  # its pickles name its own functions
        except ImportError:
            raise Unpicklable("this object was saved with cloudpickle, which is not installed here") from None
    unpickler = pickle.Unpickler(io.BytesIO(inband), buffers=buffers)
    if resolve is not None:
        unpickler.persistent_load = lambda pid: resolve(pid[1])
    return unpickler.load()


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
