"""Findings as JSON: take a list of ``Finding``, return ``check --json`` (DESIGN.md's list)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..records import Finding


def render(findings: Sequence[Finding]) -> str:
    """Return the JSON list of findings, each with path, cell, line, kind, estimate_bytes, budget_bytes, message, remedy."""
    return json.dumps([f.to_dict() for f in findings], indent=2)
