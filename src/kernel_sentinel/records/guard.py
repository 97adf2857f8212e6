"""The guard-evidence record: one intervention of the in-kernel guard, as plain data (no frames, no objects).

Producer: the guard's core when it refuses an allocation or interrupts a cell. Consumers: the guard's
explanation (the MemoryBudgetError message), the store's memory-error count, the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Record, described, optional


@dataclass
class GuardEvidence(Record):
    """What the guard saw when it stepped in: the trigger, the budget, usage, the cell."""

    SCHEMA_ID: ClassVar[str] = "https://events.kernel-sentinel.dev/schemas/guard_evidence"
    TITLE: ClassVar[str] = "kernel-sentinel guard evidence (one intervention)"
    REQUIRED: ClassVar[tuple[str, ...]] = ("trigger", "budget_bytes", "usage_bytes", "cell")

    trigger: str | None = described(description="fence (an allocation refused) or watchdog (a cell interrupted)")
    requested_bytes: int | None = described(description="what the refused allocation asked for, when known")
    budget_bytes: int | None = described(description="the tightest limit")
    budget_source: str | None = described(description="where that limit comes from, in words")
    budget_kind: str | None = described(description="cgroup, ram, rlimit, setting, ...")
    usage_bytes: int | None = described(description="usage counted against that limit")
    rss_bytes: int | None = described(description="the kernel's resident memory")
    working_set_bytes: int | None = described(description="its memory cgroup's working set")
    vm_data_bytes: int | None = described(description="the kernel's data segment (VmData)")
    fence_bytes: int | None = described(description="the address-space fence (RLIMIT_DATA) then")
    interrupt_at_bytes: int | None = described(description="the usage at which the watchdog interrupts")
    cell: int | None = described(description="the execution count of the cell")
    code: str | None = described(description="the cell's code (first 2000 characters)")
    usage_at_cell_start_bytes: int | None = described(description="usage when the cell started")
    peak_usage_bytes: int | None = described(description="the cell's peak usage")
    exception: str | None = described(description="the MemoryError the guard turned into MemoryBudgetError")
    watchdog_fired: bool | None = described(description="true when the watchdog interrupted the cell")
    time: float | None = described(description="when, seconds since the epoch")
    usage_at_interrupt_bytes: int | None = optional(description="usage when the watchdog interrupted")
    thread: str | None = optional(description="the thread whose allocation failed (background threads)")
    background: bool | None = optional(description="true when no cell was running, or another thread allocated")
