"""How much memory may a process use where Linux's files are not there (macOS, Windows, a hidden /proc).

Take a pid, return a ``MemorySnapshot`` whose one limit is psutil's view of RAM: no cgroups, no rlimits, no
pressure. The Linux reader (``reader.py``) hands over to this one; nothing here raises on a process that
cannot be read: the reading gets a note instead.
"""

from __future__ import annotations

import sys

from .model import Limit, MemorySnapshot, ProcessMemory


def portable_snapshot(pid: int, notes: list[str]) -> MemorySnapshot:
    """Return the memory picture psutil gives of ``pid``: the portable fallback of every reading."""
    import psutil  # only off Linux: the Linux reader never needs it

    rss = vms = peak = None
    try:
        info = psutil.Process(pid).memory_info()
        rss, vms, peak = info.rss, info.vms, getattr(info, "peak_wset", None)
    except (psutil.Error, OSError) as exc:
        notes.append(f"cannot read process {pid}: {exc}")
    available = psutil.virtual_memory().available
    process = ProcessMemory(pid, rss, None, vms, peak)
    limits = (Limit("system RAM", "system RAM", (rss or 0) + available, available),)
    return MemorySnapshot(pid, sys.platform, process, None, limits, None, tuple(notes))
