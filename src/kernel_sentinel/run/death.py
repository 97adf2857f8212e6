"""What to say in a notebook cell when the kernel died running it. Pure functions of the evidence.

The autopsy's why-dict (DESIGN.md) is the explanation when it is there; otherwise the runner says what it
saw itself: the exit status, and whether the OOM-kill counter of the kernel's own cgroup went up.
"""

from __future__ import annotations

import html
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


def death_output(death: dict[str, Any]) -> dict[str, Any]:
    """Return a display_data output (text/plain + text/html) explaining the death, for the failed cell.

    An autopsy report is rendered by the autopsy's own notebook renderer (the same text users see after
    a restart in JupyterLab); the runner's note, or an autopsy without that renderer, by the code below.
    """
    if death.get("source") == "autopsy":
        try:
            from ..report.death_notebook import render_death_html, render_death_text

            return {
                "output_type": "display_data",
                "data": {"text/plain": render_death_text(death), "text/html": render_death_html(death)},
                "metadata": {"kernel_sentinel": {"death": True}},
            }
        except Exception:  # not landed, or it failed on this report: our own rendering below
            pass
    summary = str(death.get("summary") or "kernel died")
    cause = death.get("cause")
    remedy = death.get("remedy")
    where = death.get("cell") or {}
    lines = [summary]
    if cause:
        lines.append(f"cause: {cause}")
    if where.get("line"):
        lines.append(f"at line {where['line']} of this cell")
    mem = death.get("memory") or {}
    if mem.get("peak_bytes"):
        lines.append(
            f"memory just before: {format_bytes(mem.get('peak_bytes'))}"
            + (f" of a {format_bytes(mem['budget_bytes'])} budget" if mem.get("budget_bytes") else "")
        )
    if remedy:
        lines.append(f"what to do: {remedy}")
    if death.get("source") == "runner":
        lines.append("(observed by kernel-sentinel run; no autopsy record was available)")
    text = "\n".join(lines)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[1:])
    page = (
        '<div class="kernel-sentinel-death" style="border-left:4px solid #c62828;padding:6px 10px;'
        'background:#fdecea">'
        f"<b>{html.escape(summary)}</b><ul style='margin:4px 0'>{items}</ul></div>"
    )
    return {
        "output_type": "display_data",
        "data": {"text/plain": text, "text/html": page},
        "metadata": {"kernel_sentinel": {"death": True}},
    }
