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
    sink = _Sink(spill_dir, cancelled)
    pickler = pickler_class(sink, protocol=5, buffer_callback=_out_of_band_into(buffers))
    if refs:
        pickler.persistent_id = _refs_by_name(refs, id(obj), used)
    try:
        pickler.dump(obj)
    except BaseException:
        sink.abandon()
        raise
    sink.close()
    return sink, buffers


def _out_of_band_into(buffers: list[memoryview]) -> Any:
    """Return the pickler's ``buffer_callback``: big contiguous buffers go to ``buffers`` (out-of-band)."""

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

    return out_of_band


def _refs_by_name(refs: dict[int, str], own: int, used: set[str] | None) -> Any:
    """Return the pickler's ``persistent_id``: a big variable held inside another is stored once, by name."""

    def persistent_id(o: Any) -> Any:
        key = refs.get(id(o))
        if key is None or id(o) == own:
            return None
        if used is not None:
            used.add(key)
        return ("ks-ref", key)

    return persistent_id


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


# -- big containers of small objects, saved in chunks ------------------------------------------------------
#
# A rebound dict of 200k small lists pickles to megabytes that differ in one place from the last checkpoint's;
# saved whole, every checkpoint writes all of it again. Saved as chunks of entries instead, each chunk is a
# blob of its own, and a chunk whose bytes did not change is already in the store: its hash is the cheap
# change test (the pickling itself is needed anyway, the old objects are gone). One pickler pickles every
# chunk, so its memo spans them: an object shared between entries of two chunks is pickled once and comes
# back shared, exactly as with one pickle; one unpickler loads the chunks in order, so its memo spans them too.

CHUNK_MIN_ENTRIES = 16384  # smaller containers are saved whole: a few hundred KiB, not worth many blobs
CHUNK_ENTRIES = 4096  # a dict's chunk ends after a key whose hash is 0 modulo this (content-defined, ~this long)
CHUNK_MAX_ENTRIES = 4 * CHUNK_ENTRIES  # ... or after this many entries (keys whose hashes never hit the mask)
CHUNKED = "pickle5-chunks"


def chunkable(obj: Any) -> bool:
    """Return True for a plain dict or list big enough to be saved in chunks."""
    return type(obj) in (dict, list) and len(obj) >= CHUNK_MIN_ENTRIES


def _dict_bounds(d: dict[Any, Any]) -> list[int]:
    """Return where a dict's chunks end: after keys whose hash hits the mask, so that an entry added or removed
    moves no other chunk's boundaries (a change stays in its own chunk)."""
    import itertools
    import operator

    # which keys end a chunk, computed in C (map/compress): a Python loop over 200k keys costs ~30 ms
    hits = itertools.compress(range(1, len(d) + 1),
                              map(operator.not_, map(operator.and_, map(hash, d), itertools.repeat(CHUNK_ENTRIES - 1))))
    bounds: list[int] = []
    start = 0
    for end in itertools.chain(hits, (len(d),)):
        while end - start > CHUNK_MAX_ENTRIES:  # keys whose hashes never hit the mask: cut by count
            start += CHUNK_MAX_ENTRIES
            bounds.append(start)
        if end > start:
            bounds.append(end)
            start = end
    return bounds


def serialize_chunks(obj: Any, spill_dir: str | None = None, refs: dict[int, str] | None = None,
                     cancelled: Any = None) -> list[Parts] | None:
    """Return a big dict or list as one ``Parts`` per chunk of entries (in order), or None to save it whole.

    None when plain pickle would not do for every chunk (an entry refers to the notebook's own code: the whole
    object then goes through ``serialize``, which knows cloudpickle) or the container changed size while it was
    read (a thread writer reading a live object). ``Cancelled`` propagates, as from ``serialize``.
    """
    if not chunkable(obj):
        return None
    import itertools

    is_dict = type(obj) is dict
    try:
        bounds = _dict_bounds(obj) if is_dict else list(range(CHUNK_ENTRIES, len(obj), CHUNK_ENTRIES)) + [len(obj)]
    except Exception:  # a key whose __hash__ fails now: save it whole, serialize says why if it cannot
        return None
    out: list[Parts] = []
    hold: list[Any] = []  # every chunk's own containers stay alive: the pickler's memo is keyed by id()
    own = id(obj)
    used: set[str] = set()
    buffers: list[memoryview] = []

    class _Switch:
        """The pickler's one file: each chunk's bytes go to that chunk's sink."""

        sink: _Sink

        def write(self, data: Any) -> int:
            return self.sink.write(data)

    switch = _Switch()
    pickler = pickle.Pickler(switch, protocol=5, buffer_callback=_out_of_band_into(buffers))
    if refs:
        pickler.persistent_id = _refs_by_name(refs, own, used)
    try:
        keys_it = iter(obj.keys()) if is_dict else None
        values_it = iter(obj.values()) if is_dict else iter(obj)
        start = 0
        for end in bounds:
            n = end - start
            chunk = (list(itertools.islice(keys_it, n)), list(itertools.islice(values_it, n))) if is_dict \
                else list(itertools.islice(values_it, n))
            hold.append(chunk)
            if (len(chunk[1]) if is_dict else len(chunk)) != n:
                raise RuntimeError("the container changed size while it was read")
            switch.sink = _Sink(spill_dir, cancelled)
            buffers.clear()
            used.clear()
            try:
                pickler.dump(chunk)
            except BaseException:
                switch.sink.abandon()
                raise
            switch.sink.close()
            if switch.sink.mentions_main:
                switch.sink.abandon()
                raise _Whole
            out.append(_parts(CHUNKED, switch.sink, list(buffers), set(used)))
            start = end
    except (_Whole, RuntimeError, pickle.PicklingError, TypeError, AttributeError, RecursionError, ValueError):
        for parts in out:
            parts.discard()
        return None
    except BaseException:  # Cancelled, or anything the caller must see
        for parts in out:
            parts.discard()
        raise
    return out


class _Whole(Exception):
    """This container is saved whole after all."""


def deserialize_chunks(container: str, inbands: list[Any], buffers: list[Any], resolve: Any = None) -> Any:
    """Return the dict or list stored as chunks ``inbands`` (in order) and their out-of-band ``buffers``.

    One unpickler reads every chunk in turn: its memo spans them, as the pickler's did.
    """
    stream = io.BytesIO(b"".join(bytes(part) for part in inbands))
    unpickler = pickle.Unpickler(stream, buffers=buffers)
    if resolve is not None:
        unpickler.persistent_load = lambda pid: resolve(pid[1])
    if container == "dict":
        d: dict[Any, Any] = {}
        for _ in inbands:
            keys, values = unpickler.load()
            d.update(zip(keys, values))
        return d
    out: list[Any] = []
    for _ in inbands:
        out.extend(unpickler.load())
    return out
