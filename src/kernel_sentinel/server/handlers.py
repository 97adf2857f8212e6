"""REST under ``/api/kernel-sentinel/``: the recorded deaths and a running kernel's memory and guard.

Every handler is behind the server's own authentication and authorization (``web.authenticated`` and
jupyter_server's ``authorized``, resource ``kernels``): no token, no data (403). Bad input is a 400 with one
line, an unknown kernel a 404, an unreachable store a 503; the error body is jupyter_server's JSON
(``{"message": ...}``), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
SCAN_LIMIT = 10_000  # deaths read to find one kernel's (the store has no per-kernel list yet)
KERNEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def list_deaths(home: Path, kernel_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Return the stored deaths' why-reports, newest first.

    Opens the store as a writer would (creating and migrating it when missing): a store some kernel is
    creating this very moment is then waited for, not read half-made. Raises ``StoreError`` (one line) when
    it cannot be opened or read.
    """
    from ..store import STORE_NAME, Store

    with Store(home / STORE_NAME) as store:
        rows = store.deaths(SCAN_LIMIT if kernel_id else limit)
    out = []
    for row in rows:
        if kernel_id and row["kernel_id"] != kernel_id:
            continue
        out.append({**row["report"], "death_id": row["id"], "shown": row["shown_at"] is not None})
        if len(out) >= limit:
            break
    return out


class _Base(APIHandler):  # type: ignore[misc]
    auth_resource = "kernels"

    def initialize(self, watch: Any) -> None:
        self.watch = watch

    def finish_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))


class DeathsHandler(_Base):
    """``GET deaths[?kernel_id=ID][&limit=N]`` -> the why-reports of recorded deaths, newest first."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..store import StoreError

        kernel_id = self.get_query_argument("kernel_id", None)
        if kernel_id is not None and not KERNEL_ID.match(kernel_id):
            raise web.HTTPError(400, "kernel_id: letters, digits, '.', '_' and '-' only")
        text = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise web.HTTPError(400, f"limit: a whole number from 1 to {MAX_LIMIT}")
        loop = asyncio.get_running_loop()
        try:
            deaths = await loop.run_in_executor(None, list_deaths, self.watch.home, kernel_id, int(text))
        except StoreError as exc:
            raise web.HTTPError(503, f"kernel-sentinel's store is unreachable: {exc}") from None
        self.finish_json(deaths)


class KernelHandler(_Base):
    """``GET kernels/ID`` -> the kernel's guard state, memory against its budget, deaths and memory errors."""

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        if not KERNEL_ID.match(kernel_id):
            raise web.HTTPError(400, "kernel id: letters, digits, '.', '_' and '-' only")
        try:
            status = await self.watch.kernel_status(kernel_id)
        except KeyError:
            raise web.HTTPError(404, f"no kernel {kernel_id} runs on this server") from None
        except Exception as exc:  # /proc or the flight record unreadable: say so, the kernel is untouched
            raise web.HTTPError(503, f"cannot read kernel {kernel_id}'s state: {exc}") from None
        self.finish_json(status)


def handlers(base_url: str, watch: Any) -> list[tuple[str, type, dict[str, Any]]]:
    """Return the URL specs to add to the server's web app."""
    from jupyter_server.utils import url_path_join

    root = url_path_join(base_url, "api", "kernel-sentinel")
    return [
        (url_path_join(root, "deaths"), DeathsHandler, {"watch": watch}),
        (url_path_join(root, "kernels", r"(?P<kernel_id>[^/]+)"), KernelHandler, {"watch": watch}),
    ]
