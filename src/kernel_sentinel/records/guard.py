"""The guard-evidence record: one intervention of the in-kernel guard, as plain data (no frames, no objects).

Producer: the guard's core when it refuses an allocation or interrupts a cell; the guard adds its
explanation's words (``GuardEvidence.explained``) before the error is shown. Consumers: the renderers of the
MemoryBudgetError (``report/guard_*.py``: they read only this record), the store, the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Record, described, optional


@dataclass
class GuardExplanation(Record):
    """What the user reads when the guard stops a cell: a headline, a few facts, what holds memory, one remedy."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("headline", "facts", "remedy")

    headline: str | None = described(description="one sentence: what the cell did against the budget")
    facts: list[str] = described([], description="short lines: the budget and its source, usage, what is intact")
    top_variables: list[dict[str, Any]] = described(
        [], description='the largest variables: {"name", "type_name", "nbytes", "exact", "detail"}'
    )
    hidden: list[dict[str, Any]] = described(
        [], description='references the user did not make: {"name", "nbytes", "exclusive_bytes", "holds", "count"}'
    )
    remedy: str | None = described(description="the one thing to do (`code` in backticks)")
    remedy_kind: str | None = described(description="chunked_read, free_hidden, merge_keys, smaller_dtype, memmap, ...")


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
    unfilled_bytes: int | None = optional(
        description="allocated by the kernel but not yet filled: not in the usage yet, counted against the limit"
    )
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
    explanation: GuardExplanation | None = optional(items=GuardExplanation)

    @classmethod
    def explained(cls, evidence: dict[str, Any], explanation: dict[str, Any]) -> GuardEvidence:
        """Return the record the renderers read: the guard's evidence plus its explanation's words (both plain data).

        The guard calls this once it has explained a failure; renderers then need nothing but the record.
        """
        return cls.from_dict({**evidence, "explanation": explanation})
