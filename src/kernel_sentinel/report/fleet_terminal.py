"""The fleet summary for the terminal: take a ``FleetSummary``, return rich renderables (totals, the
breakdown by the chosen key, the cells that kill most)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..records import FleetSummary


def _snippet(code: str | None, lines: int = 4) -> str:
    """Return a cell's first ``lines`` lines, with "..." when there are more (a table row, not the whole cell)."""
    text = (code or "").strip().splitlines()
    return "\n".join(text[:lines]) + ("\n..." if len(text) > lines else "")


def render(summary: FleetSummary) -> Group:
    """Return rich renderables: totals, deaths and memory errors by the chosen key, the cells that kill most."""
    key = summary.by_key or "cause"
    deaths, errors = summary.deaths, summary.memory_errors
    head = Text.assemble(
        (f"{deaths.total} kernel deaths", "bold red" if deaths.total else "bold"),
        f" and {errors.total} memory errors (deaths the guard avoided) since {summary.since}",
        (f"  [{summary.source or ''}]", "dim"),
    )
    table = Table(title=f"by {key}", title_justify="left")
    table.add_column(key)
    table.add_column("deaths", justify="right")
    table.add_column("memory errors", justify="right")
    for name in summary.keys():
        table.add_row(str(name), str(deaths.by.get(name, 0)), str(errors.by.get(name, 0)))
    cells = Table(title="cells that kill most (copies folded together)", title_justify="left")
    cells.add_column("deaths", justify="right")
    cells.add_column("memory errors", justify="right")
    cells.add_column("code")
    for cell in summary.top_cells:
        cells.add_row(str(cell.deaths), str(cell.memory_errors), _snippet(cell.code))
    parts: list[Any] = [head]
    if deaths.total or errors.total:
        parts.append(table)
    if summary.top_cells:
        parts.append(cells)
    return Group(*parts)
