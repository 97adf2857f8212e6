"""The guard's memory error as the notebook shows it: plain text and self-contained HTML, and a one-line message.

Pure functions of a ``MemoryExplanation``. The HTML has no scripts and no external resources, and every
piece of text in it is escaped (variable names and the cell's code come from the user).
"""

from __future__ import annotations

import html
from typing import Any

from ..records import format_bytes

_REMEDY_MARK = "->"


def _remedy_gist(remedy: str) -> str:
    """Return the remedy's lead ("Keep it on disk"), the part before its first colon or full stop."""
    for mark in (": ", ". "):
        head, sep, _ = remedy.partition(mark)
        if sep and len(head) <= 70:
            return head.rstrip(".")
    return remedy.rstrip(".")


def error_message(explanation: Any) -> str:
    """Return the exception's one-line message: the headline and the gist of the remedy.

    The full explanation is displayed above the traceback; this line is what survives where only the
    error is kept (nbclient's CellExecutionError, logs), so it names the remedy too.
    """
    text = f"{explanation.headline} Try: {_remedy_gist(explanation.remedy)}."
    return " ".join(text.split())  # one line, whatever the parts contain


def _variable_line(v: Any) -> str:
    approx = "" if v.exact else "~"
    detail = f", {v.detail}" if v.detail else ""
    return f"{v.name} {approx}{format_bytes(v.nbytes)} ({v.type_name}{detail})"


def _hidden_line(h: Any) -> str:
    line = f"{h.name} holds {format_bytes(h.nbytes)}"
    if h.exclusive_bytes != h.nbytes:
        line += f" ({format_bytes(h.exclusive_bytes)} only there)"
    if h.holds:
        line += f": {h.holds}"
    return line


def render_text(explanation: Any) -> str:
    """Return the plain-text form: headline, facts, largest variables, hidden references, remedy."""
    lines = [f"MemoryBudgetError: {explanation.headline}"]
    lines += [f"  {fact}" for fact in explanation.facts]
    if explanation.top_variables:
        lines.append("  Largest variables: " + "; ".join(_variable_line(v) for v in explanation.top_variables))
    for h in explanation.hidden:
        lines.append(f"  Hidden: {_hidden_line(h)}")
    lines.append(f"{_REMEDY_MARK} {explanation.remedy}")
    return "\n".join(lines)


def _code_spans(text: str) -> str:
    """Escape ``text`` and turn its `backtick` spans into <code> elements."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part)
        out.append(f"<code>{escaped}</code>" if i % 2 == 1 and i < len(parts) - 1 else escaped)
    if len(parts) % 2 == 0:  # an unpaired backtick: keep it literally
        out[-1] = "`" + out[-1]
    return "".join(out)


def render_html(explanation: Any) -> str:
    """Return the HTML form: one self-contained <div>, inline styles, no scripts."""
    e = html.escape
    rows = "".join(f"<li>{_code_spans(fact)}</li>" for fact in explanation.facts)
    table = ""
    if explanation.top_variables or explanation.hidden:
        body = "".join(
            f"<tr><td><code>{e(v.name)}</code></td><td style='text-align:right'>"
            f"{'~' if not v.exact else ''}{e(format_bytes(v.nbytes))}</td>"
            f"<td>{e(v.type_name)}{(' ' + e(v.detail)) if v.detail else ''}</td></tr>"
            for v in explanation.top_variables
        )
        body += "".join(
            f"<tr><td><i>{e(h.name)}</i> (hidden)</td><td style='text-align:right'>{e(format_bytes(h.nbytes))}</td>"
            f"<td>{e(format_bytes(h.exclusive_bytes))} only there{(': ' + e(h.holds)) if h.holds else ''}</td></tr>"
            for h in explanation.hidden
        )
        table = (
            "<table style='border-collapse:collapse;margin:4px 0'>"
            "<tr><th style='text-align:left'>holds memory</th><th>size</th><th></th></tr>"
            f"{body}</table>"
        )
    return (
        "<div class='kernel-sentinel-memory-error' style='border-left:4px solid #d9534f;padding:4px 10px;"
        "font-family:sans-serif;font-size:13px'>"
        f"<b>MemoryBudgetError</b>: {e(explanation.headline)}"
        f"<ul style='margin:4px 0'>{rows}</ul>{table}"
        f"<div style='margin-top:4px'><b>Try:</b> {_code_spans(explanation.remedy)}</div>"
        "</div>"
    )


def render(explanation: Any) -> dict[str, str]:
    """Return a Jupyter mime bundle ``{"text/plain": ..., "text/html": ...}`` for the explanation."""
    return {"text/plain": render_text(explanation), "text/html": render_html(explanation)}
