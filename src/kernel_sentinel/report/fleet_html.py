"""The fleet summary as one self-contained HTML page: take a ``FleetSummary``, return the page (totals, the
records the shared database refused, an inline SVG chart of deaths by day and cause, the breakdown, the top
cells; no script, no CDN, so it opens anywhere, mailed or archived)."""

from __future__ import annotations

import html

from ..records import FleetSummary

# One colour per cause, stable across pages; causes not listed share the last colour.
_COLOURS = {
    "oom_kill": "#d62728", "segfault": "#9467bd", "abort": "#8c564b", "external_kill": "#ff7f0e",
    "bus_error": "#e377c2", "exit": "#7f7f7f", "illegal_instruction": "#bcbd22", "fpe": "#17becf",
    "unknown": "#c7c7c7",
}
_OTHER = "#1f77b4"


def render(summary: FleetSummary) -> str:
    """Return one self-contained HTML page: totals, the records the shared database refused (when any), a
    stacked bar chart of deaths per day and cause (SVG), the breakdown table and the top cells."""
    e = html.escape
    key = summary.by_key or "cause"
    deaths, errors = summary.deaths, summary.memory_errors
    rows = "".join(
        f"<tr><td>{e(str(name))}</td><td class=n>{deaths.by.get(name, 0)}</td>"
        f"<td class=n>{errors.by.get(name, 0)}</td></tr>"
        for name in summary.keys()
    )
    cells = "".join(
        f"<tr><td class=n>{c.deaths}</td><td class=n>{c.memory_errors}</td>"
        f"<td><pre>{e(c.code or '')}</pre></td></tr>"
        for c in summary.top_cells
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kernel-sentinel fleet</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }} pre {{ margin: 0; max-width: 70em; white-space: pre-wrap; }}
.legend span {{ display: inline-block; margin-right: 1em; }} .legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
</style></head><body>
<h1>Kernel deaths across the fleet</h1>
<p><b>{deaths.total}</b> kernel deaths and <b>{errors.total}</b> memory errors (deaths the guard avoided)
since {e(str(summary.since))}. <small>{e(str(summary.source or ''))}</small></p>
{refused_html(summary)}<h2>Deaths by day and cause</h2>
{deaths_chart_svg(summary.by_day or {})}
<h2>By {e(key)}</h2>
<table><tr><th>{e(key)}</th><th>deaths</th><th>memory errors</th></tr>{rows}</table>
<h2>Cells that kill most</h2>
<p>The same cell in many copies of a notebook counts once (comments and spacing ignored).</p>
<table><tr><th>deaths</th><th>memory errors</th><th>code</th></tr>{cells}</table>
</body></html>
"""


def refused_html(summary: FleetSummary) -> str:
    """Return the section naming the records the shared database refused, or "" when there are none: they are
    kept in their servers' outboxes, not in the shared view, so the page says so as ``fleet --json`` (``refused``,
    ``outbox``) and the command's one line do, never silently.

    Every server's refusals as their forwarders reported them to the shared database (the admin's page, the hub
    page) come first; else this server's own outbox (``fleet`` read the local store).
    """
    e = html.escape
    shared = summary.extra.get("refused") or {}
    local = summary.extra.get("outbox") or {}
    if shared.get("records"):
        servers = shared.get("servers") or []
        count = int(shared["records"])
        where = f" on {len(servers)} server{'s' if len(servers) != 1 else ''}, kept in their servers' outboxes"
        rows = "".join(
            f"<tr><td>{e(str(s.get('user') or ''))}</td><td>{e(str(s.get('host') or ''))}</td>"
            f"<td>{e(str(s.get('store') or ''))}</td><td class=n>{int(s.get('refused') or 0)}</td>"
            f"<td class=n>{int(s.get('given_up') or 0)}</td><td>{e(str(s.get('reason') or 'none given'))}</td></tr>"
            for s in servers
        )
    elif local.get("refused"):
        count = int(local["refused"])
        where = ", kept in this server's outbox"
        rows = (f"<tr><td colspan=3>this server</td><td class=n>{count}</td>"
                f"<td class=n>{int(local.get('given_up') or 0)}</td>"
                f"<td>{e(str(local.get('reason') or 'none given'))}</td></tr>")
    else:
        return ""
    return f"""<h2>Records the shared database refused</h2>
<p><b>{count}</b> record{'s' if count != 1 else ''} refused by the shared database{where}; not in the shared view.
Those no longer retried are sent again by <code>kernel-sentinel fleet --retry-refused</code> on their server, once
the cause is fixed.</p>
<table><tr><th>user</th><th>host</th><th>store</th><th>refused</th><th>no longer retried</th><th>reason</th></tr>{rows}</table>
"""


def deaths_chart_svg(by_day: dict[str, dict[str, int]], width: int = 720, height: int = 220) -> str:
    """Return an inline SVG stacked bar chart: one bar per day, one colour per cause, with a legend."""
    if not by_day:
        return '<p class="empty">No deaths in this period.</p>'
    days = sorted(by_day)
    causes = sorted({c for counts in by_day.values() for c in counts})
    peak = max(sum(counts.values()) for counts in by_day.values()) or 1
    left, bottom, top = 40, 30, 10
    plot_h = height - bottom - top
    step = (width - left) / len(days)
    bar = max(2.0, step * 0.7)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="deaths by day and cause">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{peak}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>']
    for i, day in enumerate(days):
        x = left + i * step + (step - bar) / 2
        y = top + plot_h
        for cause in causes:
            n = by_day[day].get(cause, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{_COLOURS.get(cause, _OTHER)}"><title>{html.escape(day)} {html.escape(cause)}: '
                         f'{n}</title></rect>')
        if len(days) <= 15 or i % max(1, len(days) // 10) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 12}" text-anchor="middle" font-size="10">'
                         f'{html.escape(day[5:])}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{_COLOURS.get(c, _OTHER)}"></i>{html.escape(c)}</span>' for c in causes
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'
