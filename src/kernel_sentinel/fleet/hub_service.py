"""The fleet page as a JupyterHub-managed service: ``/services/kernel-sentinel/`` behind the hub's own login.

Run by the hub (``c.JupyterHub.services``, see docs/kubernetes/ and the hub test); it reads the shared
PostgreSQL as its owner (``KERNEL_SENTINEL_DATABASE_URL``) through a connection pool, and shows the same page
as ``kernel-sentinel fleet --html``, or its JSON at ``?format=json``. Only hub admins may see it: every
user's deaths and cells are on it. Admins are the users the hub's OAuth model marks ``admin``, or those named
in ``KERNEL_SENTINEL_FLEET_ADMINS`` (comma-separated; the hub's ``Authenticator.admin_users``).
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import urlparse

from tornado import ioloop, web
from tornado.httpserver import HTTPServer

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join

from ..records import FleetSummary
from ..report import render
from ..store import SharedStore, StoreError, database_url, redact, shared_pool
from .query import BY_KEYS, fleet_summary, parse_since


class FleetPage(HubOAuthenticated, web.RequestHandler):
    """GET the fleet page (HTML, or JSON with ?format=json); ``since`` and ``by`` as in the CLI."""

    @web.authenticated
    def get(self) -> None:
        user: dict[str, Any] = self.get_current_user()
        if not _is_admin(user):
            raise web.HTTPError(403, f"{user.get('name')} is not a hub admin")
        since, by = self.get_argument("since", "7d"), self.get_argument("by", "cause")
        try:
            parse_since(since)
            if by not in BY_KEYS:
                raise ValueError(f"by must be one of {', '.join(BY_KEYS)}")
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        url = database_url()
        if not url:
            raise web.HTTPError(500, "KERNEL_SENTINEL_DATABASE_URL is not set for the service")
        try:
            store = SharedStore(url, pool=shared_pool(url))
            summary = fleet_summary(store, since=since, by=by)
        except StoreError as exc:
            raise web.HTTPError(503, str(exc)) from exc
        summary["source"] = redact(url)
        record = FleetSummary.from_dict(summary)
        if self.get_argument("format", "html") == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(render(record, "json"))
        else:
            self.finish(render(record, "html"))


def _is_admin(user: dict[str, Any]) -> bool:
    named = {n.strip() for n in os.environ.get("KERNEL_SENTINEL_FLEET_ADMINS", "").split(",") if n.strip()}
    return bool(user.get("admin")) or user.get("name") in named


def make_app() -> web.Application:
    """Return the service's tornado app, routed under the prefix the hub gives it."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/kernel-sentinel/")
    return web.Application(
        [(prefix, FleetPage), (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler)],
        cookie_secret=secrets.token_bytes(32),
    )


def main() -> None:
    """Serve on the address the hub gives (``JUPYTERHUB_SERVICE_URL``) until stopped."""
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    HTTPServer(make_app()).listen(url.port or 80, url.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
