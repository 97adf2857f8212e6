"""``kernel-sentinel run`` on a terminal: a live line per running cell, one result line per cell, a summary.

``RunProgress`` shows progress only when the console is a terminal (quiet in CI logs and pipes);
``render`` is a pure function of the ``RunReport`` and is printed in both cases unless --quiet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from ..records import RunReport, format_bytes
from . import plain

_STYLE = {"ok": ("✓", "green"), "error": ("✗", "bold red"), "died": ("☠", "bold red"), "not_run": ("·", "dim")}


def cell_line(number: int, total: int, cell: Any) -> Text:
    """Return one cell's result line: mark, number, time, peak and after memory, error."""
    mark, style = _STYLE.get(cell.status, ("?", ""))
    line = Text()
    line.append(f"{mark} ", style=style)
    line.append(f"cell {cell.index + 1}", style="bold")
    line.append(f" ({number}/{total})", style="dim")
    if cell.status == "not_run":
        line.append("  not run", style="dim")
        return line
    line.append(f"  {cell.seconds or 0:7.2f} s")
    line.append(f"  peak {format_bytes(cell.peak_bytes):>9}")
    line.append(f"  after {format_bytes(cell.after_bytes):>9}")
    if cell.error:
        line.append(f"  {cell.error.get('ename')}: {str(cell.error.get('evalue') or '')[:120]}", style=style)
    return line


class RunProgress:
    """The runner's progress display on a terminal; does nothing when the console is not one."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal
        self._status: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def started(self, total: int, confinement: dict[str, Any]) -> None:
        if self.enabled:
            self.console.print(Text(f"{total} code cells; {confinement.get('detail', '')}", style="dim"))

    def cell_started(self, number: int, total: int, cell: Any, current: Callable[[], int | None]) -> None:
        if not self.enabled:
            return
        import time

        t0 = time.monotonic()
        label = f"cell {cell.index + 1} ({number}/{total}) {cell.source[:50]}"
        self._status = self.console.status(label)
        self._status.start()
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(0.2):
                self._status.update(f"{label}  {time.monotonic() - t0:6.1f} s  {format_bytes(current())}")

        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()

    def _end_status(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
            self._ticker = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def cell_finished(self, number: int, total: int, cell: Any) -> None:
        if not self.enabled:
            return
        self._end_status()
        self.console.print(cell_line(number, total, cell))

    def finished(self) -> None:
        self._end_status()


def render(report: RunReport | dict[str, Any]) -> Group:
    """Return the closing summary: outcome, the failing cell and why, budget, where the files went."""
    report = plain(report)
    parts: list[Text] = []
    outcome, totals = report["outcome"], report["totals"]
    head = Text()
    failed = next((c for c in report["cells"] if c["status"] in ("error", "died")), None)
    where = ""
    if failed:
        where = f"cell {failed['index'] + 1}" + (f" (In [{failed['execution_count']}])" if failed["execution_count"] else "")
    if outcome == "ok":
        head.append("All cells ran", style="bold green")
    elif outcome == "error":
        head.append(f"{where[0].upper()}{where[1:]} raised", style="bold red")
    elif outcome == "died":
        head.append(f"The kernel died in {where}" if where else "The kernel died before running a cell", style="bold red")
    else:
        head.append("Interrupted", style="bold yellow")
    head.append(
        f"  ({totals['ok']} ok, {totals['error']} error, {totals['died']} died, {totals['not_run']} not run; "
        f"{totals['seconds']:.1f} s; peak {format_bytes(totals['peak_bytes'])})"
    )
    parts.append(head)
    if failed and failed["status"] == "error" and failed.get("error"):
        parts.append(Text(f"  {failed['error']['ename']}: {failed['error']['evalue']}", style="red"))
    death = report.get("death")
    if death:
        parts.append(Text(f"  {death.get('summary')}", style="red"))
        if death.get("remedy"):
            parts.append(Text(f"  what to do: {death['remedy']}"))
    budget = report.get("budget") or {}
    parts.append(
        Text(f"  budget {format_bytes(budget.get('bytes'))} ({budget.get('source')}); "
             f"{report['confinement'].get('detail')}", style="dim")
    )
    protection = report.get("protection") or {}
    if not protection.get("guard"):
        parts.append(Text("  the guard is not installed: an allocation over the budget is not turned into "
                          "a MemoryBudgetError", style="yellow"))
    parts.append(Text(f"  output notebook: {report['output']}", style="dim"))
    return Group(*parts)
