"""The shared store against a real PostgreSQL started here: round trip, 50 writers, an outage, per-user scoping."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import stat
import subprocess
import sys
import time

import psycopg
import pytest
from fleet_support import postgres, wait_for  # noqa: F401 - the fixture

from kernel_sentinel.fleet import roles
from kernel_sentinel.fleet.forward import Forwarder, forward
from kernel_sentinel.store import SCHEMA_VERSION, SharedStore, Store, StoreError, StoreUnavailable


def _report(kernel_id: str, pid: int, user: str = "alice", **extra) -> dict:
    return {
        "kernel_id": kernel_id, "cause": "oom_kill", "summary": f"oom {pid}", "exit": {"signal": "SIGKILL"},
        "cell": {"execution_count": 3, "code": "import numpy as np\nx = np.ones(10**10)  # big"},
        "user": user, "host": "node-1", "server": "http://127.0.0.1:8888/user/alice/", "kernel_name": "python3",
        "notebook": "course/week1.ipynb", "memory_exhausted": True, **extra,
    }


def _use(monkeypatch, url: str | None) -> None:
    if url:
        monkeypatch.setenv("KERNEL_SENTINEL_DATABASE_URL", url)
    else:
        monkeypatch.delenv("KERNEL_SENTINEL_DATABASE_URL", raising=False)


def test_round_trip_through_the_outbox(postgres, tmp_path, monkeypatch):
    _use(monkeypatch, postgres.admin_url)
    with Store(tmp_path / "store.db") as store:
        store.add_death(_report("k-round", 11), {"pid": 11}, died_at=1_700_000_000.5)
        store.add_memory_error({"kernel_id": "k-round", "summary": "asked for 8 GiB", "requested_bytes": 8 << 30,
                                "budget_bytes": 1 << 30, "code": "x = np.ones(10**9)", "user": "alice"})
        assert store.outbox_counts()[0] == 2
    result = forward(tmp_path / "store.db")
    assert (result.sent, result.waiting, result.error) == (2, 0, None)
    with SharedStore(postgres.admin_url) as shared:
        assert shared.schema_version() == SCHEMA_VERSION
        (row,) = shared.rows("SELECT * FROM deaths WHERE kernel_id = ?", ("k-round",))
        assert row["died_at"] == 1_700_000_000.5  # double precision: no timestamp rounding
        assert (row["username"], row["host"], row["kernel_name"], row["notebook"], row["memory_exhausted"]) == (
            "alice", "node-1", "python3", "course/week1.ipynb", 1)
        assert row["server"] == "http://127.0.0.1:8888/user/alice/" and row["library"] == "numpy"
        (err,) = shared.rows("SELECT * FROM memory_errors WHERE kernel_id = ?", ("k-round",))
        assert err["requested_bytes"] == 8 << 30 and err["cell_key"]
    assert forward(tmp_path / "store.db").sent == 0  # nothing left; sending again would be a no-op anyway
    with Store(tmp_path / "store.db") as store:  # the local copy stays: `why` reads it on this server
        assert store.death("k-round")["report"]["notebook"] == "course/week1.ipynb"


def test_sending_twice_is_harmless(postgres, tmp_path, monkeypatch):
    _use(monkeypatch, postgres.admin_url)
    with Store(tmp_path / "store.db") as store:
        store.add_death(_report("k-twice", 12), {"pid": 12})
        batch = store.outbox()
    with SharedStore(postgres.admin_url) as shared:
        shared.insert("death", [batch[0]["payload"]])  # as if a forwarder died after inserting, before deleting
        assert forward(tmp_path / "store.db").sent == 1
        assert shared.rows("SELECT count(*) AS n FROM deaths WHERE kernel_id = 'k-twice'")[0]["n"] == 1


def _writer(home: str, n: int, worker: int, url: str | None, prefix: str = "w") -> None:
    if url:
        os.environ["KERNEL_SENTINEL_DATABASE_URL"] = url
    else:
        os.environ.pop("KERNEL_SENTINEL_DATABASE_URL", None)
    for i in range(n):
        with Store(os.path.join(home, "store.db")) as store:
            store.add_death(_report(f"{prefix}{worker}-{i}", 1000 + i), {"pid": 1000 + i}, died_at=1000.0 + i)


def _run_writers(homes: list[str], n: int, url: str | None) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(homes[w % len(homes)], n, w, url)) for w in range(50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * 50


def test_fifty_writers_lose_nothing(postgres, tmp_path, monkeypatch):
    """50 processes at once: 10 servers' homes (5 writers each), each forwarding to one PostgreSQL."""
    _use(monkeypatch, postgres.admin_url)
    before = postgres.count("deaths")
    homes = [str(tmp_path / f"server{s}") for s in range(10)]
    _run_writers(homes, 8, postgres.admin_url)
    for home in homes:  # the detached forwarders may still be at work; a last pass sends what is left
        wait_for(lambda h=home: forward(os.path.join(h, "store.db")).waiting == 0, timeout=120)
    assert postgres.count("deaths") - before == 50 * 8
    for home in homes:
        with Store(os.path.join(home, "store.db")) as store:
            assert len(store.deaths(limit=1000)) == 5 * 8 and store.outbox_counts()[0] == 0


def test_fifty_writers_one_sqlite_store(tmp_path, monkeypatch):
    _use(monkeypatch, None)
    _run_writers([str(tmp_path)], 8, None)
    with Store(tmp_path / "store.db") as store:
        assert len(store.deaths(limit=10_000)) == 50 * 8
        assert store.outbox_counts()[0] == 0  # no shared database configured: nothing queued


def test_database_down_mid_run_costs_only_a_delay(postgres, tmp_path, monkeypatch):
    _use(monkeypatch, postgres.admin_url)
    home = tmp_path / "server"
    path = home / "store.db"
    forwarder = Forwarder(path, interval=0.5).start()  # what the server extension runs
    try:
        _writer(str(home), 5, 1, postgres.admin_url, "down")
        assert wait_for(lambda: postgres.count("deaths WHERE kernel_id LIKE 'down1-%'") == 5, timeout=60)
        postgres.stop()
        try:
            started = time.monotonic()
            _writer(str(home), 12, 2, postgres.admin_url, "down")  # writers do not wait for the absent database
            writing = time.monotonic() - started
            with Store(path) as store:
                assert store.outbox_counts()[0] == 12 and len(store.deaths(limit=100)) == 17
            result = forward(path, connect_timeout=1)
            assert result.waiting == 12 and "cannot reach the database" in result.error
            with pytest.raises(StoreUnavailable):
                SharedStore(postgres.admin_url, connect_timeout=1)
        finally:
            postgres.start()
        assert wait_for(lambda: forwarder.last.waiting == 0 and postgres.count("deaths WHERE kernel_id LIKE 'down2-%'") == 12,
                        timeout=120)
        assert writing >= 0  # recorded for the report, not asserted (no timed assertions)
    finally:
        forwarder.stop()


def test_each_user_reads_only_their_own_rows(postgres, tmp_path, monkeypatch):
    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "alice", "pw-alice")
    roles.add_user(postgres.admin_url, "bob", "pw-bob")
    alice, bob = postgres.url("alice", "pw-alice"), postgres.url("bob", "pw-bob")
    for user, url in (("alice", alice), ("bob", bob)):
        _use(monkeypatch, url)
        with Store(tmp_path / user / "store.db") as store:
            store.add_death(_report(f"scoped-{user}", 7, user=user), {"pid": 7})
        assert forward(tmp_path / user / "store.db").sent == 1
    with SharedStore(alice) as shared:
        seen = {r["username"] for r in shared.rows("SELECT username FROM deaths")}
        assert seen == {"alice"}
    with SharedStore(bob) as shared:
        assert {r["kernel_id"] for r in shared.rows("SELECT kernel_id FROM deaths")} == {"scoped-bob"}
    with SharedStore(postgres.admin_url) as shared:
        assert {"scoped-alice", "scoped-bob"} <= {r["kernel_id"] for r in shared.rows("SELECT kernel_id FROM deaths")}
    # bob's server writing a record in alice's name is refused, and the record stays queued, not lost
    _use(monkeypatch, bob)
    with Store(tmp_path / "bob" / "store.db") as store:
        store.add_death(_report("forged", 8, user="alice"), {"pid": 8})
    result = forward(tmp_path / "bob" / "store.db")
    assert result.sent == 0 and result.refused == 1
    with SharedStore(postgres.admin_url) as shared:
        assert not shared.rows("SELECT 1 FROM deaths WHERE kernel_id = 'forged'")
    with psycopg.connect(alice) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM deaths")  # users may only add and read their own


def test_a_user_role_cannot_set_the_schema_up(postgres, monkeypatch):
    import psycopg as pg

    with pg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE empty_one OWNER ks_admin")
    roles.add_user(postgres.admin_url, "carol", "pw-carol")
    with pytest.raises(StoreError, match="not set up for kernel-sentinel.*fleet --setup"):
        SharedStore(postgres.url("carol", "pw-carol", db="empty_one"))


def test_store_files_are_private(tmp_path, monkeypatch):
    _use(monkeypatch, None)
    home = tmp_path / "home"
    with Store(home / "store.db") as store:
        store.add_death(_report("k", 1), {"pid": 1})
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("store.db", "store.db-wal", "store.db-shm"):
        if (home / name).exists():
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    old = tmp_path / "old"  # a store made before: 0755 folder, 0644 file, tightened when next opened
    old.mkdir(mode=0o755)
    (old / "store.db").touch(mode=0o644)
    os.chmod(old, 0o755)
    os.chmod(old / "store.db", 0o644)
    Store(old / "store.db").close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o700 and stat.S_IMODE((old / "store.db").stat().st_mode) == 0o600


def test_a_bad_database_url_is_one_line_and_costs_no_record(tmp_path, monkeypatch):
    _use(monkeypatch, "mysql://somewhere/db")
    with Store(tmp_path / "store.db") as store:  # the death is still kept on this server
        store.add_death(_report("k-bad-url", 1), {"pid": 1})
        assert store.death("k-bad-url") is not None
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "kernel_sentinel", "fleet"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "must be a postgresql:// URL" in proc.stderr


def test_a_hub_derives_each_users_url(postgres, tmp_path, monkeypatch):
    roles.setup(postgres.admin_url)
    url = roles.user_url(postgres.admin_url, "dora", "hub-secret")
    assert "dora:" in url and roles.user_password("hub-secret", "dora") in url and "ks_admin" not in url
    assert roles.user_url(postgres.admin_url, "dora", "hub-secret") == url  # again: same role, same password
    _use(monkeypatch, url)
    with Store(tmp_path / "store.db") as store:
        store.add_death(_report("dora-1", 3, user="dora"), {"pid": 3})
    assert forward(tmp_path / "store.db").sent == 1
    with SharedStore(url) as shared:
        assert [r["kernel_id"] for r in shared.rows("SELECT kernel_id FROM deaths")] == ["dora-1"]
    with pytest.raises(StoreError, match="not a user name"):
        roles.user_url(postgres.admin_url, "x'; DROP TABLE deaths; --", "s")


def test_a_nul_in_a_cells_code_does_not_get_the_record_refused(postgres, tmp_path, monkeypatch):
    """SQLite keeps a NUL character (a pasted byte string in a cell); PostgreSQL's text refuses it: the shared copy
    gets U+FFFD in its place, the local copy keeps the code as it was."""
    _use(monkeypatch, postgres.admin_url)
    code = "data = 'a\x00b'\nimport ctypes; ctypes.string_at(0)"
    with Store(tmp_path / "store.db") as store:
        store.add_death(_report("k-nul", 21, cell={"execution_count": 1, "code": code}), {"pid": 21})
        store.add_memory_error({"kernel_id": "k-nul", "summary": "needed\x00more", "code": code, "user": "alice"})
    wait_for(lambda: forward(tmp_path / "store.db").waiting == 0, timeout=60)
    with Store(tmp_path / "store.db") as store:
        assert store.outbox_state()["refused"] == 0
        assert store.death("k-nul")["cell_code"] == code
    with SharedStore(postgres.admin_url) as shared:
        (row,) = shared.rows("SELECT cell_code FROM deaths WHERE kernel_id = 'k-nul'")
        assert row["cell_code"] == code.replace("\x00", "\ufffd")
        (err,) = shared.rows("SELECT summary FROM memory_errors WHERE kernel_id = 'k-nul'")
        assert err["summary"] == "needed\ufffdmore"


def test_a_refused_record_waits_until_it_is_given_up(postgres, tmp_path, monkeypatch):
    """The forwarder's ``waiting`` is the store's (``outbox_counts``): a record the database refused still waits
    while it is retried, and no longer once it is left aside after its third refusal."""
    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "hank", "pw-hank")
    hank = postgres.url("hank", "pw-hank")
    _use(monkeypatch, hank)
    path = tmp_path / "store.db"
    # Held, the "a forwarder waits to run" lock keeps closing the store from starting a detached forwarder:
    # each pass below is the only one, so each counts exactly one refusal.
    pending = os.open(tmp_path / "forward.pending", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(pending, fcntl.LOCK_EX)
    try:
        with Store(path) as store:
            store.add_death(_report("hank-own", 31, user="hank"), {"pid": 31})
            store.add_death(_report("hank-forged", 32, user="alice"), {"pid": 32})  # not his name: refused
        for attempt in (1, 2, 3):
            result = forward(path, hank)
            with Store(path, create=False) as store:
                waiting, state = store.outbox_counts()[0], store.outbox_state()
            assert (result.sent, result.refused, result.error) == (1 if attempt == 1 else 0, 1, None)
            assert (state["waiting"], state["refused"], state["given_up"]) == (0, 1, 0 if attempt < 3 else 1)
            assert result.waiting == waiting == (1 if attempt < 3 else 0), attempt
        result = forward(path, hank)  # left aside: not sent again, no longer waiting
        assert (result.sent, result.refused, result.waiting, result.error) == (0, 0, 0, None)
    finally:
        os.close(pending)
