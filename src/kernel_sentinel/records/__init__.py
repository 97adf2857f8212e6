"""The records: one type per pipeline, the joints between the parts (a leaf: imports nothing of the package).

- ``DeathReport``: a kernel death, the ``why --json`` dict (autopsy -> why, run, server, fleet);
- ``RunReport`` (with ``CellReport``): a headless run, ``run --json`` (run -> renderers);
- ``Finding``: one kernel killer found in code, an item of ``check --json`` (advise -> renderers, guard);
- ``GuardEvidence``: one intervention of the guard, with its explanation (guard -> renderers, store, fleet);
- ``FleetSummary``: deaths and memory errors across servers, ``fleet --json`` (fleet -> renderers, hub page).

Each has ``to_dict``/``from_dict`` that give exactly the JSON of the contracts (DESIGN.md), key order
included; ``python -m kernel_sentinel.records.schema DIR`` writes their JSON schemas (docs/schemas/).
"""

from __future__ import annotations

from ..sizes import format_bytes  # how records show sizes; re-exported for the renderers (report/ imports records only)
from .death import DeathReport
from .finding import Finding
from .fleet import FleetCell, FleetCounts, FleetSummary
from .guard import GuardEvidence, GuardExplanation
from .run import CellReport, RunReport

RECORDS = (DeathReport, RunReport, Finding, GuardEvidence, FleetSummary)

__all__ = ["RECORDS", "CellReport", "DeathReport", "Finding", "FleetCell", "FleetCounts", "FleetSummary", "GuardEvidence",
           "GuardExplanation", "RunReport", "format_bytes"]
