"""Renderers: take a record, return it in one format; they compute nothing and import only ``records``.

One naming scheme: ``report/<record>_<format>.py`` holds ``render(record, **options)``. Records:
``death`` (``DeathReport``), ``deaths`` (store rows of deaths), ``run`` (``RunReport``), ``findings`` (a
list of ``Finding``), ``budget`` (a memory snapshot), ``guard`` (``GuardEvidence`` carrying its explanation:
the MemoryBudgetError; ``memory_error.py`` is the guard's entry: the mime bundle and the one-line message),
``fleet`` (``FleetSummary``). Formats: ``json``, ``text``, ``html``, ``notebook`` (a display_data output),
``terminal`` (a rich renderable), ``message`` (one line).
Callers pick one: ``renderer("death", "json")(report)``, or ``render(report, "json")`` for a record.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..records import DeathReport, Finding, FleetSummary, GuardEvidence, RunReport
from ..records.base import Record

FORMATS = ("json", "text", "html", "notebook", "terminal", "message")


def renderer(kind: str, fmt: str) -> Callable[..., Any]:
    """Return the ``render`` function of ``report/<kind>_<fmt>.py``; ValueError (one line) when there is none."""
    try:
        module = importlib.import_module(f"{__name__}.{kind}_{fmt}")
    except ModuleNotFoundError:
        raise ValueError(f"no {fmt} renderer for {kind}") from None
    return module.render


def kind_of(record: Any) -> str:
    """Return which record ``record`` is: death, run, guard, fleet or findings (a list of Finding)."""
    if isinstance(record, DeathReport):
        return "death"
    if isinstance(record, RunReport):
        return "run"
    if isinstance(record, GuardEvidence):
        return "guard"
    if isinstance(record, FleetSummary):
        return "fleet"
    if isinstance(record, (list, tuple)) and all(isinstance(f, Finding) for f in record):
        return "findings"
    raise ValueError(f"not a record: {type(record).__name__}")


def render(record: Any, fmt: str, **options: Any) -> Any:
    """Return ``record`` rendered as ``fmt`` by its renderer."""
    return renderer(kind_of(record), fmt)(record, **options)


def plain(record: Any) -> Any:
    """Return a record's JSON mapping, or the value itself when it is one already (renderers read mappings)."""
    return record.to_dict() if isinstance(record, Record) else record
