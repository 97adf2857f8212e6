"""The sweep: flight records nobody accounted for, found afterwards and settled.

A kernel that ran the recorder without a supervisor (``%load_ext kernel_sentinel`` in a stock kernel) has
no witness of its end: its death is recorded from the record alone (no exit status, but the cell, the memory,
and the OOM counter/kernel log still tell a lot).

A supervised kernel's death is recorded by its supervisor, or by the supervisor's witness when the supervisor
itself was SIGKILLed. A supervised record left with supervisor and witness both gone and no death stored is
a SIGKILL of the whole process group: jupyter_client's forced shutdown/restart (``now=True``), which was
asked for. It is dropped, as is every record marked as a requested shutdown, or whose connection file is
gone (jupyter_client removes it on a requested shutdown).
Run at supervisor start, at recorder load without a supervisor, and by ``why``/``deaths``/``death_report``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .flight import flight_dir, read_record


def sweep(
    home: str | os.PathLike[str], kernel_id: str | None = None, *, skip_pids: frozenset[int] = frozenset()
) -> list[dict[str, Any]]:
    """Record the unseen deaths among the flight records (of ``kernel_id``, or all); return their reports.

    ``skip_pids``: kernels whose end someone else records (a supervisor's own child: dead but not yet reaped, it
    looks like an unseen death, and with its record's meta region unreadable the sweep stored an "unknown" death
    before the supervisor could store the real one).
    """
    home = Path(home)
    base = home / "flight"
    folders = [flight_dir(home, kernel_id)] if kernel_id else (list(base.iterdir()) if base.is_dir() else [])
    reports = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for rec in folder.glob("*.rec"):
            if rec.stem.isdigit() and int(rec.stem) in skip_pids:
                continue
            try:
                report = _sweep_one(home, rec)
            except Exception:  # one bad record must not stop the others (or the caller)
                report = None
            if report is not None:
                reports.append(report)
    return reports


def _sweep_one(home: Path, rec: Path) -> dict[str, Any] | None:
    from .evidence import Evidence
    from ..memory import oom_kill_counter
    from .gather import boot_usec, discard_flight, finish, gather_disk, gather_flight, gather_kernel_log

    if not rec.stem.isdigit():
        return None
    pid = int(rec.stem)
    flight, _ = read_record(rec)
    meta = flight.get("meta") or {}
    kernel_id = meta.get("kernel_id") or rec.parent.name
    started = meta.get("started")
    if _alive(pid, started, own=True):
        return None
    sup = meta.get("supervisor_pid")
    if sup and (_alive(sup, started, own=False) or _witness_alive(rec, started)):
        return None  # the supervisor (or its witness) sees the end and records it itself
    if _already_recorded(home, kernel_id, pid):
        discard_flight(home, kernel_id, pid)
        return None
    if sup:  # supervisor and witness gone, nothing recorded: the whole group was killed on request
        discard_flight(home, kernel_id, pid)
        return None
    ev = Evidence(kernel_id=kernel_id, pid=pid, supervisor_pid=sup, source="sweep")
    gather_flight(ev, home)
    conn = meta.get("connection_file")
    if ev.shutdown_requested or (conn and not os.path.exists(conn)):
        discard_flight(home, kernel_id, pid)
        return None
    memory = ev.flight.get("memory") or {}
    ev.died_at = memory.get("t") or (ev.flight.get("cell") or {}).get("started") or rec.stat().st_mtime
    ev.notes.append("no supervisor saw the exit status (kernel not started with the sentinel kernelspec)")
    cg = memory.get("cgroup") or {}
    if cg.get("directory") and cg.get("oom_kills") is not None:
        ev.oom_kills_before = cg["oom_kills"]
        ev.oom_kills_after = oom_kill_counter(cg["directory"], cg.get("version"))
    if (ev.flight.get("state") or {}).get("state") == "exiting":
        ev.notes.append("the interpreter shut down normally (atexit ran) without a shutdown request")
    gather_kernel_log(ev, boot_usec(started))
    if ev.fault_text:
        gather_disk(ev)
    return finish(ev, home)


def _already_recorded(home: Path, kernel_id: str, pid: int) -> bool:
    from ..store import Store, StoreError

    try:
        with Store(home / "store.db", create=False) as store:
            return store.has_death(kernel_id, pid)
    except StoreError:
        return False


def _witness_alive(rec: Path, started: float | None) -> bool:
    try:
        _sup, witness = (int(x) for x in rec.with_suffix(".sup").read_text().split()[:2])
    except (OSError, ValueError):
        return False
    return _alive(witness, started, own=False)


def _alive(pid: int, started: float | None, *, own: bool) -> bool:
    """Return True if ``pid`` runs and is the same process (not a reused pid), judged by its start time."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except Exception:
        return False
    if started is None:
        return True
    if own:  # the kernel started shortly before its recorder wrote "started"
        return started - 300 <= created <= started + 1
    return created <= started + 1  # the supervisor started before its kernel
