"""A death's why-report as JSON (DESIGN.md's ``why --json`` contract)."""

from __future__ import annotations

import json
from typing import Any

CONTRACT_KEYS = ("kernel_id", "cause", "summary", "exit", "cell", "memory", "remedy")


def render_death_json(report: dict[str, Any]) -> str:
    """Return the report as indented JSON, the contract's keys first."""
    ordered = {k: report.get(k) for k in CONTRACT_KEYS}
    ordered.update({k: v for k, v in report.items() if k not in ordered})
    return json.dumps(ordered, indent=2, default=str)
