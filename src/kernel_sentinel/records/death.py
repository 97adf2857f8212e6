"""The death record: one kernel death as ``why --json`` shows it (DESIGN.md), the autopsy's output.

Producers: ``autopsy.explain`` (the why-dict), the runner's own note when no autopsy was recorded
(``source: runner``). Consumers: ``why``, the runner's report, the server's endpoints and events, the
fleet. ``DeathReport.from_dict(d).to_dict() == d``, key order included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Record, described, optional

CAUSES = ("oom_kill", "external_kill", "segfault", "abort", "bus_error", "illegal_instruction", "fpe", "exit", "unknown")

EXIT_SCHEMA = {
    "type": ["object", "null"],
    "description": '{"code": N} or {"signal": "SIGKILL"} (with "inferred": true when no exit status was seen)',
    "properties": {"code": {"type": "integer"}, "signal": {"type": "string"}, "inferred": {"type": "boolean"}},
}
CELL_SCHEMA = {
    "type": ["object", "null"],
    "description": "the cell that was running (or ran last)",
    "properties": {
        "execution_count": {"type": ["integer", "null"]},
        "code": {"type": ["string", "null"]},
        "line": {"type": ["integer", "null"]},
        "running": {"type": ["boolean", "null"]},
    },
}
MEMORY_SCHEMA = {
    "type": ["object", "null"],
    "description": "memory just before the death",
    "properties": {
        "budget_bytes": {"type": ["integer", "null"]},
        "peak_bytes": {"type": ["integer", "null"]},
        "source": {"type": ["string", "null"]},
    },
}


@dataclass
class DeathReport(Record):
    """One death: what ended the kernel, in which cell, with how much memory, and what to do."""

    SCHEMA_ID: ClassVar[str] = "https://events.kernel-sentinel.dev/schemas/death_report"
    TITLE: ClassVar[str] = "kernel-sentinel death report (why --json)"
    REQUIRED: ClassVar[tuple[str, ...]] = ("kernel_id", "cause", "summary", "exit", "cell", "memory", "remedy")
    CONTRACT_KEYS: ClassVar[tuple[str, ...]] = REQUIRED  # the keys DESIGN.md promises, shown first by ``why --json``

    source: str | None = optional(description="who recorded it: autopsy (the run report's copy) or runner")
    kernel_id: str | None = described(description="the kernel's id (kernel-<id>.json -> <id>)")
    pid: int | None = optional(description="the kernel process")
    died_at: float | None = optional(description="when, seconds since the epoch")
    died_at_iso: str | None = optional(description="when, ISO 8601 UTC")
    cause: str | None = described(enum=list(CAUSES), description="what the process died of")
    summary: str | None = described(description="one sentence for humans")
    headline: str | None = optional(description="a few words for lists")
    exit: dict[str, Any] | None = described(**EXIT_SCHEMA)
    oom_kills: int | None = optional(description="the runner's note: OOM kills its cgroup counted")
    cell: dict[str, Any] | None = described(**CELL_SCHEMA)
    memory: dict[str, Any] | None = described(**MEMORY_SCHEMA)
    remedy: str | None = described(description="what to do about it")
    memory_exhausted: bool | None = optional(description="true whenever memory ran out, whatever signal ended the process")
    scope: str | None = optional(enum=["cgroup", "system"], description="oom_kill: whose limit was hit")
    signal: str | None = optional(description="the signal's name")
    disk_full: bool | None = optional(description="bus_error: a mapped file's filesystem was full")
    disk: dict[str, Any] | None = optional(description="bus_error: the full filesystem")
    code: int | None = optional(description="exit: the exit code")
    native_module: str | None = optional(description="the Python module of the native frame that crashed")
    native_library: str | None = optional(description="the shared library named by the kernel log")
    evidence: dict[str, Any] | None = optional(description="what the verdict rests on (proof, kernel log, notes)")
    user: str | None = optional(description="who ran the kernel")
    host: str | None = optional(description="the machine")
    server: str | None = optional(description="the Jupyter server's URL or id")
    kernel_name: str | None = optional(description="the kernelspec's name")
    notebook: str | None = optional(description="the notebook's path, when known")
    death_id: int | None = optional(description="the store's id of this death")
    shown: bool | None = optional(description="whether it was already shown to the user")

    def contract_first(self) -> dict[str, Any]:
        """Return ``to_dict()`` with DESIGN.md's keys first (null when missing): the order ``why --json`` prints."""
        data = self.to_dict()
        ordered = {k: data.get(k) for k in self.CONTRACT_KEYS}
        ordered.update({k: v for k, v in data.items() if k not in ordered})
        return ordered
