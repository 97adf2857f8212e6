"""The memory budget on a terminal: take a memory snapshot, return a rich table (``kernel-sentinel budget``)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..records import format_bytes


def render(snap: Any, *, own_group: bool = False) -> Group:
    """Return a renderable that says what the process may still use, who says so, and what it uses now.

    ``snap`` is a ``kernel_sentinel.memory.MemorySnapshot`` (read by attribute: renderers import records only);
    ``own_group`` says that its budget is the kernel's own memory group (the caller knows, the renderer shows).
    """
    budget = snap.budget
    head = Text()
    if budget is None:
        head.append("No memory limit could be read for this process.", style="bold yellow")
    else:
        head.append(f"PID {snap.pid} may use ", style="bold")
        head.append(format_bytes(budget.available_bytes), style="bold green")
        head.append(" more, of a budget of ", style="bold")
        head.append(format_bytes(budget.limit_bytes), style="bold")
        head.append(" set by ", style="bold")
        head.append(budget.source, style="bold cyan")
        if own_group:
            head.append(": this kernel's own memory group", style="bold cyan")

    limits = Table(title="Limits (tightest first)", title_justify="left", show_edge=False)
    limits.add_column("source")
    limits.add_column("limit", justify="right")
    limits.add_column("headroom", justify="right")
    for lim in sorted(snap.limits, key=lambda lim: lim.available_bytes):
        style = "bold" if lim is budget else ""
        limits.add_row(lim.source, format_bytes(lim.limit_bytes), format_bytes(lim.available_bytes), style=style)

    usage = Table(title="Usage", title_justify="left", show_edge=False, show_header=False)
    usage.add_column("what")
    usage.add_column("bytes", justify="right")
    p = snap.process
    usage.add_row("process RSS", format_bytes(p.rss_bytes))
    usage.add_row("process peak RSS", format_bytes(p.peak_rss_bytes))
    usage.add_row("process VmData", format_bytes(p.vm_data_bytes))
    if snap.cgroup is not None:
        c = snap.cgroup
        usage.add_row(f"cgroup v{c.version} {c.path}", "")
        usage.add_row("  usage (incl. page cache)", format_bytes(c.usage_bytes))
        usage.add_row("  working set", format_bytes(c.working_set_bytes))
        usage.add_row("  peak", format_bytes(c.peak_bytes))
        usage.add_row("  OOM kills", "?" if c.oom_kills is None else str(c.oom_kills))
    if snap.pressure is not None:
        pr = snap.pressure
        full = "?" if pr.full_avg10 is None else f"{pr.full_avg10:.2f}%"
        usage.add_row("memory pressure (avg10 some / full)", f"{pr.some_avg10:.2f}% / {full}")

    parts: list = [head, Text(), limits, Text(), usage]
    if snap.notes:
        parts.append(Text())
        for note in snap.notes:
            parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)
