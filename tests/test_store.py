"""The SQLite store: many writers at once, a missing store, a read-only directory, schema version."""

from __future__ import annotations

import multiprocessing
import sys
import sqlite3
import subprocess
import time

import pytest

from kernel_sentinel.store import SCHEMA_VERSION, Store, StoreError


def _report(kernel_id: str, pid: int) -> dict:
    return {"kernel_id": kernel_id, "cause": "exit", "summary": f"exit {pid}", "exit": {"code": 1}}


def _writer(path: str, n: int, worker: int) -> None:
    for i in range(n):
        with Store(path) as store:
            store.kernel_started(f"k{worker}", i)
            store.add_death(_report(f"k{worker}", i), {"pid": i}, died_at=1000.0 + i)


def test_many_processes_write_at_once(tmp_path):
    path = str(tmp_path / "store.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 15, w)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store(path) as store:
        assert len(store.deaths(limit=1000)) == 90
        assert store.death("k3")["report"]["summary"] == "exit 14"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_same_death_twice_is_one_row_and_prefix_lookup(tmp_path):
    with Store(tmp_path / "s.db") as store:
        first = store.add_death(_report("abcdef-1", 5), {"pid": 5})
        again = store.add_death(_report("abcdef-1", 5), {"pid": 5})
        assert first == again
        assert store.death("abc")["kernel_id"] == "abcdef-1"
        store.add_death(_report("abczzz", 6), {"pid": 6})
        assert store.death("abc") is None  # ambiguous prefix
        assert store.unshown_death("abczzz")["pid"] == 6
        store.add_death(_report("abczzz", 7), {"pid": 7}, died_at=time.time() + 10)
        store.add_death(_report("other", 8), {"pid": 8})
        newest = store.unshown_death("abczzz")
        assert newest["pid"] == 7
        store.mark_shown(newest["id"])
        assert store.unshown_death("abczzz") is None  # the older one is covered by the newest
        assert store.unshown_death("other")["pid"] == 8  # another kernel's is not


def test_missing_store_is_a_one_line_error(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "nope" / "store.db", create=False)
    assert not (tmp_path / "nope").exists()


def test_read_only_directory(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    with Store(home / "store.db") as store:
        store.add_death(_report("k", 1), {"pid": 1})
    if subprocess.run(["mount", "--bind", str(home), str(home)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here to make a read-only directory")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(home)], capture_output=True).returncode == 0
        with pytest.raises(StoreError, match="cannot"):
            with Store(home / "other.db") as store:
                pass
        with Store(home / "store.db", create=False) as store:  # reading still works (immutable mode)
            row = store.death("k")
        assert row is not None and row["pid"] == 1
        with pytest.raises(StoreError):
            with Store(home / "store.db") as store:
                store.add_death(_report("k", 2), {"pid": 2})
    finally:
        if subprocess.run(["umount", str(home)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(home)], capture_output=True)


def test_a_corrupt_store_is_named_by_every_reading_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path))
    (tmp_path / "store.db").write_bytes(b"this is not a database" * 200)
    for argv in (["why", "--last"], ["why"], ["deaths"], ["fleet"]):
        proc = subprocess.run([sys.executable, "-m", "kernel_sentinel", *argv], capture_output=True, text=True)
        assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "store" in lines[0] and "not a database" in lines[0], (argv, proc.stderr)
        assert "no death" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_record_names_the_kernelspec_from_the_connection_file(tmp_path, monkeypatch) -> None:
    """jupyter_client writes the kernelspec's name into the connection file: a death record carries it."""
    import json as _json

    from kernel_sentinel.store import identity

    conn = tmp_path / "kernel-abc.json"
    conn.write_text(_json.dumps({"shell_port": 1, "kernel_name": "python3-sentinel"}))
    monkeypatch.setenv("KERNEL_SENTINEL_CONNECTION_FILE", str(conn))
    assert identity({})["kernel_name"] == "python3-sentinel"
    assert identity({"kernel_name": "ds"})["kernel_name"] == "ds"
    conn.write_text("{not json")
    assert identity({})["kernel_name"] is None
