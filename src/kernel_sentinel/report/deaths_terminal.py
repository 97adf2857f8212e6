"""Recent deaths on a terminal: take the store's rows of deaths, return a rich table (``kernel-sentinel deaths``)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from rich.table import Table

from ..records import format_bytes


def render(rows: list[dict[str, Any]]) -> Table:
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
