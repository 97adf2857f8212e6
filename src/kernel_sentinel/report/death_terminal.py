"""A death's why-report, and the list of recent deaths, for the terminal (rich renderables)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..sizes import format_bytes
from .death_notebook import _facts


def render_death(report: dict[str, Any]) -> Panel:
    """Return a panel: summary, facts, the cell with its line marked, the remedy, the evidence it rests on."""
    parts: list[Any] = [Text(report.get("summary", ""), style="bold")]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("kernel", str(report.get("kernel_id")))
    if report.get("died_at_iso"):
        facts.add_row("died", str(report["died_at_iso"]))
    for key, value in _facts(report):
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


def render_deaths(rows: list[dict[str, Any]]) -> Table:
    """Return a table of recent deaths, newest first."""
    table = Table(title="Recent kernel deaths")
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("kernel", no_wrap=True, max_width=14)
    table.add_column("what", overflow="fold")
    table.add_column("exit", no_wrap=True)
    table.add_column("cell", no_wrap=True)
    table.add_column("running", overflow="ellipsis", no_wrap=True, max_width=40)
    table.add_column("peak", no_wrap=True, justify="right")
    for row in rows:
        report = row["report"]
        exit_ = report.get("exit") or {}
        cell = report.get("cell") or {}
        when = _dt.datetime.fromtimestamp(row["died_at"], tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            when,
            str(report.get("kernel_id")),
            str(report.get("headline") or report.get("cause")),
            exit_.get("signal") or (f"code {exit_['code']}" if "code" in exit_ else "?"),
            (f"[{cell.get('execution_count')}]" + (f":{cell['line']}" if cell.get("line") else "")) if cell else "-",
            _code_line(cell),
            format_bytes((report.get("memory") or {}).get("peak_bytes")),
        )
    return table


def _code_line(cell: dict[str, Any]) -> str:
    """Return the line of code the cell was on (its first line when the line is unknown)."""
    lines = (cell.get("code") or "").splitlines()
    if not lines:
        return ""
    line = cell.get("line")
    if line and 0 < line <= len(lines):
        return lines[line - 1].strip()
    return lines[0].strip() + (" …" if len(lines) > 1 else "")  # the line is not known: say which cell
