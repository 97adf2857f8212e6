"""The advisor's findings as JSON: the list promised by DESIGN.md (``check --json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..advise.findings import Finding


def findings_json(findings: Sequence[Finding]) -> str:
    """Return the JSON list of findings, each with path, cell, line, kind, estimate_bytes, budget_bytes, message, remedy."""
    return json.dumps([f.to_dict() for f in findings], indent=2)
