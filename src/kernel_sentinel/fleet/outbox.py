"""Which records the shared database has not got, and why: one line for every command that shows the store
(``fleet``, ``deaths``), so that records waiting or refused are never kept silently. On a server it reads its
own outbox; the admin's ``fleet`` names every server's refusals, which their forwarders report to the shared
database (``outbox_status``), since the admin cannot read the servers' outboxes.

A record the database refuses (a server writing under another user's role, a value PostgreSQL will not take)
stays in the local outbox and in the local store: it is not lost, but it is not in the fleet's view either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import Store


def outbox_state(path: str | os.PathLike[str] | None = None, *, store: Store | None = None) -> dict[str, Any] | None:
    """Return the local store's outbox state (``Store.outbox_state``) plus its ``path``, or None when there is no
    store or it cannot be read (the command's own read names that fault).

    ``store``, already open (``deaths`` has it), is read instead of opening the store at ``path`` a second time.
    """
    from ..store import STORE_NAME, Store, StoreError, home_dir

    if store is not None:
        try:
            return {**store.outbox_state(), "path": str(store.path)}
        except StoreError:
            return None
    store_path = Path(path) if path is not None else home_dir() / STORE_NAME
    if not store_path.exists():
        return None
    try:
        with Store(store_path, create=False) as store:
            return {**store.outbox_state(), "path": str(store_path)}
    except StoreError:
        return None


def outbox_line(
    state: dict[str, Any] | None, *, unreachable: str | None = None, shared: dict[str, Any] | None = None
) -> str | None:
    """Return one line saying how many records are not in the shared database and why, or None when none are.

    ``state`` is this server's outbox (``outbox_state``): its waiting records, and its refused ones unless
    ``shared`` is given: the fleet-wide refusals every server's forwarder reported to the shared database
    (``fleet_summary``'s ``refused``), which the admin's ``fleet`` shows instead. ``unreachable`` is why the
    database could not be reached just now (waiting records).
    """
    parts = []
    if shared is not None and shared.get("records"):
        servers = shared.get("servers") or []
        named = ", ".join(f"{s.get('user')}@{s.get('host')}: {s.get('refused')}" for s in servers[:3])
        more = f", {len(servers) - 3} more" if len(servers) > 3 else ""
        reason = servers[0].get("reason") if servers else None
        parts.append(
            f"{_records(int(shared['records']))} refused by the shared database on {len(servers)} "
            f"server{'s' if len(servers) != 1 else ''} ({named}{more}; newest reason: {reason or 'none given'}), "
            "kept in their servers' outboxes"
        )
    elif state and state.get("refused"):
        refused, given_up = int(state["refused"]), int(state.get("given_up") or 0)
        hint = "fix the cause, then `kernel-sentinel fleet --retry-refused`"
        retry = f"no longer retried: {hint}" if given_up == refused else (
            "retried up to 3 times" if not given_up else f"{given_up} no longer retried: {hint}")
        parts.append(f"{_records(refused)} refused by the shared database ({retry}): {state.get('reason') or 'no reason given'}; "
                     f"kept in this server's outbox ({state.get('path') or 'the local store'})")
    if state and state.get("waiting"):
        why = f" ({unreachable})" if unreachable else ""
        parts.append(f"{_records(int(state['waiting']))} of this server waiting to be sent{why}, "
                     f"kept in its outbox ({state.get('path') or 'the local store'})")
    if not parts:
        return None
    return "; ".join(parts) + "; not in the shared view"


def _records(n: int) -> str:
    return f"{n} record{'s' if n != 1 else ''}"
