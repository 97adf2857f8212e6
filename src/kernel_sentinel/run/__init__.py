"""``kernel-sentinel run``: headless notebook execution under the guard, with per-cell time and memory.

Names are imported on first use: ``kernel-sentinel`` registers this subcommand at every start, and
nbformat/nbclient cost ~0.3 s to import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CellRun", "RunOptions", "RunResult", "RunUsageError", "run_notebook"]


def __getattr__(name: str) -> Any:
    if name == "RunUsageError":
        from .notebook import RunUsageError

        return RunUsageError
    if name in ("CellRun", "RunOptions", "RunResult", "run_notebook"):
        from . import execute

        return getattr(execute, name)
    raise AttributeError(name)
