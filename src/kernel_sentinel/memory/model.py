"""What a memory reading holds: plain frozen records, safe to pass between threads and to serialise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Limit:
    """One thing that caps this process's memory, and how much more it allows.

    ``limit_bytes`` is the cap as a total (the cgroup's limit, the rlimit, or for system RAM what the
    process holds now plus what the machine still has available); ``available_bytes`` is the headroom
    left under it. The tightest limit is the one with the least headroom.
    """

    kind: str  # "cgroup v1" | "cgroup v2" | "system RAM" | "rlimit"
    source: str  # e.g. "cgroup v1 /user.slice/x", "system RAM", "rlimit RLIMIT_DATA"
    limit_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class ProcessMemory:
    """The process's own footprint, from /proc/PID/status (or psutil off Linux)."""

    pid: int
    rss_bytes: int | None
    vm_data_bytes: int | None
    vm_size_bytes: int | None
    peak_rss_bytes: int | None
    stack_bytes: int | None = None  # VmStk: the main thread's stack (None off Linux)


@dataclass(frozen=True)
class CgroupMemory:
    """The memory cgroup the process runs in: its usage, working set, peak and OOM kills."""

    version: int  # 1 or 2
    path: str  # as in /proc/PID/cgroup, e.g. "/process_api/abc"
    directory: str  # where its files are
    limit_bytes: int | None  # tightest limit on it or a visible ancestor; None: unlimited
    limit_path: str | None  # the group that sets that limit
    usage_bytes: int | None
    working_set_bytes: int | None  # usage minus inactive_file (kubelet's definition)
    peak_bytes: int | None
    oom_kills: int | None  # v1: this group only; v2: this group and its descendants
    # usage minus the page cache the kernel drops before an OOM kill (clean, unmapped file pages on either
    # LRU list): what the budget's headroom is measured against
    in_use_bytes: int | None = None


@dataclass(frozen=True)
class Pressure:
    """Memory pressure stall information (PSI): share of time tasks waited for memory."""

    source: str  # the file it came from
    some_avg10: float
    some_avg60: float
    full_avg10: float | None
    full_avg60: float | None
    some_total_us: int


@dataclass(frozen=True)
class QuickReading:
    """The watchdog's per-tick reading: own footprint and headroom under the limits last seen."""

    rss_bytes: int | None
    vm_data_bytes: int | None
    available_bytes: int | None  # least headroom across the limits of the last full snapshot
    source: str  # which limit that is
    working_set_bytes: int | None  # in-use bytes of the group that sets the tightest cgroup limit, if any


@dataclass(frozen=True)
class MemorySnapshot:
    """Everything the budget reader learned in one look, plus what it could not learn (``notes``)."""

    pid: int
    platform: str
    process: ProcessMemory
    cgroup: CgroupMemory | None
    limits: tuple[Limit, ...]
    pressure: Pressure | None
    notes: tuple[str, ...] = field(default=())

    @property
    def budget(self) -> Limit | None:
        """The tightest limit: least headroom wins, the first listed on a tie."""
        return min(self.limits, key=lambda lim: lim.available_bytes) if self.limits else None

    @property
    def budget_bytes(self) -> int | None:
        return self.budget.limit_bytes if self.budget else None

    @property
    def available_bytes(self) -> int | None:
        return self.budget.available_bytes if self.budget else None

    @property
    def source(self) -> str:
        return self.budget.source if self.budget else "unknown"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: the tightest budget at the top level, the details beside it."""
        data = asdict(self)
        data["limits"] = [asdict(lim) for lim in self.limits]
        data["notes"] = list(self.notes)
        return {
            "pid": self.pid,
            "budget_bytes": self.budget_bytes,
            "available_bytes": self.available_bytes,
            "source": self.source,
            **{k: data[k] for k in ("platform", "process", "cgroup", "pressure", "limits", "notes")},
        }
