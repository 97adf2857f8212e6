"""The fleet summary as JSON: take a ``FleetSummary``, return ``kernel-sentinel fleet --json``'s text
(the DESIGN.md contract's keys, plus by_key, by_day, source), key order as the query wrote it."""

from __future__ import annotations

import json

from ..records import FleetSummary


def render(summary: FleetSummary) -> str:
    """Return the summary as indented JSON."""
    return json.dumps(summary.to_dict(), indent=2, default=str)
