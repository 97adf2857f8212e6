"""What this server's outbox still holds for the shared database, and why: one line for every command that
shows the store (``fleet``, ``deaths``), so that records waiting or refused are never kept silently.

A record the database refuses (a server writing under another user's role, a value PostgreSQL will not take)
stays in the local outbox and in the local store: it is not lost, but it is not in the fleet's view either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def outbox_state(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Return the local store's outbox state (``Store.outbox_state``) plus its ``path``, or None when there is no
    store or it cannot be read (the command's own read names that fault)."""
    from ..store import STORE_NAME, Store, StoreError, home_dir

    store_path = Path(path) if path is not None else home_dir() / STORE_NAME
    if not store_path.exists():
        return None
    try:
        with Store(store_path, create=False) as store:
            return {**store.outbox_state(), "path": str(store_path)}
    except StoreError:
        return None


def outbox_line(state: dict[str, Any] | None, *, unreachable: str | None = None) -> str | None:
    """Return one line saying how many of this server's records are not in the shared database and why, or
    None when none are. ``unreachable`` is why the database could not be reached just now (waiting records)."""
    if not state or not (state.get("waiting") or state.get("refused")):
        return None
    waiting, refused = int(state.get("waiting") or 0), int(state.get("refused") or 0)
    parts = []
    if refused:
        given_up = int(state.get("given_up") or 0)
        retry = "no longer retried" if given_up == refused else (
            "retried up to 3 times" if not given_up else f"{given_up} no longer retried")
        parts.append(f"{_records(refused)} refused by the shared database ({retry}): {state.get('reason') or 'no reason given'}")
    if waiting:
        why = f" ({unreachable})" if unreachable else ""
        parts.append(f"{_records(waiting)} waiting to be sent{why}")
    where = state.get("path") or "the local store"
    return f"{'; '.join(parts)}; kept in this server's outbox ({where}), not in the shared view"


def _records(n: int) -> str:
    return f"{n} record{'s' if n != 1 else ''}"
