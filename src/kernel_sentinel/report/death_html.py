"""A death as HTML: take a ``DeathReport``, return the explanation JupyterLab, Notebook 7 and VS Code show."""

from __future__ import annotations

import html
from typing import Any

from ..records import DeathReport
from . import plain
from .death_text import code_excerpt, facts, title


def render(report: DeathReport | dict[str, Any]) -> str:
    """Return the HTML explanation (JupyterLab, Notebook 7, VS Code render this one)."""
    report = plain(report)
    e = html.escape
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts(report))
    code = "\n".join(code_excerpt(report))
    code_html = f"<pre style='margin:0.4em 0'>{e(code)}</pre>" if code else ""
    return (
        "<div class='kernel-sentinel-death' style='border-left:4px solid #c0392b;padding:0.4em 0.8em;"
        "background:rgba(192,57,43,0.06)'>"
        f"<b>{e(title(report))}</b>"
        f"<p style='margin:0.4em 0'>{e(report.get('summary', ''))}</p>"
        f"<table style='margin:0'>{rows}</table>{code_html}"
        f"<p style='margin:0.4em 0'><b>What to do:</b> {e(report.get('remedy', ''))}</p>"
        f"<p style='margin:0;opacity:0.7'><code>kernel-sentinel why {e(str(report.get('kernel_id')))}</code> has the details.</p>"
        "</div>"
    )
