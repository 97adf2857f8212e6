"""The guard's memory error as HTML: take a ``GuardEvidence`` that carries its explanation, return one <div>.

Self-contained: inline styles, no scripts, no external resources, and every piece of text escaped
(variable names and the cell's code come from the user). Reads only the record.
"""

from __future__ import annotations

import html

from ..records import GuardEvidence, format_bytes
from .guard_text import words


def _code_spans(text: str) -> str:
    """Return ``text`` escaped, its `backtick` spans turned into <code> elements."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part)
        out.append(f"<code>{escaped}</code>" if i % 2 == 1 and i < len(parts) - 1 else escaped)
    if len(parts) % 2 == 0:  # an unpaired backtick: keep it literally
        out[-1] = "`" + out[-1]
    return "".join(out)


def render(evidence: GuardEvidence) -> str:
    """Return the HTML form: one self-contained <div>, inline styles, no scripts."""
    x = words(evidence)
    e = html.escape
    rows = "".join(f"<li>{_code_spans(fact)}</li>" for fact in x.facts)
    table = ""
    if x.top_variables or x.hidden:
        body = "".join(
            f"<tr><td><code>{e(v['name'])}</code></td><td style='text-align:right'>"
            f"{'~' if not v.get('exact', True) else ''}{e(format_bytes(v['nbytes']))}</td>"
            f"<td>{e(v['type_name'])}{(' ' + e(v['detail'])) if v.get('detail') else ''}</td></tr>"
            for v in x.top_variables
        )
        body += "".join(
            f"<tr><td><i>{e(h['name'])}</i> (hidden)</td><td style='text-align:right'>{e(format_bytes(h['nbytes']))}</td>"
            f"<td>{e(format_bytes(h['exclusive_bytes']))} only there{(': ' + e(h['holds'])) if h.get('holds') else ''}"
            "</td></tr>"
            for h in x.hidden
        )
        table = (
            "<table style='border-collapse:collapse;margin:4px 0'>"
            "<tr><th style='text-align:left'>holds memory</th><th>size</th><th></th></tr>"
            f"{body}</table>"
        )
    return (
        "<div class='kernel-sentinel-memory-error' style='border-left:4px solid #d9534f;padding:4px 10px;"
        "font-family:sans-serif;font-size:13px'>"
        f"<b>MemoryBudgetError</b>: {e(x.headline)}"
        f"<ul style='margin:4px 0'>{rows}</ul>{table}"
        f"<div style='margin-top:4px'><b>Try:</b> {_code_spans(x.remedy)}</div>"
        "</div>"
    )
