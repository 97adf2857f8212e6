"""This user's deaths in the shared PostgreSQL store (``KERNEL_SENTINEL_DATABASE_URL``), for ``GET deaths``.

On a hub every user's server forwards its deaths to one database; a user's deaths from their other servers (a
pod deleted since, a named server, another node) live only there. The server reads them with the URL it was
given (on a hub, the user's own role: row-level security already limits it to that user's rows) and asks for
this user's rows by name as well, so a server given the owner's URL still shows its user nothing of anyone else.
Reads go through the process's connection pool (``store.shared_pool``); every failure is a one-line
``StoreError`` the handler turns into "local rows only".
"""

from __future__ import annotations

import json
from typing import Any


def this_user() -> str | None:
    """Return the user name this server's records carry (the hub's user, else the OS account): whose rows to read."""
    from ..store import identity

    return identity({}).get("username")


def shared_deaths(url: str, username: str | None, limit: int) -> list[dict[str, Any]]:
    """Return ``username``'s deaths in the shared store as why-reports with their ``uid`` and ``died_at``,
    newest first; raise ``StoreError`` (one line) when the database cannot be read."""
    from ..store import SharedStore, StoreError, shared_pool

    if not username:
        raise StoreError("no user name to scope the shared store's deaths by")
    try:
        pool = shared_pool(url)
    except Exception as exc:  # psycopg_pool missing or the URL refused by it: one line, as the store says it
        raise StoreError(f"cannot pool connections to the shared store: {exc}") from exc
    # migrate=False: a user's role may read but never set the schema up (that is the owner's `fleet --setup`).
    with SharedStore(url, pool=pool, migrate=False) as shared:
        rows = shared.rows(
            "SELECT uid, died_at, report FROM deaths WHERE username = ? ORDER BY died_at DESC, id DESC LIMIT ?",
            (username, limit),
        )
    out = []
    for row in rows:
        try:
            report = json.loads(row["report"])
        except (TypeError, ValueError):
            continue  # a row another version wrote badly: left out rather than failing the whole list
        if isinstance(report, dict):
            out.append({**report, "died_at": report.get("died_at", row["died_at"]), "uid": row["uid"]})
    return out
