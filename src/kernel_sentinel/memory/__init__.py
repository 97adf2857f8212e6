"""How much memory may a process still use, and who says so.

``snapshot()`` reads it once; ``MemoryReader`` reads it again and again, cheaply, for a watchdog.
"""

from .model import CgroupMemory, Limit, MemorySnapshot, Pressure, ProcessMemory
from .reader import MemoryReader, locate_cgroup, snapshot

__all__ = [
    "CgroupMemory",
    "Limit",
    "MemoryReader",
    "MemorySnapshot",
    "Pressure",
    "ProcessMemory",
    "locate_cgroup",
    "snapshot",
]
