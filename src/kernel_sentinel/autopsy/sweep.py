"""The sweep: deaths nobody saw happen, found afterwards from the flight records they left behind.

Two kinds: a kernel whose supervisor was SIGKILLed (the child follows through PDEATHSIG; nothing of ours
survives to see the status; only SIGKILL ends a supervisor without a word, so that is the inferred signal),
and a kernel that ran the recorder without a supervisor (``%load_ext kernel_sentinel`` in a stock kernel:
no exit status at all, but the cell, the memory and the OOM counter/kernel log still tell a lot).

A record is NOT a death when the frontend asked for the shutdown (marked in the record), when the
connection file is gone (jupyter_client removes it on a requested shutdown), or when the supervisor's last
caught signal was an interrupt right before the end (jupyter_client's ``shutdown_kernel(now=True)`` and
``restart_kernel(now=True)`` interrupt, then kill the whole process group).
Run at supervisor start (same kernel id), at recorder load without a supervisor, and by ``why``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from .flight import read_record

JUPYTER_KILL_WINDOW = 0.6  # seconds between the last interrupt and the end that mean "jupyter_client's kill"


def sweep(home: str | os.PathLike[str], kernel_id: str | None = None) -> list[dict[str, Any]]:
    """Record the unseen deaths among the flight records (of ``kernel_id``, or all); return their reports."""
    home = Path(home)
    base = home / "flight"
    folders = [base / kernel_id] if kernel_id else (list(base.iterdir()) if base.is_dir() else [])
    reports = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for rec in folder.glob("*.rec"):
            try:
                report = _sweep_one(home, rec)
            except Exception:  # one bad record must not stop the others (or the caller)
                report = None
            if report is not None:
                reports.append(report)
    return reports


def _sweep_one(home: Path, rec: Path) -> dict[str, Any] | None:
    from .evidence import Evidence
    from .supervisor import discard_flight, finish, gather_disk, gather_flight, gather_kernel_log, oom_kill_counter

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
    if sup and _alive(sup, started, own=False):
        return None  # the supervisor sees the status and records it itself
    if _already_recorded(home, kernel_id, pid):
        discard_flight(home, kernel_id, pid)
        return None
    ev = Evidence(kernel_id=kernel_id, pid=pid, supervisor_pid=sup, source="sweep")
    gather_flight(ev, home)
    conn = meta.get("connection_file")
    if ev.shutdown_requested or (conn and not os.path.exists(conn)) or _killed_by_jupyter(rec, ev):
        discard_flight(home, kernel_id, pid)
        return None
    memory = ev.flight.get("memory") or {}
    ev.died_at = memory.get("t") or (ev.flight.get("cell") or {}).get("started") or rec.stat().st_mtime
    if sup:
        ev.inferred_signal = signal.SIGKILL
        ev.notes.append(
            f"the supervisor (pid {sup}) vanished without recording: only SIGKILL does that; its kernel was "
            "taken along by PDEATHSIG"
        )
    else:
        ev.notes.append("no supervisor saw the exit status (kernel not started with the sentinel kernelspec)")
    cg = memory.get("cgroup") or {}
    if cg.get("directory") and cg.get("oom_kills") is not None:
        ev.oom_kills_before = cg["oom_kills"]
        ev.oom_kills_after = oom_kill_counter(cg["directory"], cg.get("version"))
    if (ev.flight.get("state") or {}).get("state") == "exiting":
        ev.notes.append("the interpreter shut down normally (atexit ran) without a shutdown request")
    gather_kernel_log(ev, _boot_usec(started))
    if ev.kernel_log and ev.kernel_log.get("fault"):
        pass
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


def _killed_by_jupyter(rec: Path, ev: Any) -> bool:
    """Return True when the supervisor's last caught signal was SIGINT just before the kernel's last sign of life."""
    sup = rec.with_suffix(".sup")
    try:
        data = sup.read_bytes()
        mtime = sup.stat().st_mtime
    except OSError:
        return False
    first_line_end = data.find(b"\n") + 1
    caught = data[first_line_end:]
    if not caught or caught[-1] != signal.SIGINT:
        return False
    last_alive = (ev.flight.get("memory") or {}).get("t") or 0.0
    return mtime >= last_alive - JUPYTER_KILL_WINDOW


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


def _boot_usec(started: float | None) -> int | None:
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
