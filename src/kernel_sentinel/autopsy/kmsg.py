"""The kernel log: what the OS said about one of our processes (OOM kills, segfault and trap lines).

``read_kmsg()`` reads ``/dev/kmsg`` non-blocking (root or CAP_SYSLOG only; ``dmesg_restrict=1`` here) and
returns the raw records; ``parse_kmsg()`` and ``kernel_log_evidence()`` are pure and tested on captured
lines. The log belongs to the whole machine: a record counts only when it names our pid AND (for OOM
kills) our memory cgroup, and was written after our process started. Never match on the process name.
"""

from __future__ import annotations

import os

# The supervisor opens a cursor (``KmsgCursor``, ``boot_usec_of``) while its kernel starts: re, dataclasses and
# typing cost it ~15-25 ms of CPU there, taken from the kernel's start. The parser's patterns are compiled on
# first use (after a death, or in a sweep) and ``KmsgRecord`` is a plain class.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class KmsgRecord:
    """One /dev/kmsg record: ``prio,seq,usec_since_boot,flags;text`` (immutable, compared by value)."""

    __slots__ = ("seq", "usec", "text")

    def __init__(self, seq: int, usec: int, text: str) -> None:
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "usec", usec)
        object.__setattr__(self, "text", text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"KmsgRecord is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.seq, self.usec, self.text) == (other.seq, other.usec, other.text)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.seq, self.usec, self.text))

    def __repr__(self) -> str:
        return f"KmsgRecord(seq={self.seq!r}, usec={self.usec!r}, text={self.text!r})"


class KmsgCursor:
    """/dev/kmsg opened now and positioned at its end: ``read()`` later returns only what came after.

    The supervisor opens one when the kernel starts, so that at its death it reads a handful of new
    records instead of the whole ring buffer.
    """

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.problem: str | None = None
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            self.problem = f"kernel log {path} not readable ({exc.strerror or exc}; needs root or CAP_SYSLOG)"
            self.close()

    def read(self) -> tuple[list[str], str | None]:
        """Return (the records written since the cursor was made, or why there are none)."""
        if self._fd is None:
            return [], self.problem or "kernel log closed"
        try:
            return _drain(self._fd, 20000)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def read_kmsg(path: str = "/dev/kmsg", max_records: int = 20000) -> tuple[list[str], str | None]:
    """Return (raw records in the kernel's ring buffer, None) or ([], why it could not be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return [], f"kernel log {path} not readable ({exc.strerror or exc}; needs root or CAP_SYSLOG)"
    try:
        return _drain(fd, max_records)
    finally:
        os.close(fd)


def _drain(fd: int, max_records: int) -> tuple[list[str], str | None]:
    records: list[str] = []
    while len(records) < max_records:
        try:
            chunk = os.read(fd, 8192)  # one record per read()
        except BlockingIOError:
            break
        except BrokenPipeError:  # the ring buffer overwrote what we were about to read: go on
            continue
        except OSError as exc:
            return records, f"kernel log read failed: {exc.strerror or exc}"
        if not chunk:
            break
        records.append(chunk.decode("utf-8", "replace"))
    return records, None


def parse_kmsg(raw: list[str]) -> list[KmsgRecord]:
    """Return the records' sequence, time and text (continuation ``KEY=value`` lines dropped)."""
    out = []
    for item in raw:
        head, sep, text = item.partition(";")
        if not sep:
            continue
        fields = head.split(",")
        if len(fields) < 3:
            continue
        try:
            seq, usec = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        out.append(KmsgRecord(seq, usec, text.split("\n", 1)[0]))
    return out


_PATTERNS: dict[str, Any] = {}


def _patterns() -> dict[str, Any]:
    """Return the log lines' compiled patterns, compiled on the first call: ``re`` is not imported before it."""
    if not _PATTERNS:
        import re

        _PATTERNS.update(
            oom_kill=re.compile(r"oom-kill:(?P<fields>\S+)"),
            killed=re.compile(
                r"(?P<kind>Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?): "
                r"Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)(?P<rest>.*)"
            ),
            segv=re.compile(r"^(?P<comm>.+?)\[(?P<pid>\d+)\]: segfault at (?P<addr>\S+) ip (?P<ip>\S+)"),
            trap=re.compile(r"^traps: (?P<comm>.+?)\[(?P<pid>\d+)\] (?P<what>.+?) ip:(?P<ip>\S+)"),
            lib=re.compile(r" in (?P<lib>[^\[\s]+)\["),
            kb=re.compile(r"(?P<key>[a-z_-]+):(?P<kb>\d+)kB"),
        )
    return _PATTERNS


def kernel_log_evidence(
    records: list[KmsgRecord], pid: int, memcg: str | None, since_usec: int | None = None
) -> dict[str, Any]:
    """Return what the log says about ``pid``: an OOM kill (only when pid and memcg both match), a fault line.

    ``memcg`` is the process's memory cgroup path as in /proc/PID/cgroup (e.g. ``/process_api/x/ks-1``);
    None accepts no OOM record (we cannot prove it was ours). ``since_usec`` drops records written before
    the process started (pids are reused).
    """
    pat = _patterns()
    out: dict[str, Any] = {"lines": []}
    for rec in records:
        if since_usec is not None and rec.usec < since_usec:
            continue
        text = rec.text
        m = pat["oom_kill"].search(text)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group("fields").split(",") if "=" in kv)
            if fields.get("pid") == str(pid) and memcg is not None and _same_cgroup(fields.get("task_memcg"), memcg):
                constraint = fields.get("constraint", "")
                out["oom"] = {
                    "constraint": constraint,
                    "scope": "cgroup" if constraint == "CONSTRAINT_MEMCG" else "system",
                    "oom_memcg": fields.get("oom_memcg"),
                    "task_memcg": fields.get("task_memcg"),
                    "usec": rec.usec,
                }
                out["lines"].append(text)
            continue
        m = pat["killed"].search(text)
        if m and int(m.group("pid")) == pid and "oom" in out:
            sizes = {k.group("key"): int(k.group("kb")) * 1024 for k in pat["kb"].finditer(m.group("rest"))}
            out["oom"]["killed"] = {"comm": m.group("comm"), **{k.replace("-", "_"): v for k, v in sizes.items()}}
            out["lines"].append(text)
            continue
        m = pat["segv"].search(text)
        if m and int(m.group("pid")) == pid:
            out["fault"] = {"kind": "segfault", "address": m.group("addr"), "library": _library(text)}
            out["lines"].append(text)
            continue
        m = pat["trap"].search(text)
        if m and int(m.group("pid")) == pid:
            out["fault"] = {"kind": m.group("what").strip(), "library": _library(text)}
            out["lines"].append(text)
    return out


def _library(text: str) -> str | None:
    m = _patterns()["lib"].search(text)
    return m.group("lib") if m else None


def _same_cgroup(logged: str | None, ours: str) -> bool:
    if not logged:
        return False
    return logged.rstrip("/") == ours.rstrip("/")


def boot_usec_of(pid: int, proc: str = "/proc") -> int | None:
    """Return when ``pid`` started, in microseconds since boot (the clock /dev/kmsg uses), or None."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            stat = f.read()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return ticks * 1_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
