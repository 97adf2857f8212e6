"""How much memory may a process still use, and who says so.

``snapshot()`` reads it once; ``MemoryReader`` reads it again and again, cheaply;
``MemoryReader.quick()`` is the watchdog's per-tick reading. Private per-platform modules, psutil style:
``reader`` (Linux: /proc, cgroup v1/v2, rlimits, PSI), ``portable`` (psutil's view of RAM elsewhere),
``linux`` (the per-tick meters the guard and the runner share), ``cgroup`` (which memory cgroup, its
OOM-kill counter: light), ``parse`` (the files' formats).

The names below are imported when first asked for (PEP 562), not with the package: importing any submodule
imports this file first, and ``model``'s dataclasses and ``reader``'s imports cost ~45 ms of CPU, which the
supervisor (reading only ``cgroup``) and the kernel's flight recorder (``linux``) would pay while the kernel
starts.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~3 ms to import, and this file is on the way to every submodule
if TYPE_CHECKING:
    from typing import Any

    from .cgroup import oom_kill_counter
    from .model import CgroupMemory, Limit, MemorySnapshot, Pressure, ProcessMemory, QuickReading
    from .reader import MemoryReader, locate_cgroup, snapshot

_MODEL = ("CgroupMemory", "Limit", "MemorySnapshot", "Pressure", "ProcessMemory", "QuickReading")
_READER = ("MemoryReader", "locate_cgroup", "snapshot")

__all__ = [
    "CgroupMemory",
    "Limit",
    "MemoryReader",
    "MemorySnapshot",
    "Pressure",
    "ProcessMemory",
    "QuickReading",
    "locate_cgroup",
    "oom_kill_counter",
    "snapshot",
]


def __getattr__(name: str) -> Any:
    """Return the public name ``name`` from the submodule that defines it, imported now (and kept)."""
    if name in _MODEL:
        from . import model as source
    elif name in _READER:
        from . import reader as source
    elif name == "oom_kill_counter":
        from . import cgroup as source
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(source, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
