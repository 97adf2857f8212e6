"""The JSON report of ``kernel-sentinel run --json``: per cell outcome, time and memory; totals; the death.

A pure mapping from a ``RunResult``; the schema is for tools (CI dashboards), so it only grows.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA = "kernel-sentinel/run/1"
MAX_TIMELINE = 20000  # ~13 min at 25 ms in full; longer runs keep each stretch's maximum


def downsample(t: list[float], b: list[int], cell: list[int], limit: int) -> dict[str, list]:
    """Return at most ~``limit`` points, keeping each bucket's maximum so no peak disappears from the plot."""
    n = len(t)
    if n <= limit:
        return {"t": list(t), "bytes": list(b), "cell": list(cell)}
    step = n / limit
    out: dict[str, list] = {"t": [], "bytes": [], "cell": []}
    i = 0
    while i < n:
        j = min(n, int((len(out["t"]) + 1) * step))
        j = max(j, i + 1)
        k = max(range(i, j), key=lambda x: b[x])
        out["t"].append(t[k])
        out["bytes"].append(b[k])
        out["cell"].append(cell[k])
        i = j
    return out


def build_report(result: Any) -> dict[str, Any]:
    """Return the report dict for ``result`` (a ``kernel_sentinel.run.RunResult``)."""
    cells = []
    for c in result.cells:
        cells.append(
            {
                "index": c.index,
                "execution_count": c.execution_count,
                "status": c.status,
                "seconds": c.seconds,
                "peak_bytes": c.peak_bytes,
                "after_bytes": c.after_bytes,
                "error": c.error,
                "start_s": c.start,
                "end_s": c.end,
                "peak_rss_bytes": c.peak_rss_bytes,
                "sampled_peak_bytes": c.sampled_peak_bytes,
                "watermark_bytes": c.watermark_bytes,
                "source": c.source,
            }
        )
    counts = {s: sum(1 for c in result.cells if c.status == s) for s in ("ok", "error", "died", "not_run")}
    peaks = [c.peak_bytes for c in result.cells if c.peak_bytes is not None]
    return {
        "schema": SCHEMA,
        "notebook": result.notebook,
        "output": result.output,
        "started": result.started,
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "failed_cell": result.failed_cell,
        "kernel_id": result.kernel_id,
        "kernel_exit": result.kernel_exit,
        "budget": result.budget,
        "confinement": result.confinement,
        "protection": {"guard": result.guard, "autopsy": result.autopsy},
        "totals": {
            "cells": len(result.cells),
            **counts,
            "seconds": result.seconds,
            "cell_seconds": round(sum(c.seconds or 0 for c in result.cells), 4),
            "peak_bytes": max(peaks) if peaks else None,
        },
        "cells": cells,
        "death": result.death,
        "sampling": result.sampling,
        "timeline": downsample(result.timeline.t, result.timeline.bytes, result.timeline.cell, MAX_TIMELINE),
    }


def render_json(result: Any) -> str:
    """Return the report as indented JSON text."""
    return json.dumps(build_report(result), indent=2) + "\n"
