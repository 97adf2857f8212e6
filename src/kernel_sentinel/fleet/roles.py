"""Who may read what in the shared PostgreSQL: the owner reads all; each hub user's role only its own rows.

``setup`` creates the tables (and the row-level security policies) as the database's owner; ``add_user``
makes one login role per hub user, member of ``kernel_sentinel_users``, whose rows are those whose
``username`` is the role's name. The owner bypasses the policies (PostgreSQL exempts a table's owner), which
is what makes the admin's ``kernel-sentinel fleet`` see every user.
"""

from __future__ import annotations

import re

from ..store import USERS_ROLE, SharedStore, StoreError, redact

_ROLE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,63}$")


def setup(admin_url: str) -> int:
    """Create or migrate the shared schema as its owner; return the schema version now in place."""
    with SharedStore(admin_url) as shared:
        shared.migrate()
        return shared.schema_version()


def add_user(admin_url: str, username: str, password: str) -> None:
    """Create (or update the password of) the login role of hub user ``username``; raises StoreError."""
    if not _ROLE_NAME.match(username):
        raise StoreError(f"not a user name kernel-sentinel makes a database role for: {username!r}")
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            role = sql.Identifier(username)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(USERS_ROLE), role))
    except psycopg.Error as exc:
        raise StoreError(f"cannot create the role of {username} at {redact(admin_url)}: {str(exc).splitlines()[0]}") from exc
