"""A run as JSON: take a ``RunReport``, return ``kernel-sentinel run --json`` (schema kernel-sentinel/run/1)."""

from __future__ import annotations

import json
from typing import Any

from ..records import RunReport
from . import plain


def render(report: RunReport | dict[str, Any]) -> str:
    """Return the report as indented JSON text."""
    return json.dumps(plain(report), indent=2) + "\n"
