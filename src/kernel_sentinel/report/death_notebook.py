"""A death's why-report for the notebook: text/plain and text/html, shown once after the restart."""

from __future__ import annotations

import html
from typing import Any

from ..sizes import format_bytes

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


def _title(report: dict[str, Any]) -> str:
    return f"kernel-sentinel: the previous kernel died: {_CAUSE_TITLE.get(report.get('cause', ''), report.get('cause'))}"


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
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


def _code_excerpt(report: dict[str, Any], limit: int = 12) -> list[str]:
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


def render_death_text(report: dict[str, Any]) -> str:
    """Return the plain-text explanation (what a terminal frontend or a text/plain reader shows)."""
    parts = [_title(report), report.get("summary", "")]
    parts += [f"  {k}: {v}" for k, v in _facts(report)]
    parts += _code_excerpt(report)
    parts.append(f"What to do: {report.get('remedy', '')}")
    parts.append(f"(kernel-sentinel why {report.get('kernel_id')} has the details)")
    return "\n".join(p for p in parts if p)


def render_death_html(report: dict[str, Any]) -> str:
    """Return the HTML explanation (JupyterLab, Notebook 7, VS Code render this one)."""
    e = html.escape
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(report))
    code = "\n".join(_code_excerpt(report))
    code_html = f"<pre style='margin:0.4em 0'>{e(code)}</pre>" if code else ""
    return (
        "<div class='kernel-sentinel-death' style='border-left:4px solid #c0392b;padding:0.4em 0.8em;"
        "background:rgba(192,57,43,0.06)'>"
        f"<b>{e(_title(report))}</b>"
        f"<p style='margin:0.4em 0'>{e(report.get('summary', ''))}</p>"
        f"<table style='margin:0'>{rows}</table>{code_html}"
        f"<p style='margin:0.4em 0'><b>What to do:</b> {e(report.get('remedy', ''))}</p>"
        f"<p style='margin:0;opacity:0.7'><code>kernel-sentinel why {e(str(report.get('kernel_id')))}</code> has the details.</p>"
        "</div>"
    )
