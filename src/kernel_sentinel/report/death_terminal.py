"""A death on a terminal: take a ``DeathReport``, return a rich panel (``kernel-sentinel why``)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..records import DeathReport
from . import plain
from .death_text import facts as fact_lines


def render(report: DeathReport | dict[str, Any]) -> Panel:
    """Return a panel: summary, facts, the cell with its line marked, the remedy, the evidence it rests on."""
    report = plain(report)
    parts: list[Any] = [Text(report.get("summary", ""), style="bold")]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("kernel", str(report.get("kernel_id")))
    if report.get("died_at_iso"):
        facts.add_row("died", str(report["died_at_iso"]))
    for key, value in fact_lines(report):
        facts.add_row(key, value)
    parts.append(facts)
    cell = report.get("cell") or {}
    if cell.get("code"):
        line = cell.get("line")
        parts.append(
            Syntax(
                cell["code"],
                "python",
                line_numbers=True,
                highlight_lines={line} if line else set(),
                line_range=(max(1, (line or 1) - 5), (line or 1) + 5) if line else (1, 12),
                theme="ansi_dark",
            )
        )
    parts.append(Text.assemble(("What to do: ", "bold green"), report.get("remedy", "")))
    evidence = report.get("evidence") or {}
    proof = evidence.get("proof") or []
    notes = evidence.get("notes") or []
    if proof or notes:
        ev = Text()
        for p in proof:
            ev.append(f"• {p}\n", style="dim")
        for n in notes:
            ev.append(f"• {n}\n", style="yellow")
        parts.append(ev)
    return Panel(Group(*parts), title=f"[bold red]{report.get('cause')}[/]", title_align="left", expand=False)
