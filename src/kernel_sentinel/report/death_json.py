"""A death as JSON: take a ``DeathReport`` (or its dict), return ``why --json`` (DESIGN.md's keys first)."""

from __future__ import annotations

import json
from typing import Any

from ..records import DeathReport


def render(report: DeathReport | dict[str, Any]) -> str:
    """Return the report as indented JSON, the contract's keys first."""
    rec = report if isinstance(report, DeathReport) else DeathReport.from_dict(report)
    return json.dumps(rec.contract_first(), indent=2, default=str)
