"""The flight record: a small fixed-layout file a kernel rewrites in place, readable after any death.

Every write is one ``pwrite`` (libc's, keeping the GIL) into a region of the file: once ``pwrite`` returns,
the bytes are in the page cache and survive SIGKILL of the writer (nothing is buffered in the process). Each region has two
slots written alternately, each slot checksummed, so a reader always finds the newest complete record
even if a write was cut short; a truncated or garbled file yields whatever regions are still intact.

Layout (``<home>/flight/<kernel_id>/<pid>.rec``; faulthandler writes beside it into ``<pid>.fault``):

    region   size per slot   written by         holds
    meta         4 KiB       kernel at load     kernel id, pid, supervisor pid, cgroup, cwd, start time
    state        1 KiB       kernel             running | shutdown_requested (+restart) | exiting
    memory       8 KiB       sampler thread     last samples, budget, peak, recursion depth, line
    maps         8 KiB       sampler thread     shared writable file mappings (memmaps)
    cell        64 KiB       pre/post_run_cell  execution count, code, start/end time, cell file
    guard        4 KiB       the memory guard   its last refusals and the native libraries a cell calls
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

# The supervisor holds this module until its kernel ends (to read a shutdown from the record), in the kernel's
# memory group: threading and ctypes (``memory.linux``) are the writer's and imported by it, typing is only for
# annotations. With the store's and gather's, these imports held ~1.9 MiB of the supervisor's and witness's memory
# there (threading's fork hook also had the witness copy pages at its fork).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAGIC = b"KSF1"
_HEAD = struct.Struct("<4sQII")  # magic, sequence, payload length, crc32
REGIONS: dict[str, int] = {"meta": 4096, "state": 1024, "memory": 8192, "maps": 8192, "cell": 65536, "guard": 4096}
CODE_LIMIT = 48 * 1024  # code beyond this is cut: the cell region must hold the whole record
WALK_LIMIT = 20000  # frames the recorder walks per tick at most (a runaway recursion must not stall it): a depth this big is "at least"

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # one encoder: json.dumps(**kw) builds one per call
try:
    from _json import make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - CPython has it
    _c_make_encoder = None
# _ENCODER.encode() makes a C encoder for every call (and a closure beside it): this one is made once. Same text
# as _ENCODER.encode() gives (ASCII, compact separators, default=str, NaN allowed), but without the check for
# circular references (markers=None): the records are trees we build. Holds no state, so threads may share it.
_C_ENCODE = (
    _c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    if _c_make_encoder is not None
    else None
)
_OFFSETS: dict[str, int] = {}
_pos = 0
for _name, _size in REGIONS.items():
    _OFFSETS[_name] = _pos
    _pos += 2 * _size
FILE_SIZE = _pos


def encode(data: Any) -> str:
    """Return ``data`` as the compact ASCII JSON text a region holds (what ``FlightWriter.write`` writes)."""
    if _C_ENCODE is None or isinstance(data, str):
        return _ENCODER.encode(data)
    return "".join(_C_ENCODE(data, 0))


class Encoded:
    """JSON text already encoded (``encode``) for ``FlightWriter.write``: a hook that has it need not encode twice.

    A holder, not a ``str`` subclass: making one of those copies the text (a cell's code, up to 48 KiB).
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def flight_dir(home: str | os.PathLike[str], kernel_id: str) -> Path:
    """Return the folder that holds one kernel id's flight records (one file pair per kernel process)."""
    return Path(home) / "flight" / _safe(kernel_id)


def record_paths(home: str | os.PathLike[str], kernel_id: str, pid: int) -> tuple[Path, Path]:
    """Return (record file, faulthandler file) of kernel process ``pid``."""
    folder = flight_dir(home, kernel_id)
    return folder / f"{pid}.rec", folder / f"{pid}.fault"


def _safe(kernel_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", kernel_id) or "_"


class FlightWriter:
    """Writes regions of one flight record; thread-safe, each write a single ``pwrite``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import threading

        from ..memory.linux import pwrite

        self._pwrite = pwrite
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(self._fd, FILE_SIZE)
        self._seq: dict[str, int] = dict.fromkeys(REGIONS, 0)
        self._lock = threading.Lock()

    def write(self, region: str, data: dict[str, Any] | Encoded) -> bool:
        """Write ``data`` (a dict, or its JSON text as ``Encoded``) as the newest record of ``region``; return False
        if it did not fit or failed."""
        payload = (data.text if type(data) is Encoded else encode(data)).encode("utf-8", "replace")
        size = REGIONS[region]
        if len(payload) + _HEAD.size > size:
            return False
        with self._lock:
            seq = self._seq[region] + 1
            slot = _OFFSETS[region] + (seq % 2) * size
            try:
                self._pwrite(self._fd, _HEAD.pack(MAGIC, seq, len(payload), zlib.crc32(payload)) + payload, slot)
            except (OSError, ValueError):
                return False
            self._seq[region] = seq
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = -1


def shutdown_in_record(flight: dict[str, Any]) -> bool:
    """Return True when a flight record (``read_record``'s dict) says the frontend asked for a shutdown or restart:
    no death then. ``Evidence.shutdown_requested`` asks this too; the supervisor asks it before a death's imports."""
    state = flight.get("state") or {}
    return state.get("state") == "shutdown_requested" or (
        state.get("state") == "exiting" and state.get("previous") == "shutdown_requested"
    )


def read_record(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """Return (the newest intact record of every region, notes about what was missing or damaged)."""
    notes: list[str] = []
    try:
        with open(path, "rb") as f:
            raw = f.read(FILE_SIZE)
    except OSError as exc:
        return {}, [f"no flight record at {path}: {exc.strerror or exc}"]
    return parse_record(raw, notes), notes


def parse_record(raw: bytes, notes: list[str] | None = None) -> dict[str, Any]:
    """Return the newest intact record of every region found in the bytes of a flight record file."""
    notes = notes if notes is not None else []
    out: dict[str, Any] = {}
    if len(raw) < FILE_SIZE:
        notes.append(f"flight record truncated ({len(raw)} of {FILE_SIZE} bytes)")
    for region, size in REGIONS.items():
        best: tuple[int, dict[str, Any]] | None = None
        damaged = False
        for index in (0, 1):
            start = _OFFSETS[region] + index * size
            head = raw[start : start + _HEAD.size]
            if len(head) < _HEAD.size or head[:4] != MAGIC:
                continue
            _magic, seq, length, crc = _HEAD.unpack(head)
            payload = raw[start + _HEAD.size : start + _HEAD.size + length]
            if length > size - _HEAD.size or len(payload) != length or zlib.crc32(payload) != crc:
                damaged = True
                continue
            try:
                value = json.loads(payload)
            except ValueError:
                damaged = True
                continue
            if best is None or seq > best[0]:
                best = (seq, value)
        if best is not None:
            out[region] = best[1]
        elif damaged:
            notes.append(f"flight record region {region!r} damaged")
    return out


def read_fault(path: str | os.PathLike[str], limit: int = 256 * 1024) -> str | None:
    """Return the faulthandler output written beside a flight record, or None when there is none."""
    try:
        with open(path, "rb") as f:
            text = f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None
    return text if text.strip() else None
