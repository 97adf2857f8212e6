"""The ``kernel_death`` event: its schema (registered on the server's event logger) and its data.

One event per kernel death, carrying the ``why --json`` dict (the records' ``DeathReport``) with ``server``,
``kernel_name`` and ``notebook`` set where known. JupyterLab reads it from ``/api/events/subscribe``. The
schema's properties are the ``DeathReport`` schema's (one source for both), plus ``sentinel``: false when the
Jupyter server alone explained the death (a stock kernel), so the UI can say how to get the full story.
"""

from __future__ import annotations

import math
from typing import Any

from ..records import DeathReport
from ..records.schema import schema_of

SCHEMA_ID = "https://events.kernel-sentinel.dev/kernel_death"
SCHEMA_VERSION = "1"


def event_schema() -> dict[str, Any]:
    """Return the event's schema for ``EventLogger.register_event_schema`` (jupyter_events' metaschema)."""
    report = schema_of(DeathReport, root=False)
    return {
        "$id": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "title": "A Jupyter kernel died",
        "description": (
            "Emitted by kernel_sentinel.server once per kernel death: the `kernel-sentinel why --json` report "
            "of that death, with the server, kernel name and notebook where known."
        ),
        "type": "object",
        "required": ["kernel_id", "cause", "summary", "remedy"],
        "properties": {
            **report["properties"],
            "sentinel": {
                "description": "true: explained by the sentinel kernel's autopsy; false: by the Jupyter server alone",
                "type": "boolean",
            },
        },
    }


def event_data(
    report: dict[str, Any], *, server: str | None, kernel_name: str | None, notebook: str | None
) -> dict[str, Any]:
    """Return the event's data: the report, contract keys first, with where the kernel ran (pure)."""
    record = DeathReport.from_dict(_json_safe(report))
    record.server = record.server or server
    record.kernel_name = record.kernel_name or kernel_name
    record.notebook = record.notebook or notebook
    data = record.contract_first()
    data.setdefault("sentinel", True)
    return data


def _json_safe(value: Any) -> Any:
    """Return ``value`` with only JSON types (jupyter_events validates and serialises the data)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
