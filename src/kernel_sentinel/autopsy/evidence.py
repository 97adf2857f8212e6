"""Evidence of one kernel death: everything the autopsy saw, as a plain record (stored as JSON).

Gathered by the supervisor (exit status, rusage, OOM counter, kernel log, filesystems of mapped files) and
by the kernel itself (the flight record and the faulthandler file). ``from_dict(to_dict(e)) == e``, so the
samples under tests/samples/autopsy/ are real evidence that the pure classifier is tested on.
"""

from __future__ import annotations

import os
import re
import signal as _signal
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Evidence:
    """What is known about one kernel process's end. ``None`` always means "not known", never zero."""

    kernel_id: str
    pid: int | None = None
    supervisor_pid: int | None = None
    source: str = "supervisor"  # "supervisor" (saw the exit status) | "sweep" (found the record later)
    died_at: float | None = None
    exit_code: int | None = None  # the child's exit code, when it exited
    signal: int | None = None  # the signal that ended it, when one did
    inferred_signal: int | None = None  # a sweep's best knowledge when nobody saw the status
    ru_maxrss_bytes: int | None = None
    oom_kills_before: int | None = None
    oom_kills_after: int | None = None
    cgroup_path: str | None = None
    kernel_log: dict[str, Any] | None = None  # kmsg.kernel_log_evidence() output
    flight: dict[str, Any] = field(default_factory=dict)  # flight.read_record() regions
    fault_text: str | None = None  # faulthandler output
    disk: list[dict[str, Any]] = field(default_factory=list)  # filesystems of mapped files at death
    signals_received: list[dict[str, Any]] = field(default_factory=list)  # by the supervisor
    notes: list[str] = field(default_factory=list)  # what could not be learned, and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def shutdown_requested(self) -> bool:
        """Return True when the frontend asked this kernel to shut down or restart: no death then."""
        from .flight import shutdown_in_record  # the record's own rule; not imported with the evidence

        return shutdown_in_record(self.flight)


def signal_name(signum: int | None) -> str | None:
    """Return "SIGKILL" for 9 and so on (None for None, "SIG<n>" for numbers Python does not name)."""
    if signum is None:
        return None
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


_PATH_IN_CODE = re.compile(r"""(?:r|rb|br|f|fr|rf)?(["'])(?P<path>[^"'\n]{1,4096})\1""")


def candidate_files(flight: dict[str, Any]) -> list[str]:
    """Return files whose filesystem matters at a SIGBUS: the recorded memmaps, then paths the cell names.

    A memmap made and written within one sampling interval is not in the record; the cell's code usually
    names its file, so existing paths quoted in the code (relative to the kernel's cwd) are checked too.
    """
    out: list[str] = []
    for item in (flight.get("maps") or {}).get("files") or []:
        if item.get("path") and item["path"] not in out:
            out.append(item["path"])
    code = (flight.get("cell") or {}).get("code") or ""
    cwd = (flight.get("meta") or {}).get("cwd") or os.getcwd()
    for m in _PATH_IN_CODE.finditer(code):
        path = os.path.join(cwd, os.path.expanduser(m.group("path")))
        if os.path.isfile(path) and path not in out:
            out.append(path)
    return out


def filesystem_state(path: str) -> dict[str, Any] | None:
    """Return the free and total bytes of the filesystem holding ``path`` and the file's size, or None."""
    try:
        st = os.statvfs(path)
        size = os.stat(path).st_size
    except OSError:
        return None
    return {
        "path": path,
        "mount": _mount_point(path),
        "free_bytes": st.f_bavail * st.f_frsize,
        "total_bytes": st.f_blocks * st.f_frsize,
        "file_bytes": size,
    }


def _mount_point(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path
