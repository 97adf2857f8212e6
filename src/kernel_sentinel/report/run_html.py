"""The HTML report of ``kernel-sentinel run --html``: one self-contained page, no network.

Memory over time across the run (the budget as a dashed line, each cell's start marked, the failed cell
shaded) is drawn into an inline SVG by a small inline script from the data embedded in the page; the
table of cells is plain server-side HTML, readable without JavaScript. Pure: a ``RunReport`` in, text out.
"""

from __future__ import annotations

import html
import json
from typing import Any

from ..records import RunReport, format_bytes
from ..records.run import downsample
from . import plain

MAX_POINTS = 3000  # more samples than pixels only makes the page heavy


_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById('run-data').textContent);
  var svg = document.getElementById('memplot');
  var NS = 'http://www.w3.org/2000/svg';
  var W = 960, H = 360, L = 70, R = 20, T = 20, B = 40;
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  }
  function fmt(n) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 100 ? 1 : 0)) + ' ' + u[i];
  }
  var t = data.timeline.t, b = data.timeline.bytes;
  var ends = data.cells.map(function (c) { return c.end_s || 0; });
  var tmax = Math.max.apply(null, ends.concat([t.length ? t[t.length - 1] : 0, 1e-3]));
  var peak = Math.max.apply(null, b.concat([1]));
  // A machine-wide budget (say 22 GiB) would flatten a 300 MiB run into the floor: draw it only when near.
  var showBudget = data.budget && data.budget <= 4 * peak;
  var ymax = Math.max(peak, showBudget ? data.budget : 0) * 1.08;
  function X(s) { return L + (W - L - R) * s / tmax; }
  function Y(v) { return H - B - (H - T - B) * v / ymax; }
  el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: '#fafafa', stroke: '#ccc'});
  for (var i = 0; i <= 4; i++) {
    var v = ymax * i / 4;
    el('line', {x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: '#e4e4e4'});
    el('text', {x: L - 6, y: Y(v) + 4, 'text-anchor': 'end', 'font-size': 11}, fmt(v));
    var s = tmax * i / 4;
    el('text', {x: X(s), y: H - B + 16, 'text-anchor': 'middle', 'font-size': 11}, s.toFixed(s < 10 ? 1 : 0) + ' s');
  }
  el('text', {x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', 'font-size': 12}, 'seconds since the kernel started');
  data.cells.forEach(function (c) {
    if (c.start_s === null || c.start_s === undefined) return;
    var bad = c.status === 'error' || c.status === 'died';
    if (bad) el('rect', {x: X(c.start_s), y: T, width: Math.max(2, X(c.end_s) - X(c.start_s)),
                         height: H - T - B, fill: '#fdecea', 'class': 'failed-cell'});
    el('line', {x1: X(c.start_s), x2: X(c.start_s), y1: T, y2: H - B, stroke: '#9e9e9e',
                'stroke-dasharray': '2,3', 'class': 'cell-boundary', 'data-cell': c.index});
    el('text', {x: X(c.start_s) + 3, y: T + 12, 'font-size': 10, fill: '#616161'}, '' + (c.index + 1));
  });
  if (data.budget && !showBudget) {
    el('text', {x: W - R - 4, y: T + 14, 'text-anchor': 'end', 'font-size': 11, fill: '#c62828', id: 'budget-note'},
       'budget ' + fmt(data.budget) + ' (far above the plot)');
  }
  if (showBudget) {
    el('line', {x1: L, x2: W - R, y1: Y(data.budget), y2: Y(data.budget), stroke: '#c62828',
                'stroke-width': 2, 'stroke-dasharray': '8,4', id: 'budget-line'});
    el('text', {x: W - R - 4, y: Y(data.budget) - 6, 'text-anchor': 'end', 'font-size': 11, fill: '#c62828'},
       'budget ' + fmt(data.budget));
  }
  var d = '';
  for (var j = 0; j < t.length; j++) d += (j ? 'L' : 'M') + X(t[j]).toFixed(1) + ',' + Y(b[j]).toFixed(1);
  if (d) el('path', {d: d, fill: 'none', stroke: '#1565c0', 'stroke-width': 1.5, id: 'memory-path'});
  svg.setAttribute('data-points', String(t.length));
  svg.setAttribute('data-rendered', 'yes');
})();
"""

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#212121;max-width:1000px}
h1{font-size:20px;margin:0 0 4px} .meta{color:#616161;margin:2px 0}
.outcome-ok{color:#2e7d32} .outcome-error,.outcome-died{color:#c62828} .outcome-interrupted{color:#ef6c00}
table{border-collapse:collapse;margin-top:12px;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #eee;
text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.error td,tr.died td{background:#fdecea} tr.not_run td{color:#9e9e9e}
.death{border-left:4px solid #c62828;background:#fdecea;padding:6px 10px;margin:10px 0}
code{font-size:12px}
"""


def render(report: RunReport | dict[str, Any]) -> str:
    """Return the self-contained HTML page for a run report."""
    report = plain(report)
    tl = report["timeline"]
    data = {
        "timeline": downsample(tl["t"], tl["bytes"], tl["cell"], MAX_POINTS),
        "budget": (report.get("budget") or {}).get("bytes"),
        "seconds": report["totals"].get("seconds"),
        "cells": [
            {"index": c["index"], "start_s": c["start_s"], "end_s": c["end_s"], "status": c["status"]}
            for c in report["cells"]
        ],
    }
    blob = json.dumps(data).replace("</", "<\\/")
    e = html.escape
    outcome = report["outcome"]
    rows = []
    for c in report["cells"]:
        err = c.get("error") or {}
        count = "" if c["execution_count"] is None else str(c["execution_count"])
        seconds = "" if c["seconds"] is None else f"{c['seconds']:.2f} s"
        peak = "" if c["peak_bytes"] is None else format_bytes(c["peak_bytes"])
        after = "" if c["after_bytes"] is None else format_bytes(c["after_bytes"])
        error = (err.get("ename") or "") + (": " + str(err.get("evalue")) if err.get("evalue") else "")
        rows.append(
            f'<tr class="{e(c["status"])}"><td class="num">{c["index"] + 1}</td><td class="num">{count}</td>'
            f'<td>{e(c["status"])}</td><td class="num">{seconds}</td><td class="num">{e(peak)}</td>'
            f'<td class="num">{e(after)}</td><td><code>{e(c.get("source") or "")}</code></td><td>{e(error)}</td></tr>'
        )
    death = report.get("death")
    death_html = ""
    if death:
        death_html = f'<div class="death"><b>{e(str(death.get("summary")))}</b>'
        if death.get("remedy"):
            death_html += f"<br>What to do: {e(str(death['remedy']))}"
        death_html += "</div>"
    budget = report.get("budget") or {}
    totals = report["totals"]
    title = f"kernel-sentinel run: {report['notebook']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p class="meta outcome-{e(outcome)}"><b>{e(outcome)}</b> (exit {report["exit_code"]}):
 {totals["ok"]} ok, {totals["error"]} error, {totals["died"]} died, {totals["not_run"]} not run;
 {totals["seconds"]:.1f} s; peak {e(format_bytes(totals["peak_bytes"]))}</p>
<p class="meta">Budget {e(format_bytes(budget.get("bytes")))} ({e(str(budget.get("source")))});
 {e(str(report["confinement"].get("detail")))}. Memory sampled every
 {1000 * (report.get("sampling") or {}).get("interval_s", 0):.0f} ms: {e(str((report.get("sampling") or {}).get("source")))}.</p>
{death_html}
<svg id="memplot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 960 360" width="960" height="360"
 role="img" aria-label="memory over time"></svg>
<noscript><p>The memory plot needs JavaScript; the table below has every number.</p></noscript>
<table id="cells"><thead><tr><th>cell</th><th>run #</th><th>status</th><th>time</th><th>peak</th><th>after</th>
<th>first line</th><th>error</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<p class="meta">Output notebook: {e(report["output"])}; kernel {e(str(report.get("kernel_id")))};
 started {e(report.get("started") or "")}.</p>
<script type="application/json" id="run-data">{blob}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
