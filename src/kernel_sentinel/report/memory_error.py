"""The guard's MemoryBudgetError as the notebook shows it: take a ``GuardEvidence`` carrying its explanation,
return the mime bundle to display and the exception's one-line message.

The guard's entry to the renderers (``guard/extension.py``): it builds the record
(``GuardEvidence.explained``) and hands it over; the formats themselves are ``guard_text``, ``guard_html``
and ``guard_message``.
"""

from __future__ import annotations

from ..records import GuardEvidence
from .guard_html import render as render_html
from .guard_message import render as error_message
from .guard_text import render as render_text

__all__ = ["error_message", "render", "render_html", "render_text"]


def render(evidence: GuardEvidence) -> dict[str, str]:
    """Return a Jupyter mime bundle ``{"text/plain": ..., "text/html": ...}`` for the guard's record."""
    return {"text/plain": render_text(evidence), "text/html": render_html(evidence)}
