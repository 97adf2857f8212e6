"""The guard's memory error in one line: take a ``GuardEvidence`` that carries its explanation, return the
exception's message (the headline and the gist of the remedy).

The full explanation is displayed above the traceback; this line is what survives where only the error is
kept (nbclient's CellExecutionError, logs, the store), so it names the remedy too. Reads only the record.
"""

from __future__ import annotations

from ..records import GuardEvidence
from .guard_text import words


def _remedy_gist(remedy: str) -> str:
    """Return the remedy's lead ("Keep it on disk"), the part before its first colon or full stop."""
    for mark in (": ", ". "):
        head, sep, _ = remedy.partition(mark)
        if sep and len(head) <= 70:
            return head.rstrip(".")
    return remedy.rstrip(".")


def render(evidence: GuardEvidence) -> str:
    """Return the exception's one-line message."""
    e = words(evidence)
    text = f"{e.headline} Try: {_remedy_gist(e.remedy)}."
    return " ".join(text.split())  # one line, whatever the parts contain
