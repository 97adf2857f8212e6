"""What the Jupyter server itself can tell of a kernel's death: exit status, OOM-kill counter, last memory reading.

A kernel started without the sentinel kernelspec has no supervisor, so nobody but the server saw it end. The
server is its parent: it sees the return code, it read the kernel's memory cgroup (and its OOM-kill counter)
while the kernel ran, and reads the counter again at the death. That evidence goes through the autopsy's own
classifier and explainer, so the report has the ``why --json`` shape and the same rules (OOM only with proof);
the remedy adds how to get the full explanation. The same path explains a sentinel kernel's death when its
own record never arrives (store unreachable): what the server saw is still better than nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..autopsy.classify import classify
from ..autopsy.evidence import Evidence
from ..autopsy.explain import explain

SENTINEL_HINT = (
    "For the full explanation (the cell, its line, the memory it used) and a guard that turns such a cell into "
    "a MemoryError, install the sentinel kernel (`kernel-sentinel install`) and use it for this notebook."
)
SOURCE = "server"  # Evidence.source of a death seen by the Jupyter server


@dataclass(frozen=True)
class DeathSeen:
    """What the server saw of one kernel process's end (plain data: made on the event loop, read in a thread)."""

    kernel_id: str
    pid: int
    returncode: int | None
    died_at: float
    started_at: float | None = None  # when the server first saw this process alive
    oom_kills_before: int | None = None  # the kernel's memory cgroup's counter, last read while it ran
    oom_kills_after: int | None = None  # the same counter, read at the death
    memory: dict[str, Any] | None = None  # the last memory reading, in the flight record's "memory" shape
    sentinel: bool = False  # started through the sentinel launcher or provisioner: its own report is coming
    where: tuple[tuple[str, str], ...] = ()  # server, kernel_name, notebook: kept with the stored report
    notes: tuple[str, ...] = field(default=())


# The flight record's "memory" region keeps these of the kernel's memory cgroup (autopsy/recorder.py).
CGROUP_KEYS = ("path", "directory", "version", "limit_bytes", "usage_bytes", "peak_bytes", "oom_kills")


def memory_record(snap: Any) -> dict[str, Any]:
    """Return a ``MemorySnapshot`` in the flight record's ``memory`` shape, so the explainer reads it alike."""
    return {
        "t": time.time(),
        "budget_bytes": snap.budget_bytes,
        "source": snap.source,
        "rss_bytes": snap.process.rss_bytes,
        "peak_rss_bytes": snap.process.peak_rss_bytes,
        "cgroup": None if snap.cgroup is None else {k: getattr(snap.cgroup, k) for k in CGROUP_KEYS},
    }


def stock_evidence(seen: DeathSeen) -> Evidence:
    """Return the autopsy's evidence record for what the server saw (pure)."""
    ev = Evidence(kernel_id=seen.kernel_id, pid=seen.pid, source=SOURCE, died_at=seen.died_at)
    if seen.returncode is not None:
        if seen.returncode < 0:
            ev.signal = -seen.returncode
        else:
            ev.exit_code = seen.returncode
    ev.oom_kills_before = seen.oom_kills_before
    ev.oom_kills_after = seen.oom_kills_after
    if seen.memory:
        ev.flight = {"memory": dict(seen.memory)}
        ev.cgroup_path = (seen.memory.get("cgroup") or {}).get("path")
    ev.notes.append(
        "seen by the Jupyter server only (the kernel's parent): exit status and memory cgroup, no cell or line"
        if not seen.sentinel
        else "the sentinel kernel's own record did not arrive; this is what the Jupyter server saw"
    )
    ev.notes.extend(seen.notes)
    return ev


def stock_report(ev: Evidence) -> dict[str, Any]:
    """Return the why-report of a death the server saw: the autopsy's explanation, remedy leading to the sentinel."""
    report = explain(ev, classify(ev))
    if report["cause"] == "unknown":
        report["remedy"] = SENTINEL_HINT
    else:
        report["remedy"] = f"{report['remedy']} {SENTINEL_HINT}"
    report["sentinel"] = False
    return report


def with_where(report: dict[str, Any], where: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Return the report with the server, kernel name and notebook it ran in, where the report has none."""
    return {**report, **{k: v for k, v in where if v and not report.get(k)}}


def record_stock_death(seen: DeathSeen, home: Path) -> dict[str, Any] | None:
    """Explain and store a death the server saw; return its report (None when it was a requested shutdown).

    A stock kernel that loaded the recorder (``%load_ext kernel_sentinel``) left a flight record: it is read,
    so the cell and line come back too. Runs in a worker thread: it reads files and writes the store.
    """
    from ..store import Store, StoreError
    from ..autopsy.gather import discard_flight
    from .autopsy_io import gather_flight, gather_kernel_log

    ev = stock_evidence(seen)
    had_memory = ev.flight.get("memory")
    gather_flight(ev, home)
    if ev.shutdown_requested:
        discard_flight(home, ev.kernel_id, seen.pid)
        return None
    if had_memory and not ev.flight.get("memory"):
        ev.flight["memory"] = had_memory
    if ev.signal is not None:
        gather_kernel_log(ev, seen.started_at)
    report = with_where(stock_report(ev), seen.where)
    try:
        with Store(home / "store.db") as store:
            death_id = store.add_death(report, ev.to_dict(), died_at=ev.died_at)
    except StoreError as exc:
        report["evidence"]["notes"].append(str(exc))
        return report
    discard_flight(home, ev.kernel_id, seen.pid)
    report["death_id"] = death_id
    return report
