"""Evidence gathering after a kernel's end: take an ``Evidence`` and the home folder, add what the files say.

Shared by the three witnesses of a death (the supervisor, the sweep, the provisioner): the flight record
and faulthandler output, the kernel log for the pid and its memcg, the filesystems of mapped files; then
``finish`` classifies, explains and stores it (measure -> record; classify/explain stay pure).
"""

from __future__ import annotations

import sys
from pathlib import Path

TYPE_CHECKING = False  # typing only for annotations: the supervisor holds this module (in the kernel's memory group)
if TYPE_CHECKING:
    from typing import Any

from .flight import flight_dir, read_fault, read_record, record_paths


def gather_flight(ev: Any, home: Path, record: tuple[dict[str, Any], list[str]] | None = None) -> None:
    """Add the flight record and faulthandler output of ``ev.pid`` to the evidence (notes when missing).

    ``record``: ``read_record``'s answer for that record, read once the kernel had ended (it no longer changes).
    """
    rec, fault = record_paths(home, ev.kernel_id, ev.pid)
    flight, notes = record if record is not None else read_record(rec)
    notes = list(notes)
    if (flight.get("state") or {}).get("state") == "unloaded":
        # %unload_ext: what the record says about cells and memory is stale; keep only who the kernel was.
        flight = {k: v for k, v in flight.items() if k in ("meta", "state")}
        notes.append("the flight recorder had been unloaded (%unload_ext): the cell and memory are not known")
    ev.flight = flight
    ev.notes.extend(notes)
    ev.fault_text = read_fault(fault)
    if not ev.cgroup_path:
        ev.cgroup_path = (flight.get("meta") or {}).get("cgroup_path")


def gather_kernel_log(ev: Any, since_usec: int | None, cursor: Any = None) -> None:
    """Add what the kernel log says about ``ev.pid`` in its memcg (or why it could not be read)."""
    from .kmsg import kernel_log_evidence, parse_kmsg, read_kmsg

    raw, problem = cursor.read() if cursor is not None else read_kmsg()
    if problem:
        ev.notes.append(problem)
        return
    ev.kernel_log = kernel_log_evidence(parse_kmsg(raw), ev.pid, ev.cgroup_path, since_usec)


def gather_disk(ev: Any) -> None:
    """Add the free space of the filesystems of the files the kernel had mapped (for a SIGBUS)."""
    from .evidence import candidate_files, filesystem_state

    for path in candidate_files(ev.flight):
        state = filesystem_state(path)
        if state is not None:
            ev.disk.append(state)
    if not ev.disk:
        ev.notes.append("no memory-mapped file known: cannot tell whether a filesystem was full")


def finish(ev: Any, home: Path) -> dict[str, Any]:
    """Classify and explain the evidence, store the death, drop the flight files; return the report."""
    from ..store import Store, StoreError
    from .classify import classify
    from .explain import explain

    report = explain(ev, classify(ev))
    try:
        with Store(home / "store.db") as store:
            store.add_death(report, ev.to_dict(), died_at=ev.died_at)
    except StoreError as exc:
        report["evidence"]["notes"].append(str(exc))
        print(f"kernel-sentinel: {exc}", file=sys.stderr)
        return report  # keep the flight files: a later sweep may store it
    discard_flight(home, ev.kernel_id, ev.pid)
    return report


def discard_flight(home: Path, kernel_id: str, pid: int) -> None:
    """Remove a kernel process's flight files (record, faulthandler output, witness note): it is accounted for."""
    rec, fault = record_paths(home, kernel_id, pid)
    for path in (rec, fault, rec.with_suffix(".sup")):
        try:
            path.unlink()
        except OSError:
            pass
    try:
        flight_dir(home, kernel_id).rmdir()
    except OSError:
        pass


def boot_usec(started: float | None) -> int | None:
    """Return the kernel-log time (µs since boot) from which to read: 300 s before ``started`` (epoch s)."""
    if started is None:
        return None
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return max(0, int((started - int(line.split()[1]) - 300) * 1_000_000))
    except (OSError, ValueError):
        return None
    return None
