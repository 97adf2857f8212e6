"""Findings on a terminal: take a list of ``Finding``, return a rich renderable (where, what, how big, the fix)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.text import Text

from ..records import Finding, format_bytes


def render(findings: Sequence[Finding], budget_bytes: int, budget_source: str, files: int | str) -> Group:
    """Return a renderable: one block per finding, then a one-line summary.

    ``files`` is how many files were checked, or a phrase for what was (``"this session"``).
    """
    parts: list[Text] = []
    for f in findings:
        head = Text()
        head.append(f.where, style="bold")
        head.append("  ")
        head.append(f.kind, style="bold red" if f.severity == "error" else "bold yellow")
        if f.estimate_bytes is not None:
            head.append(f"  ~{format_bytes(f.estimate_bytes)}", style="bold")
        parts.append(head)
        if f.code:
            parts.append(Text(f"    {f.code}", style="cyan"))
        parts.append(Text(f"    {f.message}"))
        parts.append(Text(f"    fix: {f.remedy}", style="green"))
        if f.basis:
            parts.append(Text(f"    estimate: {f.basis}", style="dim"))
        parts.append(Text(""))
    summary = Text()
    n_err = sum(1 for f in findings if f.severity == "error")
    if findings:
        summary.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ", style="bold")
        summary.append(f"({n_err} error{'s' if n_err != 1 else ''}, {len(findings) - n_err} warning"
                       f"{'s' if len(findings) - n_err != 1 else ''}) ")
    else:
        summary.append("No kernel killers found ", style="bold green")
    scope = files if isinstance(files, str) else f"{files} file{'s' if files != 1 else ''}"
    summary.append(f"in {scope}; budget {format_bytes(budget_bytes)} ({budget_source}).")
    parts.append(summary)
    return Group(*parts)
