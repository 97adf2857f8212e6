"""Pure parsers for the kernel's memory files: text in, numbers out, no I/O.

Kept apart from the readers so they can be tested on captured files from real machines of both cgroup
versions. Each raises ``ValueError`` on text it cannot make sense of; callers turn that into a note.
"""

from __future__ import annotations

from collections import namedtuple  # not typing.NamedTuple: typing costs ~3 ms, and the supervisor
# parses /proc/PID/cgroup while the kernel it forked starts (``cgroup.py``)

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on 4 KiB pages); anything
# this large is no limit on any real machine.
UNLIMITED_THRESHOLD = 1 << 62


def parse_keyed(text: str) -> dict[str, int]:
    """Return ``{key: int}`` from "key value" lines (memory.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    if not out and text.strip():
        raise ValueError("no 'key value' lines")
    return out


# The watchdog parses these files every few milliseconds: ``str.find`` of the few keys it needs is
# several times faster than a regex or splitting every line (measured in bench/bench_memory_read.py).
_STATUS_KEYS = ("VmSize", "VmHWM", "VmRSS", "VmData", "VmStk", "RssAnon", "RssFile", "RssShmem")
_MEMINFO_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree")


def _field(text: str, key: str) -> int | None:
    """Return the integer after ``key`` at the start of a line of ``text``, or None."""
    at = text.find(key)
    while at > 0 and text[at - 1] != "\n":
        at = text.find(key, at + 1)
    if at < 0:
        return None
    end = text.find("\n", at)
    fields = text[at + len(key) : end if end >= 0 else len(text)].split()
    if not fields:
        return None
    try:
        return int(fields[0])
    except ValueError:
        return None


def _kb_fields(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for key in keys:
        value = _field(text, key + ":")
        if value is not None:
            out[key] = value * 1024
    return out


def parse_proc_status(text: str) -> dict[str, int]:
    """Return the memory fields of /proc/PID/status (VmRSS, VmData, VmSize, VmHWM, VmStk, Rss*) in bytes.

    VmStk (the main thread's stack) is read with the rest so the guard's 2 s refresh takes it from the same
    reading (``Meters.main_stack_bytes``) instead of reading the file a second time.
    """
    out = _kb_fields(text, _STATUS_KEYS)
    if "VmRSS" not in out and "VmData" not in out:
        raise ValueError("no VmRSS/VmData fields (a kernel thread, or not a status file)")
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """Return the fields of /proc/meminfo the budget needs (MemTotal, MemAvailable, ...) in bytes."""
    out = _kb_fields(text, _MEMINFO_KEYS)
    if "MemTotal" not in out:
        raise ValueError("no MemTotal line")
    return out


def parse_inactive_file(text: str) -> int:
    """Return inactive_file from memory.stat: v1's hierarchical ``total_`` counter when present."""
    for key in ("total_inactive_file ", "inactive_file "):
        value = _field(text, key)
        if value is not None:
            return value
    raise ValueError("no inactive_file line")


# What the kernel drops before it OOM-kills anyone: page cache on the file LRU lists, active or inactive,
# mapped or not (mapped pages are reclaimed at a refault cost: a stock kernel near its limit evicts its own
# libraries' code and reads it back). Anonymous memory, shmem/tmpfs (swap-backed, on the anon lists) and
# unevictable/locked pages are not on those lists. Dirty and writeback pages are reclaimed once written
# (reclaim waits for the writeback, a writer is throttled): a kernel writing a file twice its budget
# completes (FACTS.md "Memory accounting").
_RECLAIM_V1 = (b"total_active_file ", b"total_inactive_file ")
_RECLAIM_V1_LOCAL = (b"active_file ", b"inactive_file ")
_RECLAIM_V2 = (b"active_file ", b"inactive_file ")
# In the order tried, each pair with its keys as found after a newline (built once, not at every tick's parse).
_RECLAIM_KEYS = tuple((a, i, b"\n" + a, b"\n" + i) for a, i in (_RECLAIM_V1, _RECLAIM_V2, _RECLAIM_V1_LOCAL))


def _bfield(text: bytes, key: bytes, line_key: bytes | None = None) -> int | None:
    """Return the integer after ``key`` at the start of a line of ``text`` (bytes), or None; ``line_key``:
    ``b"\n" + key``, made once by callers that parse every tick."""
    if text.startswith(key):
        start = len(key)
    else:
        at = text.find(line_key or b"\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = text.find(b"\n", start)
    try:
        return int(text[start : end if end >= 0 else None])
    except ValueError:
        return None


def parse_reclaimable(text: bytes | str) -> int:
    """Return the bytes of page cache in a memory.stat: what the kernel reclaims before an OOM kill.

    Both file LRU lists count: a file read twice sits on the *active* list, yet is dropped first, and so
    are mapped pages (at a refault cost). cgroup v1's hierarchical ``total_`` counters when present, else the
    group's own; v2's names otherwise. Raises ValueError when the file has no file-LRU lines.
    """
    data = text.encode() if isinstance(text, str) else text
    for active_key, inactive_key, active_line, inactive_line in _RECLAIM_KEYS:
        active = _bfield(data, active_key, active_line)
        inactive = _bfield(data, inactive_key, inactive_line)
        if active is not None and inactive is not None:
            return active + inactive
    raise ValueError("no active_file/inactive_file lines")


def parse_numa_file_pages(text: bytes) -> int:
    """Return ``hierarchical_file`` of a cgroup v1 memory.numa_stat: the pages on the file LRU lists of the group
    and its descendants, in pages, where the kernel formats four lines instead of memory.stat's seventy.

    The same figure as memory.stat's ``total_active_file`` + ``total_inactive_file`` (both the lruvecs' counters,
    after the same flush), for the guard's reading of a v1 group at every tick (``linux.GroupMeter``). Raises
    ValueError when the line is not there.
    """
    at = text.find(b"hierarchical_file=")
    if at < 0:
        raise ValueError("no hierarchical_file line")
    start = at + 18
    end = text.find(b" ", start)  # the per-node counts (" N0=...") follow on the same line
    line_end = text.find(b"\n", start)
    if end < 0 or 0 <= line_end < end:
        end = line_end
    return int(text[start:end] if end >= 0 else text[start:])


def parse_limit_value(text: str) -> int | None:
    """Return a cgroup limit in bytes, or None for no limit ("max" in v2, a huge number in v1)."""
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= UNLIMITED_THRESHOLD else number


class PsiLine(namedtuple("PsiLine", "avg10 avg60 avg300 total_us")):
    """A pressure file's line: avg10, avg60, avg300 (float, %), total_us (int)."""

    __slots__ = ()


def parse_psi(text: str) -> dict[str, PsiLine]:
    """Return ``{"some": PsiLine, "full": PsiLine}`` from a pressure file."""
    out: dict[str, PsiLine] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = dict(pair.split("=", 1) for pair in pairs)
        out[kind] = PsiLine(
            float(values["avg10"]), float(values["avg60"]), float(values["avg300"]), int(values["total"])
        )
    if "some" not in out:
        raise ValueError("no 'some' line")
    return out


class CgroupEntry(namedtuple("CgroupEntry", "hierarchy controllers path")):
    """A line of /proc/PID/cgroup: hierarchy (int, 0 for v2), controllers (tuple of str), path (str)."""

    __slots__ = ()


def parse_proc_cgroup(text: str) -> list[CgroupEntry]:
    """Return the lines of /proc/PID/cgroup ("0::/path" is the v2 entry)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        hierarchy, controllers, path = line.split(":", 2)
        out.append(CgroupEntry(int(hierarchy), tuple(c for c in controllers.split(",") if c), path))
    return out


class CgroupMount(namedtuple("CgroupMount", "version root mountpoint options")):
    """A cgroup mount: version (1 or 2), root (the cgroup path mounted there: "/" unless a namespace or bind
    mount narrows it), mountpoint (str), options (tuple of str)."""

    __slots__ = ()


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """Return the cgroup and cgroup2 mounts listed in /proc/PID/mountinfo."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype = rfields[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        options = tuple(rfields[2].split(","))
        out.append(CgroupMount(2 if fstype == "cgroup2" else 1, root, mountpoint, options))
    return out


def parse_proc_limits(text: str) -> dict[str, int | None]:
    """Return soft limits from /proc/PID/limits: ``{"Max data size": bytes or None}``."""
    out: dict[str, int | None] = {}
    for line in text.splitlines()[1:]:
        # Names contain spaces; the soft limit is the first field after them.
        name = line[:26].strip()
        fields = line[26:].split()
        if not name or not fields:
            continue
        out[name] = None if fields[0] == "unlimited" else int(fields[0])
    return out


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return (
        path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
    )
