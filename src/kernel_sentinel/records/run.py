"""The run record: take a finished headless run, give ``kernel-sentinel run --json`` (schema kernel-sentinel/run/1).

Producer: ``run`` (``RunReport.from_result``). Consumers: the JSON, HTML and terminal renderers, CI
dashboards. The schema only grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Record, described
from .death import DeathReport

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


@dataclass
class CellReport(Record):
    """One code cell's outcome, time and memory."""

    index: int | None = described(description="the cell's index in the notebook (0-based)")
    execution_count: int | None = described()
    status: str | None = described(enum=["ok", "error", "died", "not_run"])
    seconds: float | None = described()
    peak_bytes: int | None = described(description="the cell's peak memory (the best of the measures below)")
    after_bytes: int | None = described(description="memory after the cell")
    error: dict[str, Any] | None = described(type=["object", "null"], description='{"ename", "evalue"}')
    start_s: float | None = described(description="start, seconds from the run's start")
    end_s: float | None = described()
    peak_rss_bytes: int | None = described()
    sampled_peak_bytes: int | None = described()
    watermark_bytes: int | None = described()
    source: str | None = described(description="the cell's first line")


@dataclass
class RunReport(Record):
    """One headless run of a notebook: per cell outcome, time and memory; totals; the death, if any."""

    SCHEMA_ID: ClassVar[str] = "https://events.kernel-sentinel.dev/schemas/run_report"
    TITLE: ClassVar[str] = "kernel-sentinel run report (run --json)"
    REQUIRED: ClassVar[tuple[str, ...]] = ("schema", "notebook", "outcome", "exit_code", "cells", "totals")

    schema: str = described(SCHEMA, const=SCHEMA)
    notebook: str | None = described()
    output: str | None = described(description="the executed notebook written")
    started: str | None = described(description="ISO 8601")
    outcome: str | None = described(enum=["ok", "error", "died", "interrupted"])
    exit_code: int | None = described(description="0 every cell ran, 1 a cell raised, 2 the kernel died")
    failed_cell: int | None = described()
    kernel_id: str | None = described()
    kernel_exit: int | None = described(description="the kernel's exit status (negative: a signal)")
    budget: dict[str, Any] | None = described(type=["object", "null"], description='{"bytes", "source"}')
    confinement: dict[str, Any] | None = described(type=["object", "null"])
    protection: dict[str, Any] | None = described(type=["object", "null"], description='{"guard", "autopsy"}')
    totals: dict[str, Any] | None = described(type=["object", "null"])
    cells: list[CellReport] = described([], items=CellReport)
    death: DeathReport | None = described(items=DeathReport)
    sampling: dict[str, Any] | None = described(type=["object", "null"])
    timeline: dict[str, Any] | None = described(type=["object", "null"], description='{"t", "bytes", "cell"}')

    @classmethod
    def from_result(cls, result: Any) -> RunReport:
        """Return the report of a ``kernel_sentinel.run.RunResult`` (read by attribute: records import nothing above)."""
        cells = [
            CellReport(
                index=c.index, execution_count=c.execution_count, status=c.status, seconds=c.seconds,
                peak_bytes=c.peak_bytes, after_bytes=c.after_bytes, error=c.error, start_s=c.start, end_s=c.end,
                peak_rss_bytes=c.peak_rss_bytes, sampled_peak_bytes=c.sampled_peak_bytes,
                watermark_bytes=c.watermark_bytes, source=c.source,
            )
            for c in result.cells
        ]
        counts = {s: sum(1 for c in result.cells if c.status == s) for s in ("ok", "error", "died", "not_run")}
        peaks = [c.peak_bytes for c in result.cells if c.peak_bytes is not None]
        return cls(
            schema=SCHEMA,
            notebook=result.notebook,
            output=result.output,
            started=result.started,
            outcome=result.outcome,
            exit_code=result.exit_code,
            failed_cell=result.failed_cell,
            kernel_id=result.kernel_id,
            kernel_exit=result.kernel_exit,
            budget=result.budget,
            confinement=result.confinement,
            protection={"guard": result.guard, "autopsy": result.autopsy},
            totals={
                "cells": len(result.cells),
                **counts,
                "seconds": result.seconds,
                "cell_seconds": round(sum(c.seconds or 0 for c in result.cells), 4),
                "peak_bytes": max(peaks) if peaks else None,
            },
            cells=cells,
            death=DeathReport.from_dict(result.death) if isinstance(result.death, dict) else result.death,
            sampling=result.sampling,
            timeline=downsample(result.timeline.t, result.timeline.bytes, result.timeline.cell, MAX_TIMELINE),
        )
