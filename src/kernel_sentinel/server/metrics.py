"""The extension's Prometheus metrics, on the server's own ``/metrics`` (prometheus_client's default registry).

Created once per process (a registry refuses a name twice, and a test or a restarted extension may load this
module's users again). Counters are bumped on the server's event loop; the gauges are set by the watcher's
periodic reading and their label sets removed when a kernel goes away.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DEATHS = Counter(
    "kernel_sentinel_deaths",
    "Kernel deaths seen by this Jupyter server, by cause (oom_kill, segfault, external_kill, ...)",
    ["cause"],
)
MEMORY_ERRORS = Counter(
    "kernel_sentinel_memory_errors",
    "Cells stopped by the guard with a MemoryBudgetError instead of a dead kernel",
)
KERNEL_MEMORY = Gauge(
    "kernel_sentinel_kernel_memory_bytes",
    "Memory each running kernel uses as its guard counts it (its memory group's usage less page cache, else RSS)",
    ["kernel_id"],
)
KERNEL_BUDGET = Gauge(
    "kernel_sentinel_kernel_budget_bytes",
    "Each running kernel's memory budget: the tightest of its cgroup, rlimit, guard budget and the machine",
    ["kernel_id"],
)


def set_kernel(kernel_id: str, used_bytes: int | None, budget_bytes: int | None) -> None:
    """Set one kernel's gauges (a reading it could not take leaves the last value)."""
    if used_bytes is not None:
        KERNEL_MEMORY.labels(kernel_id=kernel_id).set(used_bytes)
    if budget_bytes is not None:
        KERNEL_BUDGET.labels(kernel_id=kernel_id).set(budget_bytes)


def forget_kernel(kernel_id: str) -> None:
    """Drop a kernel's gauges (it was shut down): a series per dead kernel would grow without end."""
    for gauge in (KERNEL_MEMORY, KERNEL_BUDGET):
        try:
            gauge.remove(kernel_id)
        except KeyError:
            pass
