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


def user_password(secret: str, username: str) -> str:
    """Return hub user ``username``'s database password, derived from one hub-side secret (HMAC-SHA256), so
    the hub can hand each server its own credentials without storing a password per user."""
    import hashlib
    import hmac

    return hmac.new(secret.encode(), username.encode(), hashlib.sha256).hexdigest()


def user_url(admin_url: str, username: str, secret: str) -> str:
    """Make sure ``username`` has its role, and return the URL its server writes with (the admin's URL with
    that user and its derived password): what a hub's ``pre_spawn_hook`` puts in the server's environment."""
    import urllib.parse

    password = user_password(secret, username)
    add_user(admin_url, username, password)
    parts = urllib.parse.urlsplit(admin_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{urllib.parse.quote(username, safe='')}:{password}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
