"""How much memory may a process still use, and who says so.

``snapshot()`` reads it once; ``MemoryReader`` reads it again and again, cheaply;
``MemoryReader.quick()`` is the watchdog's per-tick reading. Private per-platform modules, psutil style:
``reader`` (Linux: /proc, cgroup v1/v2, rlimits, PSI), ``portable`` (psutil's view of RAM elsewhere),
``linux`` (the per-tick meters the guard and the runner share), ``parse`` (the files' formats).
"""

from .model import CgroupMemory, Limit, MemorySnapshot, Pressure, ProcessMemory, QuickReading
from .reader import MemoryReader, locate_cgroup, oom_kill_counter, snapshot

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
