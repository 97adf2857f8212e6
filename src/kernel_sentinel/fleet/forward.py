"""Carry records from a server's local outbox to the shared PostgreSQL, so no writer ever waits for it.

Writers (supervisor, kernel, server) commit a death or memory error locally with an outbox row, then
``kick()``: that starts one detached ``python -m kernel_sentinel.fleet.forward STORE`` (unless one is already
waiting to run) and returns at once. The forwarder sends the outbox in batches and deletes what landed; a
database that is down or slow costs only a delay (the rows stay, the next write, read or the long-lived
``Forwarder`` thread sends them). Sending twice is harmless: every record has a uid, inserted
``ON CONFLICT DO NOTHING``. Two lock files keep it to one forwarder at work and at most one waiting.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import STORE_NAME, SharedStore, Store, StoreError, StoreUnavailable, database_url, home_dir, shared_pool

BATCH = 500
_RUNNING: dict[str, Forwarder] = {}  # store path -> this process's Forwarder thread (kick() wakes it)


@dataclass
class ForwardResult:
    """What one forwarding pass did: records sent, records still waiting (``Store.outbox_counts``), refused
    ones, and why it stopped."""

    sent: int = 0
    waiting: int = 0
    refused: int = 0
    error: str | None = None


def forward(
    path: str | os.PathLike[str] | None = None, url: str | None = None, *, shared: SharedStore | None = None,
    pool: Any = None, connect_timeout: float = 3.0,
) -> ForwardResult:
    """Send every outbox record of the local store at ``path`` to the shared database; return what happened.

    Never raises for an absent database: the result's ``error`` says why records still wait.
    """
    store_path = Path(path) if path is not None else home_dir() / STORE_NAME
    result = ForwardResult()
    try:
        url = url or database_url()
    except StoreError as exc:
        result.error = str(exc)
        return result
    if not url or not store_path.exists():
        return result
    own = None
    try:
        with Store(store_path, create=False) as local:
            if "outbox" not in {r["name"] for r in local.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}:
                return result
            # A record refused before (and maybe queued again since) is still here: what this server reported
            # holding back may change in this pass, so it reports again at the end.
            had_refusals = bool(local.rows("SELECT 1 FROM outbox WHERE last_error IS NOT NULL LIMIT 1"))
            last = 0
            while True:
                batch = local.outbox(BATCH, after=last)
                if not batch:
                    break
                last = batch[-1]["id"]
                if shared is None:
                    shared = own = SharedStore(url, pool=pool, connect_timeout=connect_timeout)
                done, refused = _send(shared, batch)
                if refused:
                    local.outbox_refused([r["id"] for r in refused], refused[0]["error"])
                    result.refused += len(refused)
                if done:
                    local.outbox_done(done)
                    result.sent += len(done)
            state = local.outbox_state()
            result.waiting = local.outbox_counts()[0]  # the store's one definition: not yet sent, not given up
            if state["refused"] or had_refusals:
                # Tell the shared database what this server holds back (or that it holds nothing back now):
                # the admin's fleet runs elsewhere and cannot read this outbox.
                if shared is None:
                    shared = own = SharedStore(url, pool=pool, connect_timeout=connect_timeout)
                _report_status(shared, store_path, state)
    except StoreError as exc:  # StoreUnavailable included: the rows stay in the outbox
        result.error = str(exc)
        try:
            with Store(store_path, create=False) as local:
                result.waiting = local.outbox_counts()[0]
        except StoreError:
            pass
    finally:
        if own is not None:
            own.close()
    return result


def _report_status(shared: SharedStore, store_path: Path, state: dict[str, Any]) -> None:
    """Record this store's refusals in the shared database; a database older than the status table is no
    reason to stop forwarding (the next ``fleet --setup`` adds it)."""
    import socket

    try:
        shared.report_outbox(socket.gethostname(), str(store_path), state)
    except StoreUnavailable:
        raise
    except StoreError:
        pass


def _send(shared: SharedStore, batch: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
    """Insert a batch; return (outbox ids that landed, rows the database refused, each with its ``error``).

    A refused batch is retried record by record so that one bad record (a role writing another user's
    name) does not hold back the others. An outage raises StoreUnavailable: nothing is marked.
    """
    done: list[int] = []
    refused: list[dict[str, Any]] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in batch:
        by_kind.setdefault(row["kind"], []).append(row)
    for kind, rows in by_kind.items():
        try:
            shared.insert(kind, [r["payload"] for r in rows])
            done.extend(r["id"] for r in rows)
        except StoreUnavailable:
            raise
        except StoreError:
            for r in rows:
                try:
                    shared.insert(kind, [r["payload"]])
                    done.append(r["id"])
                except StoreUnavailable:
                    raise
                except StoreError as exc:
                    refused.append({**r, "error": str(exc)})
    return done, refused


def kick(path: str | os.PathLike[str] | None = None) -> None:
    """Have the outbox of the store at ``path`` forwarded soon, without waiting: wake this process's
    Forwarder thread, else start a detached forwarder process unless one is already waiting to run."""
    store_path = Path(path) if path is not None else home_dir() / STORE_NAME
    running = _RUNNING.get(str(store_path))
    if running is not None and running.alive:
        running.kick()
        return
    pending = _try_lock(store_path.parent / "forward.pending")
    if pending is None:
        return  # a forwarder waits to run: it will see this record
    os.close(pending)
    subprocess.Popen(
        [sys.executable, "-m", "kernel_sentinel.fleet.forward", str(store_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def forward_once_locked(store_path: Path) -> ForwardResult:
    """Return the result of one pass made under the store's forwarding locks (the detached process's body).

    The "pending" lock is held while waiting for the "working" lock and released before reading the outbox,
    so a record committed after that moment finds no forwarder pending and starts the next one.
    """
    pending = _try_lock(store_path.parent / "forward.pending")
    if pending is None:
        return ForwardResult()
    work = os.open(store_path.parent / "forward.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(work, fcntl.LOCK_EX)
        os.close(pending)
        return forward(store_path)
    finally:
        os.close(work)


class Forwarder:
    """A daemon thread that forwards the outbox every ``interval`` seconds and whenever a write kicks it.

    For long-lived processes (the server extension): it keeps a connection pool and retries an absent
    database with a back-off, so records written while it was down land when it is back. Threads: ``kick``
    and ``stop`` may be called from any thread; everything else runs on the Forwarder's own thread.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, url: str | None = None, *, interval: float = 30.0
    ) -> None:
        self.path = Path(path) if path is not None else home_dir() / STORE_NAME
        self.url = url or database_url()
        self.interval = interval
        self.last = ForwardResult()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernel-sentinel-forwarder", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> Forwarder:
        if self.url:
            _RUNNING[str(self.path)] = self
            self._thread.start()
        return self

    def kick(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if _RUNNING.get(str(self.path)) is self:
            del _RUNNING[str(self.path)]

    def _run(self) -> None:
        delay = 1.0
        pool = shared_pool(self.url) if self.url else None
        while not self._stop.is_set():
            self.last = forward(self.path, self.url, pool=pool)
            if self.last.error and self.last.waiting:
                delay = min(delay * 2, self.interval)  # down: retry soon, then less often
                self._wake.wait(delay)
            else:
                delay = 1.0
                self._wake.wait(self.interval)
            self._wake.clear()


def main(argv: list[str] | None = None) -> int:
    """The detached forwarder process: one locked pass over the named store's outbox."""
    args = sys.argv[1:] if argv is None else argv
    forward_once_locked(Path(args[0]) if args else home_dir() / STORE_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
