"""Findings as plain text: take a list of ``Finding``, return the terminal report without colour (a notebook's text/plain)."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Finding
from .findings_terminal import render as render_terminal


def render(findings: Sequence[Finding], budget_bytes: int, budget_source: str, scope: int | str = 1) -> str:
    """Return the same report as plain text (for a notebook's text/plain output)."""
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    Console(file=buf, width=110, no_color=True, highlight=False, force_jupyter=False, force_terminal=False).print(
        render_terminal(findings, budget_bytes, budget_source, scope))
    return buf.getvalue()
