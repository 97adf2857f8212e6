"""The memory guard: keeps a kernel alive when memory runs out (fence + watchdog + error handling).

``get_guard(ip=None)`` returns the running shell's ``Guard`` (or None); the UX side (magics, explain,
namespace, reclaim, rendering) builds on it. See ``core`` for the mechanism and ``config`` for options.
"""

from __future__ import annotations

from .config import GuardSettings, SentinelGuard, resolve_settings
from .core import Guard, get_guard

__all__ = ["Guard", "GuardSettings", "SentinelGuard", "get_guard", "resolve_settings"]
