"""A real PostgreSQL for the fleet tests: initdb into a temporary folder, a unix socket there, password auth.

Debian's server binaries (/usr/lib/postgresql/N/bin) are installed by ``make services``. PostgreSQL refuses to
run as root, so as root the cluster belongs to the ``postgres`` system user (``runuser``). Tests that need it
skip, saying why, where the binaries are absent.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN = "ks_admin"
DB = "kernel_sentinel"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Postgres:
    """One throw-away PostgreSQL cluster; ``url(user, password)`` builds a psycopg URL over its socket."""

    def __init__(self) -> None:
        bindir = _bin_dir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): run `make services`")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ks-pg-"))
        self.data = self.root / "data"
        self.socket = self.root / "sock"
        self.password = secrets.token_hex(12)
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
            self.run_as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.root, 0o755)
        self.socket.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            for p in (self.root, self.socket, pwfile):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", ADMIN, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                 "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.socket}'\n"
                       "max_connections = 200\nfsync = off\n")
        self.start()
        import psycopg

        with psycopg.connect(self.url(ADMIN, self.password, db="postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB} OWNER {ADMIN}")

    def _pg(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self.run_as, str(self.bindir / tool), *args], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode:
            raise RuntimeError(f"{tool} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, user: str = ADMIN, password: str | None = None, db: str = DB) -> str:
        pw = f":{password if password is not None else self.password}" if user == ADMIN or password else ""
        return f"postgresql://{user}{pw}@/{db}?host={self.socket}"

    @property
    def admin_url(self) -> str:
        return self.url(ADMIN, self.password)

    def count(self, table: str) -> int:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server started for this test module, stopped and deleted after it."""
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


def wait_for(predicate, timeout: float = 60.0, step: float = 0.1):
    """Return the predicate's first truthy value, polling up to ``timeout`` seconds (None when it never came)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
