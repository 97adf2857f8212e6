"""``kernel-sentinel run``: headless notebook execution under the guard, with per-cell time and memory."""

from .execute import CellRun, RunOptions, RunResult, run_notebook
from .notebook import RunUsageError

__all__ = ["CellRun", "RunOptions", "RunResult", "RunUsageError", "run_notebook"]
