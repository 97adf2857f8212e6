"""Linux's per-tick meters: a process's statm and a memory cgroup's usage and in-use bytes, read with pread.

The one fast reader every watcher uses (the guard's watchdog every 10 ms, the runner's sampler every
25 ms): descriptors opened once, one ``pread`` per file (keeping the GIL), and the few numbers each needs parsed from bytes
without building dicts. ``pwrite`` is its twin for the flight record's small writes. The full picture (limits, MemAvailable, PSI) is ``reader.MemoryReader``'s job.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from .cgroup import oom_kill_file
from .parse import parse_numa_file_pages, parse_reclaimable

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
NUMA_SLACK = 4 << 20  # v1 memory.numa_stat's file pages and memory.stat's, read a moment apart (``GroupMeter``)


def libc_function(name: str, argtypes: Any, restype: Any, *, keep_gil: bool = False, use_errno: bool = False) -> Any:
    """Return the C library's function ``name`` with its signature set, None where there is none.

    Looked up in the process's own symbols (``CDLL(None)``, as the supervisor and the checkpoint writer do):
    ``ctypes.util.find_library`` runs ldconfig, ~2-3 ms each time, on the kernel's start-up path. ``keep_gil``:
    called through ``PyDLL``, for calls of microseconds that never wait on another Python thread, where taking
    the GIL back from a busy thread costs far more than the call (see ``pread``).
    """
    try:
        fn = getattr((ctypes.PyDLL if keep_gil else ctypes.CDLL)(None, use_errno=use_errno), name)
    except (OSError, AttributeError):  # musl has no malloc_trim, glibc before 2.33 no mallinfo2
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


_IO = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long)
# pread without argtypes: its size and offset go as ctypes objects made once (``_BUFFERS``), the descriptor as a
# C int, the buffer as its address. With argtypes each call converts its four arguments through their types'
# ``from_param`` (1.5 against 1.0 us a call warm, more in a tick's cold caches); without use_errno, since a failed
# read is read again by ``os.pread``, which raises the OSError with its errno (``pread``).
_PREAD = libc_function("pread", None, ctypes.c_ssize_t, keep_gil=True)
_PWRITE = libc_function("pwrite", _IO, ctypes.c_ssize_t, keep_gil=True, use_errno=True)
_OFFSET_0 = ctypes.c_long(0)  # off_t: a long wherever glibc's pread is the plain symbol (LP64; ILP32 without LFS)


# size -> (ctypes char array type, the size as a size_t): ``create_string_buffer`` builds a type per call
_BUFFERS: dict[int, tuple[Any, Any]] = {}


def pread(fd: int, size: int) -> bytes:
    """Return up to ``size`` bytes from the start of ``fd`` without giving up the GIL.

    ``os.pread`` releases the GIL, and a watcher thread taking it back from a main thread that runs Python
    waits for the switch interval (5 ms): a tick of five reads then cost the busy main thread five forced
    switches and the watcher up to 25 ms. These files (procfs, cgroupfs) answer in microseconds and never
    block on another Python thread. Raises OSError like ``os.pread``. A fresh buffer per call (threads share
    this function), of a type made once per size: ``create_string_buffer`` and ``string_at`` are Python
    functions around the same C calls, three of a tick's ~150 calls each read.
    """
    if _PREAD is None:
        return os.pread(fd, size, 0)
    made = _BUFFERS.get(size)
    if made is None:
        made = _BUFFERS[size] = (ctypes.c_char * size, ctypes.c_size_t(size))
    buf = made[0]()
    got = _PREAD(fd, buf, made[1], _OFFSET_0)
    if got < 0:
        return os.pread(fd, size, 0)  # the error again, raised with its errno (or, if it went away, the bytes)
    # ``value`` copies up to the first NUL, which the zeroed buffer has right after what was read (these files
    # are text): ``got`` bytes, where ``raw`` copied the whole buffer (8 KiB for a memory.stat of ~800 bytes)
    data = buf.value
    return data if len(data) == got else buf.raw[:got]


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` at ``offset`` of ``fd`` without giving up the GIL; return the bytes written.

    For a few KB into the page cache (the flight record, twice a cell), which takes ~1 us: ``os.pwrite``
    gave the GIL up, and taking it back from ipykernel's IOPub thread, busy sending the cell's reply, cost
    the main thread a median 81 us and a mean 342 us per write (p90 1.1 ms). Raises OSError like ``os.pwrite``.
    """
    if _PWRITE is None:
        return os.pwrite(fd, data, offset)
    got = _PWRITE(fd, data, len(data), offset)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return got


class OomKillMeter:
    """Reads one memory cgroup's OOM-kill counter: ``read() -> int | None``, one pread (~5 us) per call."""

    def __init__(self, directory: str, version: int | None) -> None:
        self._fd = os.open(oom_kill_file(directory, version), os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> int | None:
        """Return the counter, or None when the file has no ``oom_kill`` line (kernels before 4.13).

        Found with ``find``, not by splitting the file into lines and each line into fields: the guard's watchdog
        reads it at every tick of a running cell, where each Python call costs several times what it does warm.
        ``oom_kill `` begins no other line (v1's ``oom_kill_disable``, v2's ``oom_group_kill`` differ).
        """
        data = pread(self._fd, 512)
        if data.startswith(b"oom_kill "):
            start = 9
        else:
            start = data.find(b"\noom_kill ") + 10
            if start < 10:
                return None
        end = data.find(b"\n", start)
        return int(data[start:end] if end >= 0 else data[start:])

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


class _Statx(ctypes.Structure):
    # struct statx's head (linux/stat.h: the same layout on every architecture); 256 bytes in all
    _fields_ = [
        ("mask", ctypes.c_uint32),
        ("blksize", ctypes.c_uint32),
        ("attributes", ctypes.c_uint64),
        ("nlink", ctypes.c_uint32),
        ("rest", ctypes.c_char * 236),
    ]


_STATX = libc_function(
    "statx",
    (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)),
    ctypes.c_int,
    keep_gil=True,
)
_AT_EMPTY_PATH = 0x1000
_STATX_NLINK = 0x4


class ThreadCounter:
    """Counts a process's threads: ``read() -> int``; raises OSError or ValueError when it cannot.

    From the link count of /proc/PID/task, one ``statx`` keeping the GIL: procfs gives that directory 2 links
    plus ``get_nr_threads()`` (fs/proc/base.c, ``proc_task_getattr``), the very count /proc/PID/stat prints as
    its 20th field. Reading /proc/PID/stat instead formats 52 fields and sums every thread's CPU times: ~40 us
    of the watchdog's CPU in a busy kernel, where this takes a few. Where statx is missing, or the two disagree
    when first compared (a kernel that counts otherwise), it reads /proc/PID/stat as before.
    """

    def __init__(self, pid: int | str = "self", proc: str = "/proc") -> None:
        self._stat_fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        self._task_fd: int | None = None
        if _STATX is None:
            return
        try:
            self._task_fd = os.open(f"{proc}/{pid}/task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # Compared twice around the other: a thread started or ended in between is no disagreement.
            before = self._from_stat()
            links = self._from_links()
            if links != before and links != self._from_stat():
                raise ValueError(f"task links say {links} threads, stat says {before}")
        except (OSError, ValueError):
            self._close_task()

    def read(self) -> int:
        """Return how many threads the process has now."""
        if self._task_fd is not None:
            return self._from_links()
        return self._from_stat()

    def _from_links(self) -> int:
        buf = _Statx()
        if _STATX(self._task_fd, b"", _AT_EMPTY_PATH, _STATX_NLINK, buf) != 0 or not buf.mask & _STATX_NLINK:
            raise OSError("statx of the task directory failed")
        return buf.nlink - 2

    def _from_stat(self) -> int:
        raw = pread(self._stat_fd, 1024)
        return int(raw[raw.rindex(b")") + 2 :].split()[17])

    def _close_task(self) -> None:
        if self._task_fd is not None:
            try:
                os.close(self._task_fd)
            except OSError:
                pass
            self._task_fd = None

    def close(self) -> None:
        self._close_task()
        try:
            os.close(self._stat_fd)
        except OSError:
            pass


class StatmMeter:
    """Reads /proc/PID/statm: ``read() -> (rss, data+stack, resident file/shmem)`` in bytes."""

    def __init__(self, pid: int | str = "self", proc: str = "/proc") -> None:
        self._fd = os.open(f"{proc}/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)

    @property
    def fd(self) -> int:
        """The open statm file (for a caller that parses it inline on a hot path, as the guard's meters do)."""
        return self._fd

    def read(self) -> tuple[int, int, int]:
        """Return (RSS, statm's data field, resident shared/file pages); raises OSError when gone."""
        fields = pread(self._fd, 256).split()
        return int(fields[1]) * PAGE, int(fields[5]) * PAGE, int(fields[2]) * PAGE

    def sizes(self) -> tuple[int, int, int]:
        """Return (VmSize, RSS, statm's data field); raises OSError when gone.

        ``size - data`` is the address space outside the heap and stacks (file mappings, a memmap among them,
        libraries): it stays put while the heap grows and shrinks.
        """
        fields = pread(self._fd, 256).split()
        return int(fields[0]) * PAGE, int(fields[1]) * PAGE, int(fields[5]) * PAGE

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


class GroupMeter:
    """Reads one memory cgroup: ``read() -> (usage, in use)``, in use = usage minus reclaimable page cache.

    Reclaimable is what the kernel drops before an OOM kill (``parse.parse_reclaimable``): clean file
    pages on either LRU list. Counting active file pages as used made a guard refuse allocations a stock
    kernel completes (FACTS.md "Memory accounting"). In a v1 group it is read from memory.numa_stat when that
    file gives the same figure (``_numa_stat``): the cheaper file for the same two counters.
    """

    def __init__(self, directory: str, version: int) -> None:
        self.directory = directory
        self.version = version
        usage_name = "memory.usage_in_bytes" if version == 1 else "memory.current"
        self._usage_fd = os.open(os.path.join(directory, usage_name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._stat_fd = os.open(os.path.join(directory, "memory.stat"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._usage_fd)
            raise
        self._numa_fd = self._numa_stat() if version == 1 else None

    def _numa_stat(self) -> int | None:
        """Return an open v1 memory.numa_stat when its file pages are memory.stat's (read on either side of it, within
        NUMA_SLACK: page cache moves meanwhile), None otherwise (no CONFIG_NUMA, another format).

        The kernel formats it in half the time of memory.stat (4.6 against 9.1 us warm here), and the guard reads a
        group at every watchdog tick and twice a cell.
        """
        try:
            fd = os.open(os.path.join(self.directory, "memory.numa_stat"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            before = parse_reclaimable(pread(self._stat_fd, 8192))
            numa = parse_numa_file_pages(pread(fd, 8192)) * PAGE
            after = parse_reclaimable(pread(self._stat_fd, 8192))
            if min(before, after) - NUMA_SLACK <= numa <= max(before, after) + NUMA_SLACK:
                return fd
        except (OSError, ValueError):
            pass
        os.close(fd)
        return None

    def usage(self) -> int:
        """Return the group's usage as the limit counts it (page cache included); raises OSError/ValueError."""
        return int(pread(self._usage_fd, 64))

    def read(self) -> tuple[int, int]:
        """Return (usage, in use); raises OSError or ValueError when the group is gone or unreadable."""
        usage = int(pread(self._usage_fd, 64))
        if self._numa_fd is not None:
            in_use = usage - parse_numa_file_pages(pread(self._numa_fd, 8192)) * PAGE
        else:
            in_use = usage - parse_reclaimable(pread(self._stat_fd, 8192))
        return usage, in_use if in_use > 0 else 0

    def close(self) -> None:
        for fd in (self._usage_fd, self._stat_fd, self._numa_fd):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
