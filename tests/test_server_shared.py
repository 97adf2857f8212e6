"""``GET deaths`` with a shared PostgreSQL: a real ``jupyter server`` and a real PostgreSQL started here.

The server runs as hub user alice (``JUPYTERHUB_USER``, her own database role in ``KERNEL_SENTINEL_DATABASE_URL``).
Her deaths from another server are in the shared store only; bob's are there too and must never show. A stock
kernel of this server is killed, so one death is in both stores (the server forwards it) and must be listed once.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import postgres, wait_for  # noqa: F401 - the fixture
from server_support import STOCK, JupyterServer

from kernel_sentinel.fleet import roles
from kernel_sentinel.fleet.forward import forward
from kernel_sentinel.server.shared_deaths import shared_deaths
from kernel_sentinel.store import DATABASE_URL_ENV, Store


def _shared_header(server: JupyterServer) -> str:
    """Return the ``X-Kernel-Sentinel-Shared`` header of ``GET deaths``: "ok", "none" or why the shared rows are missing."""
    req = urllib.request.Request(f"{server.url}/api/kernel-sentinel/deaths", headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["X-Kernel-Sentinel-Shared"]


def _report(kernel_id: str, user: str, died_at: float) -> dict:
    return {
        "kernel_id": kernel_id, "cause": "oom_kill", "summary": f"{user}'s kernel was OOM-killed",
        "exit": {"signal": "SIGKILL"}, "cell": {"execution_count": 2, "code": "x = bytearray(10**10)"},
        "user": user, "host": "node-2", "died_at": died_at, "memory_exhausted": True,
    }


def _forwarded(home: Path, url: str, monkeypatch: pytest.MonkeyPatch, report: dict) -> None:
    """Record one death in another server's local store and forward it, as that server would have."""
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    with Store(home / "store.db") as store:
        store.add_death(report, {"pid": 1}, died_at=report["died_at"])
    assert forward(home / "store.db").sent == 1
    monkeypatch.delenv(DATABASE_URL_ENV)


@pytest.fixture(scope="module")
def users(postgres) -> dict[str, str]:
    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "alice", "pw-alice")
    roles.add_user(postgres.admin_url, "bob", "pw-bob")
    return {"alice": postgres.url("alice", "pw-alice"), "bob": postgres.url("bob", "pw-bob")}


@pytest.fixture(scope="module")
def alice_server(tmp_path_factory: pytest.TempPathFactory, users: dict[str, str]) -> Iterator[JupyterServer]:
    env = {DATABASE_URL_ENV: users["alice"], "JUPYTERHUB_USER": "alice"}
    with JupyterServer(tmp_path_factory.mktemp("alice"), env=env) as srv:
        yield srv


def test_deaths_include_the_users_shared_rows_once_and_no_one_elses(
    postgres, users, alice_server: JupyterServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forwarded(tmp_path / "alice-elsewhere", users["alice"], monkeypatch, _report("k-alice-elsewhere", "alice", 1_700_000_000.0))
    _forwarded(tmp_path / "bob", users["bob"], monkeypatch, _report("k-bob", "bob", 1_700_000_100.0))
    # A death of this server: recorded here, and forwarded by the server to the shared store.
    kernel_id = alice_server.start_kernel(STOCK)
    alice_server.client(kernel_id).stop_channels()
    [pid] = alice_server.kernel_pids(kernel_id)
    os.kill(pid, signal.SIGKILL)
    alice_server.wait_for("the death", lambda: alice_server.deaths(kernel_id), timeout=60)
    sent = wait_for(lambda: postgres.count("deaths") == 3, timeout=60)
    assert sent, "the server did not forward its death to the shared store"

    status, deaths = alice_server.request("GET", "/api/kernel-sentinel/deaths")
    assert status == 200 and _shared_header(alice_server) == "ok"
    by_kernel = {d["kernel_id"]: d for d in deaths}
    assert [d["kernel_id"] for d in deaths].count(kernel_id) == 1, deaths  # in both stores, listed once
    here, elsewhere = by_kernel[kernel_id], by_kernel["k-alice-elsewhere"]
    assert here["stored"] == "local" and isinstance(here["death_id"], int) and here["cause"] == "external_kill"
    assert elsewhere["stored"] == "shared" and elsewhere["death_id"] is None and elsewhere["cause"] == "oom_kill"
    assert "k-bob" not in by_kernel  # bob's death is in the same table: never shown to alice
    assert [d["kernel_id"] for d in deaths] == [kernel_id, "k-alice-elsewhere"]  # newest first
    # A kernel id is this server's: answered from this machine's store alone, without the remote database.
    assert alice_server.deaths("k-alice-elsewhere") == []
    assert [d["kernel_id"] for d in alice_server.deaths(kernel_id)] == [kernel_id]


def test_the_owners_url_still_reads_only_this_users_rows(postgres, users, tmp_path, monkeypatch) -> None:
    """Row-level security exempts the owner: the server's read names its user itself (a server wrongly given the
    owner's URL shows nobody else's deaths)."""
    _forwarded(tmp_path / "bob2", users["bob"], monkeypatch, _report("k-bob-2", "bob", 1_700_000_200.0))
    alice = {r["kernel_id"] for r in shared_deaths(postgres.admin_url, "alice", 50)}
    assert "k-alice-elsewhere" in alice and not any(k.startswith("k-bob") for k in alice), alice
    assert {r["kernel_id"] for r in shared_deaths(postgres.admin_url, "bob", 50)} >= {"k-bob", "k-bob-2"}


def test_database_down_answers_this_machines_deaths_and_says_why(postgres, alice_server: JupyterServer) -> None:
    local = [d for d in alice_server.deaths() if d["stored"] == "local"]
    assert local  # the first test's death of this server
    postgres.stop()
    try:
        status, deaths = alice_server.request("GET", "/api/kernel-sentinel/deaths")
        assert status == 200
        assert [d["kernel_id"] for d in deaths] == [d["kernel_id"] for d in local]
        assert all(d["stored"] == "local" for d in deaths)
        assert _shared_header(alice_server).startswith("unreachable"), _shared_header(alice_server)
        assert alice_server.request("GET", "/api/status")[0] == 200
    finally:
        postgres.start()
    assert any(d["stored"] == "shared" for d in alice_server.deaths())  # back once the database is
