"""The guard's memory error as plain text: take a ``GuardEvidence`` that carries its explanation, return the text.

Headline, facts, largest variables, hidden references, remedy: what the notebook shows as text/plain above
the MemoryBudgetError. Reads only the record (``evidence.explanation``, written by the guard).
"""

from __future__ import annotations

from typing import Any

from ..records import GuardEvidence, format_bytes

REMEDY_MARK = "->"


def words(evidence: GuardEvidence) -> Any:
    """Return the record's explanation; ValueError (one line) when the guard left none to render."""
    if evidence.explanation is None:
        raise ValueError("this guard evidence carries no explanation to render")
    return evidence.explanation


def _variable_line(v: dict[str, Any]) -> str:
    approx = "" if v.get("exact", True) else "~"
    detail = f", {v['detail']}" if v.get("detail") else ""
    return f"{v['name']} {approx}{format_bytes(v['nbytes'])} ({v['type_name']}{detail})"


def _hidden_line(h: dict[str, Any]) -> str:
    line = f"{h['name']} holds {format_bytes(h['nbytes'])}"
    if h["exclusive_bytes"] != h["nbytes"]:
        line += f" ({format_bytes(h['exclusive_bytes'])} only there)"
    if h.get("holds"):
        line += f": {h['holds']}"
    return line


def render(evidence: GuardEvidence) -> str:
    """Return the plain-text form: headline, facts, largest variables, hidden references, remedy."""
    e = words(evidence)
    lines = [f"MemoryBudgetError: {e.headline}"]
    lines += [f"  {fact}" for fact in e.facts]
    if e.top_variables:
        lines.append("  Largest variables: " + "; ".join(_variable_line(v) for v in e.top_variables))
    for h in e.hidden:
        lines.append(f"  Hidden: {_hidden_line(h)}")
    lines.append(f"{REMEDY_MARK} {e.remedy}")
    return "\n".join(lines)
