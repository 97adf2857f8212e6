"""REST under ``/api/kernel-sentinel/``: the recorded deaths and a running kernel's memory and guard.

Every handler is behind the server's own authentication and authorization (``web.authenticated`` and
jupyter_server's ``authorized``, resource ``kernels``): no token, no data (403). Bad input is a 400 with one
line, an unknown kernel a 404, an unreachable store a 503; the error body is jupyter_server's JSON
(``{"message": ...}``), never a traceback.

With a shared database configured (``KERNEL_SENTINEL_DATABASE_URL``), ``deaths`` without ``kernel_id`` adds this
user's deaths from it (``shared_deaths``): their other servers' deaths. ``deaths?kernel_id=`` asks about a kernel of
this server, whose death is written here first, so it reads this machine's store alone and never waits on a
remote database (the UI asks it the moment a kernel dies).
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
SHARED_WAIT = 2.0  # seconds the shared database may take before this machine's deaths are answered alone
SHARED_HEADER = "X-Kernel-Sentinel-Shared"  # "ok", or why the shared store's deaths are missing (one line)


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
        out.append({**row["report"], "death_id": row["id"], "shown": row["shown_at"] is not None,
                    "stored": "local", "uid": row.get("uid"), "died_at": row["report"].get("died_at", row["died_at"])})
        if len(out) >= limit:
            break
    return out


def merge_deaths(local: list[dict[str, Any]], shared: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Return this machine's deaths and the shared store's, newest first, each death once.

    A death this server recorded is in both (the outbox forwarded it): the local row wins, since only it has
    ``death_id`` and ``shown``. The others are marked ``"stored": "shared"`` with ``death_id`` None.
    """
    seen = {d["uid"] for d in local if d.get("uid")}
    extra = [{**d, "death_id": None, "shown": None, "stored": "shared"} for d in shared if d.get("uid") not in seen]
    both = sorted([*local, *extra], key=lambda d: float(d.get("died_at") or 0.0), reverse=True)
    return both[:limit]


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
        limit = int(text)
        loop = asyncio.get_running_loop()
        shared = None if kernel_id else asyncio.ensure_future(self._shared(loop, limit))
        try:
            deaths = await loop.run_in_executor(None, list_deaths, self.watch.home, kernel_id, limit)
        except StoreError as exc:
            if shared is not None:
                shared.cancel()
            raise web.HTTPError(503, f"kernel-sentinel's store is unreachable: {exc}") from None
        if shared is not None:
            rows, state = await shared
            self.set_header(SHARED_HEADER, state)
            deaths = merge_deaths(deaths, rows, limit)
        self.finish_json(deaths)

    async def _shared(self, loop: asyncio.AbstractEventLoop, limit: int) -> tuple[list[dict[str, Any]], str]:
        """Return (this user's deaths in the shared store, "ok" or why there are none): [] without one."""
        from ..store import StoreError, database_url
        from .shared_deaths import shared_deaths, this_user

        try:
            url = database_url()  # None: this machine's store alone; StoreError: not a postgresql:// URL
        except StoreError as exc:
            return [], _one_line(f"unusable: {exc}")
        if url is None:
            return [], "none"
        try:
            rows = await asyncio.wait_for(loop.run_in_executor(None, shared_deaths, url, this_user(), limit), SHARED_WAIT)
        except asyncio.TimeoutError:
            return [], f"unreachable: no answer in {SHARED_WAIT:.0f} s"
        except Exception as exc:  # StoreError's one line, or anything else: this machine's deaths are answered all the same
            return [], _one_line(f"unreachable: {exc}")
        return rows, "ok"


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


def _one_line(text: str) -> str:
    """Return ``text`` fit for an HTTP header: one line of printable ASCII, at most 300 characters."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii")[:300]


def handlers(base_url: str, watch: Any) -> list[tuple[str, type, dict[str, Any]]]:
    """Return the URL specs to add to the server's web app."""
    from jupyter_server.utils import url_path_join

    root = url_path_join(base_url, "api", "kernel-sentinel")
    return [
        (url_path_join(root, "deaths"), DeathsHandler, {"watch": watch}),
        (url_path_join(root, "kernels", r"(?P<kernel_id>[^/]+)"), KernelHandler, {"watch": watch}),
    ]
