"""A death as plain text: take a ``DeathReport``, return the explanation a text/plain reader shows."""

from __future__ import annotations

from typing import Any

from ..records import DeathReport, format_bytes
from . import plain

_CAUSE_TITLE = {
    "oom_kill": "out of memory (OOM kill)",
    "external_kill": "killed from outside",
    "segfault": "segmentation fault",
    "abort": "abort",
    "bus_error": "bus error",
    "illegal_instruction": "illegal instruction",
    "fpe": "arithmetic fault",
    "exit": "exit",
    "unknown": "unknown cause",
}


def title(report: dict[str, Any]) -> str:
    """Return the one-line title: the previous kernel died, of what."""
    return f"kernel-sentinel: the previous kernel died: {_CAUSE_TITLE.get(report.get('cause', ''), report.get('cause'))}"


def facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (label, value) lines: the cell and line, the exit, the native frame, the memory."""
    facts = []
    cell = report.get("cell") or {}
    if cell:
        where = f"[{cell.get('execution_count')}]"
        if cell.get("line") is not None:
            where += f", line {cell['line']}"
        facts.append(("cell", where + ("" if cell.get("running") else " (finished; kernel idle)")))
    exit_ = report.get("exit") or {}
    if "signal" in exit_:
        facts.append(("exit", exit_["signal"] + (" (inferred)" if exit_.get("inferred") else "")))
    elif "code" in exit_:
        facts.append(("exit", f"code {exit_['code']}"))
    fault = (report.get("evidence") or {}).get("faulthandler") or []
    if len(fault) > 1 and report.get("native_module"):
        facts.append(("native", f"{report['native_module']}: {fault[1].strip()}"))
    mem = report.get("memory") or {}
    if mem.get("peak_bytes") or mem.get("budget_bytes"):
        facts.append(
            ("memory", f"peak RSS {format_bytes(mem.get('peak_bytes'))}; budget {format_bytes(mem.get('budget_bytes'))} ({mem.get('source')})")
        )
    return facts


def code_excerpt(report: dict[str, Any], limit: int = 12) -> list[str]:
    """Return the cell's first ``limit`` lines, numbered, the line it died on marked ``->``."""
    cell = report.get("cell") or {}
    code = cell.get("code") or ""
    lines = code.splitlines()
    line = cell.get("line")
    out = []
    for i, text in enumerate(lines[:limit], start=1):
        mark = "->" if i == line else "  "
        out.append(f"{mark} {i:>3} {text}")
    if len(lines) > limit:
        out.append(f"   ... ({len(lines) - limit} more lines)")
    return out


def render(report: DeathReport | dict[str, Any]) -> str:
    """Return the plain-text explanation (what a terminal frontend or a text/plain reader shows)."""
    report = plain(report)
    parts = [title(report), report.get("summary", "")]
    parts += [f"  {k}: {v}" for k, v in facts(report)]
    parts += code_excerpt(report)
    parts.append(f"What to do: {report.get('remedy', '')}")
    parts.append(f"(kernel-sentinel why {report.get('kernel_id')} has the details)")
    return "\n".join(p for p in parts if p)
