"""The fleet-summary record: take the fleet's counts over the store, give ``kernel-sentinel fleet --json``.

Producer: ``fleet.query.fleet_summary`` (GROUP BYs over the local SQLite or the shared PostgreSQL), plus the
``source`` the CLI or the hub service read. Consumers: the renderers ``report/fleet_json|terminal|html.py``
(the CLI and the hub service's page). The keys are DESIGN.md's fleet contract (``since``, ``deaths``,
``memory_errors``, ``top_cells``) plus ``by_key``, ``by_day`` and ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Record, described, optional


@dataclass
class FleetCounts(Record):
    """A total and its breakdown by the chosen key (cause, user, notebook, host or library)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("total", "by")

    total: int = described(0, description="how many in the period")
    by: dict[str, int] = described({}, description="count per value of the key, largest first")


@dataclass
class FleetCell(Record):
    """One cell that kills most: its copies across notebooks folded together (comments and spacing ignored)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("code", "deaths", "memory_errors")

    code: str | None = described(description="one copy's code")
    deaths: int = described(0, description="deaths in that cell")
    memory_errors: int = described(0, description="MemoryBudgetErrors in that cell (deaths the guard avoided)")
    key: str | None = described(description="the folded cell's key")


@dataclass
class FleetSummary(Record):
    """Deaths and memory errors across every server writing to the store, over one period."""

    SCHEMA_ID: ClassVar[str] = "https://events.kernel-sentinel.dev/schemas/fleet_summary"
    TITLE: ClassVar[str] = "kernel-sentinel fleet summary (fleet --json)"
    REQUIRED: ClassVar[tuple[str, ...]] = ("since", "deaths", "memory_errors", "top_cells")

    since: str | None = described(description="the period, as given: 7d, 12h, 2w, all")
    since_epoch: float | None = optional(description="its start, seconds since the epoch")
    by_key: str | None = described("cause", enum=["cause", "user", "notebook", "host", "library"])
    deaths: FleetCounts = described(items=FleetCounts)
    memory_errors: FleetCounts = described(items=FleetCounts)
    top_cells: list[FleetCell] = described([], items=FleetCell)
    by_day: dict[str, dict[str, int]] = described({}, description="deaths per day (YYYY-MM-DD) and cause")
    source: str | None = optional(description="the store read (a path, or the database URL without password)")

    def __post_init__(self) -> None:
        super().__post_init__()
        # Built in code without counts: none of either (from_dict fills them from the JSON).
        self.deaths = self.deaths if self.deaths is not None else FleetCounts()
        self.memory_errors = self.memory_errors if self.memory_errors is not None else FleetCounts()

    def keys(self) -> list[Any]:
        """Return the breakdown's values in the order shown: the deaths' (largest first), then the memory errors' others."""
        seen = list(self.deaths.by)
        return seen + [k for k in self.memory_errors.by if k not in self.deaths.by]
