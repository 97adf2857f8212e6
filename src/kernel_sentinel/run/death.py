"""The runner's own death note: take the kernel's exit status and its cgroup's OOM count, return a death record.

The autopsy's why-dict (DESIGN.md) is the explanation when it is there; otherwise the runner says what it
saw itself: the exit status, and whether the OOM-kill counter of the kernel's own cgroup went up.
``report/death_notebook.py`` renders either into the failed cell.
"""

from __future__ import annotations

import signal
from typing import Any

from ..sizes import format_bytes


def describe_status(status: int | None) -> str:
    """Return "SIGKILL (exit status -9)" / "exit code 3" / "unknown exit status" for a Popen returncode."""
    if status is None:
        return "unknown exit status"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"{name} (exit status {status})"
    return f"exit code {status}"


def exit_dict(status: int | None) -> dict[str, Any] | None:
    """Return DESIGN.md's ``exit`` shape: ``{"signal": "SIGKILL"}`` or ``{"code": N}``; None if unknown."""
    if status is None:
        return None
    if status < 0:
        try:
            return {"signal": signal.Signals(-status).name}
        except ValueError:
            return {"signal": f"signal {-status}"}
    return {"code": status}


def runner_death(
    status: int | None,
    *,
    oom_kills: int | None,
    limit_bytes: int | None,
    peak_bytes: int | None,
    cell_execution_count: int | None,
) -> dict[str, Any]:
    """Return the runner's own death note (used until / unless the autopsy recorded the death).

    It claims only what it saw: the status from the kernel process, the cgroup's OOM-kill counter.
    """
    summary = f"kernel died: {describe_status(status)}"
    remedy = None
    if oom_kills:
        summary += (
            f"; the OOM killer of its memory cgroup ({format_bytes(limit_bytes)} limit) killed it"
            + (f" at {format_bytes(peak_bytes)}" if peak_bytes else "")
        )
        remedy = "make the cell use less memory (load fewer columns or rows, work in chunks) or raise --memory-limit"
    return {
        "source": "runner",
        "summary": summary,
        "exit": exit_dict(status),
        "oom_kills": oom_kills,
        "cell": {"execution_count": cell_execution_count},
        "memory": {"budget_bytes": limit_bytes, "peak_bytes": peak_bytes},
        "remedy": remedy,
    }
