"""A death in a notebook cell: take a ``DeathReport``, return the display_data output the runner puts in the failed cell."""

from __future__ import annotations

import html
from typing import Any

from ..records import DeathReport, format_bytes
from . import plain
from .death_html import render as render_html
from .death_text import render as render_text


def render(report: DeathReport | dict[str, Any]) -> dict[str, Any]:
    """Return a display_data output (text/plain + text/html) explaining the death, for the failed cell.

    An autopsy report is rendered as after a restart in JupyterLab (``death_text``, ``death_html``); the
    runner's own note (``source: runner``), which has less to say, by the code below.
    """
    death = plain(report)
    if death.get("source") == "autopsy":
        try:
            return {
                "output_type": "display_data",
                "data": {"text/plain": render_text(death), "text/html": render_html(death)},
                "metadata": {"kernel_sentinel": {"death": True}},
            }
        except Exception:  # a report these renderers cannot read: the plain rendering below
            pass
    summary = str(death.get("summary") or "kernel died")
    cause = death.get("cause")
    remedy = death.get("remedy")
    where = death.get("cell") or {}
    lines = [summary]
    if cause:
        lines.append(f"cause: {cause}")
    if where.get("line"):
        lines.append(f"at line {where['line']} of this cell")
    mem = death.get("memory") or {}
    if mem.get("peak_bytes"):
        lines.append(
            f"memory just before: {format_bytes(mem.get('peak_bytes'))}"
            + (f" of a {format_bytes(mem['budget_bytes'])} budget" if mem.get("budget_bytes") else "")
        )
    if remedy:
        lines.append(f"what to do: {remedy}")
    if death.get("source") == "runner":
        lines.append("(observed by kernel-sentinel run; no autopsy record was available)")
    text = "\n".join(lines)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[1:])
    page = (
        '<div class="kernel-sentinel-death" style="border-left:4px solid #c62828;padding:6px 10px;'
        'background:#fdecea">'
        f"<b>{html.escape(summary)}</b><ul style='margin:4px 0'>{items}</ul></div>"
    )
    return {
        "output_type": "display_data",
        "data": {"text/plain": text, "text/html": page},
        "metadata": {"kernel_sentinel": {"death": True}},
    }
