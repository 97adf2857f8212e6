"""The store: every kernel, death and memory error, in one local SQLite file and, for a hub, one PostgreSQL.

Local (always): one SQLite file under ``KERNEL_SENTINEL_HOME`` or the user's Jupyter data directory
(``kernel-sentinel/store.db``), 0600 in a 0700 folder since it holds every dead cell's code. WAL mode and a
busy timeout let many supervisors and kernels write at the same moment. A store that cannot be opened
(read-only directory, corrupt file) is reported as ``StoreError`` with one line; callers degrade instead of
crashing (a death that cannot be stored is still explained on stderr by the supervisor).

Shared (``KERNEL_SENTINEL_DATABASE_URL=postgresql://...``): the same tables in PostgreSQL (``SharedStore``).
Writers never talk to it directly, so a slow or absent database never blocks a kernel or a supervisor: each
death and memory error is written locally together with an ``outbox`` row, and ``fleet.forward`` carries
the outbox over later (idempotent: every record has a ``uid``, inserted ``ON CONFLICT DO NOTHING``).

Schema changes: bump ``SCHEMA_VERSION`` and append one entry to ``_MIGRATIONS``: SQL for both dialects
(``{serial}``, ``{real}``, ``{uuid}`` are filled in per dialect) and, optionally, PostgreSQL-only SQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .identity import home_dir  # noqa: F401  (re-exported: the rule lives in identity, one leaf module)

# The supervisor keeps the store open until its kernel ends, in the kernel's memory group: what only a record's
# identity and uid need (getpass, socket, uuid and the platform module under it) is imported there, and typing is
# only for annotations (with flight's and gather's: ~1.9 MiB of the supervisor's and witness's memory).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 6
STORE_NAME = "store.db"
DATABASE_URL_ENV = "KERNEL_SENTINEL_DATABASE_URL"
USERS_ROLE = "kernel_sentinel_users"  # the PostgreSQL group role every hub user's role is a member of

_DIALECT: dict[str, dict[str, str]] = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "uuid": "lower(hex(randomblob(16)))"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "uuid": "md5(random()::text || id::text)"},
}

# One list for both dialects: (SQL for both, SQL for PostgreSQL only).
_MIGRATIONS: dict[int, tuple[str, str]] = {
    1: (
        """
    CREATE TABLE IF NOT EXISTS kernels (
        kernel_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        supervisor_pid INTEGER,
        connection_file TEXT,
        started_at {real} NOT NULL,
        ended_at {real},
        status TEXT NOT NULL DEFAULT 'running',
        PRIMARY KEY (kernel_id, pid)
    );
    CREATE TABLE IF NOT EXISTS deaths (
        id {serial},
        kernel_id TEXT NOT NULL,
        pid INTEGER,
        died_at {real} NOT NULL,
        recorded_at {real} NOT NULL,
        cause TEXT NOT NULL,
        summary TEXT NOT NULL,
        report TEXT NOT NULL,
        evidence TEXT NOT NULL,
        shown_at {real},
        UNIQUE (kernel_id, pid)
    );
    CREATE INDEX IF NOT EXISTS deaths_by_kernel ON deaths (kernel_id, died_at);
    CREATE INDEX IF NOT EXISTS deaths_by_time ON deaths (died_at);
    """,
        "",
    ),
    2: (
        """
    ALTER TABLE deaths ADD COLUMN uid TEXT;
    ALTER TABLE deaths ADD COLUMN username TEXT;
    ALTER TABLE deaths ADD COLUMN host TEXT;
    ALTER TABLE deaths ADD COLUMN server TEXT;
    ALTER TABLE deaths ADD COLUMN kernel_name TEXT;
    ALTER TABLE deaths ADD COLUMN notebook TEXT;
    ALTER TABLE deaths ADD COLUMN memory_exhausted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deaths ADD COLUMN cell_key TEXT;
    ALTER TABLE deaths ADD COLUMN cell_code TEXT;
    ALTER TABLE deaths ADD COLUMN library TEXT;
    UPDATE deaths SET uid = {uuid} WHERE uid IS NULL;
    CREATE UNIQUE INDEX IF NOT EXISTS deaths_by_uid ON deaths (uid);
    CREATE TABLE IF NOT EXISTS memory_errors (
        id {serial},
        uid TEXT NOT NULL UNIQUE,
        kernel_id TEXT NOT NULL,
        at {real} NOT NULL,
        recorded_at {real} NOT NULL,
        username TEXT,
        host TEXT,
        server TEXT,
        kernel_name TEXT,
        notebook TEXT,
        summary TEXT,
        requested_bytes BIGINT,
        budget_bytes BIGINT,
        cell_key TEXT,
        cell_code TEXT,
        library TEXT,
        report TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS memory_errors_by_time ON memory_errors (at);
    CREATE TABLE IF NOT EXISTS outbox (
        id {serial},
        kind TEXT NOT NULL,
        uid TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        created_at {real} NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    )
    """,
        # Row-level security: a hub user's role writes and reads only rows with its own name; the owner
        # (the admin who set the database up, and who runs `fleet`) is exempt and reads all.
        f"""
    ALTER TABLE deaths ENABLE ROW LEVEL SECURITY;
    ALTER TABLE memory_errors ENABLE ROW LEVEL SECURITY;
    CREATE POLICY own_deaths ON deaths USING (username = current_user) WITH CHECK (username = current_user);
    CREATE POLICY own_memory_errors ON memory_errors
        USING (username = current_user) WITH CHECK (username = current_user);
    DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USERS_ROLE}') THEN
            CREATE ROLE {USERS_ROLE} NOLOGIN;
        END IF;
    END $$;
    GRANT SELECT, INSERT ON deaths, memory_errors TO {USERS_ROLE};
    GRANT USAGE, SELECT ON SEQUENCE deaths_id_seq, memory_errors_id_seq TO {USERS_ROLE};
    GRANT SELECT ON kernel_sentinel_schema TO {USERS_ROLE};
    """,
    ),
    3: (
        """
    CREATE INDEX IF NOT EXISTS deaths_by_cell ON deaths (cell_key);
    CREATE INDEX IF NOT EXISTS memory_errors_by_cell ON memory_errors (cell_key)
    """,
        "",
    ),
    # Covering indexes for `fleet`'s GROUP BYs: without them SQLite reads every row's report and evidence
    # (5 s on 100k deaths; 0.7 s with them).
    4: (
        """
    CREATE INDEX IF NOT EXISTS deaths_fleet ON deaths (died_at, cause, username, host, notebook, library, cell_key);
    CREATE INDEX IF NOT EXISTS memory_errors_fleet ON memory_errors (at, username, host, notebook, library, cell_key)
    """,
        "",
    ),
    # The server counts each kernel's memory errors every 2 s (the one count): 1.9 ms on 10k rows without it.
    5: (
        """
    CREATE INDEX IF NOT EXISTS memory_errors_by_kernel ON memory_errors (kernel_id)
    """,
        "",
    ),
    # What each server's outbox holds back (records the database refused): the admin's `fleet` runs on another
    # machine than the servers, so each forwarder reports its refusals here, under its own role's name.
    6: (
        "",
        f"""
    CREATE TABLE IF NOT EXISTS outbox_status (
        username TEXT NOT NULL DEFAULT current_user,
        host TEXT NOT NULL,
        store TEXT NOT NULL,
        refused INTEGER NOT NULL,
        given_up INTEGER NOT NULL,
        reason TEXT,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (username, host, store)
    );
    ALTER TABLE outbox_status ENABLE ROW LEVEL SECURITY;
    CREATE POLICY own_outbox_status ON outbox_status
        USING (username = current_user) WITH CHECK (username = current_user);
    GRANT SELECT, INSERT, UPDATE ON outbox_status TO {USERS_ROLE};
    """,
    ),
}

# The columns a death or memory error carries, local and shared alike (the outbox payload is these).
DEATH_COLUMNS = (
    "uid", "kernel_id", "pid", "died_at", "recorded_at", "cause", "summary", "report", "evidence", "username",
    "host", "server", "kernel_name", "notebook", "memory_exhausted", "cell_key", "cell_code", "library",
)
MEMORY_ERROR_COLUMNS = (
    "uid", "kernel_id", "at", "recorded_at", "username", "host", "server", "kernel_name", "notebook", "summary",
    "requested_bytes", "budget_bytes", "cell_key", "cell_code", "library", "report",
)
TABLES = {"death": ("deaths", DEATH_COLUMNS), "memory_error": ("memory_errors", MEMORY_ERROR_COLUMNS)}



class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says why in one line."""


def database_url() -> str | None:
    """Return the shared database's URL (``KERNEL_SENTINEL_DATABASE_URL``), None for the local store alone.

    Raises ``StoreError`` (one line) for a URL that is not PostgreSQL's, so every command says it the same way.
    """
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if not url:
        return None
    if url.startswith(("postgresql://", "postgres://")):
        return url
    scheme = url.split(":", 1)[0]
    raise StoreError(f"{DATABASE_URL_ENV} must be a postgresql:// URL (or unset for the local SQLite store), not {scheme}:")


def redact(url: str) -> str:
    """Return the URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def identity(report: dict[str, Any]) -> dict[str, Any]:
    """Return who and where a record comes from (user, host, server, kernel_name, notebook).

    The report's own fields win (the records stream fills them from the kernel's connection and session),
    except the user on a hub (JUPYTERHUB_USER); missing ones come from the environment the server gives its
    kernels (the server's URL, JPY_SESSION_NAME) and from this process's user and host.
    """
    server = report.get("server") or os.environ.get("JUPYTER_SERVER_URL") or os.environ.get("JUPYTERHUB_SERVICE_URL")
    return {
        # On a hub the hub's user name wins over the OS account (SimpleLocalProcessSpawner and KubeSpawner run
        # every user as the same account): the database role, and so row-level security, is per hub user.
        "username": os.environ.get("JUPYTERHUB_USER") or report.get("user") or report.get("username") or _os_user(),
        "host": report.get("host") or _host(),
        "server": server,
        "kernel_name": report.get("kernel_name") or _kernel_name(),
        "notebook": report.get("notebook") or _session_notebook(),
    }


def _host() -> str:
    import socket

    return socket.gethostname()


def _kernel_name() -> str | None:
    """Return the kernelspec name jupyter_client wrote into this kernel's connection file, when this process
    was started with one (the supervisor, the kernel): the record then says which kernelspec died."""
    import json
    import sys

    from .identity import connection_file_from_argv

    try:
        connection = os.environ.get("KERNEL_SENTINEL_CONNECTION_FILE") or connection_file_from_argv(sys.argv)
        if not connection:
            return None
        with open(connection) as f:
            name = json.load(f).get("kernel_name")
        return name if isinstance(name, str) and name else None
    except (OSError, ValueError, AttributeError):
        return None


def _session_notebook() -> str | None:
    """Return the notebook jupyter_server started this kernel for (JPY_SESSION_NAME, an absolute path), relative
    to the user's home when under it: the same course notebook then groups together across users."""
    path = os.environ.get("JPY_SESSION_NAME")
    home = os.environ.get("HOME", "").rstrip("/")
    if path and home and path.startswith(home + "/"):
        return path[len(home) + 1 :]
    return path or None


def death_record(
    report: dict[str, Any], evidence: dict[str, Any], *, died_at: float | None = None
) -> dict[str, Any]:
    """Return the death's row (DEATH_COLUMNS) from its why-report and evidence: what both stores keep."""
    import uuid

    from .fleet.cells import cell_facts

    code = (report.get("cell") or {}).get("code")
    key, library = cell_facts(code, report.get("native_library"))
    died = float(died_at if died_at is not None else report.get("died_at") or time.time())
    return {
        "uid": str(report.get("uid") or uuid.uuid4().hex),
        "kernel_id": report["kernel_id"],
        "pid": evidence.get("pid"),
        "died_at": died,
        "recorded_at": time.time(),
        "cause": report["cause"],
        "summary": report["summary"],
        "report": json.dumps(report, default=str),
        "evidence": json.dumps(evidence, default=str),
        **identity(report),
        "memory_exhausted": 1 if report.get("memory_exhausted") or report.get("cause") == "oom_kill" else 0,
        "cell_key": key,
        "cell_code": code,
        "library": library,
    }


def memory_error_record(error: dict[str, Any]) -> dict[str, Any]:
    """Return a memory error's row (MEMORY_ERROR_COLUMNS) from the guard's evidence of it.

    ``error`` has ``kernel_id`` and may have ``at``, ``summary``, ``requested_bytes``, ``budget_bytes``,
    ``code`` (the cell's) and the identity fields. No variable values are kept, only the cell's code.
    """
    import uuid

    from .fleet.cells import cell_facts

    code = error.get("code")
    key, library = cell_facts(code)
    return {
        "uid": str(error.get("uid") or uuid.uuid4().hex),
        "kernel_id": str(error.get("kernel_id") or "unknown"),
        "at": float(error.get("at") or time.time()),
        "recorded_at": time.time(),
        **identity(error),
        "summary": error.get("summary"),
        "requested_bytes": _int_or_none(error.get("requested_bytes")),
        "budget_bytes": _int_or_none(error.get("budget_bytes")),
        "cell_key": key,
        "cell_code": code,
        "library": library,
        "report": json.dumps(error, default=str),
    }


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700, and tighten it to 0700 when it is ours and wider."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
            path.chmod(mode)
    except OSError:  # not ours, or read-only: reading still works; the next writer with rights tightens it
        pass


class Store:
    """The local SQLite store; cheap to open, use as a context manager or call ``close()``.

    One Store belongs to one thread. With a shared database configured, each new death or memory error is
    also queued in the outbox, and closing the store starts the forwarder (never waiting for it).
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        """Open (and with ``create``, create and migrate) the store; raises ``StoreError`` when it cannot."""
        self.path = Path(path) if path is not None else home_dir() / STORE_NAME
        self._queued = False
        if not create and not self.path.exists():
            raise StoreError(f"no store at {self.path} (no kernel death has been recorded here yet)")
        try:
            try:
                self._forward_to = database_url() if create else None
            except StoreError:  # a mistyped URL must not cost the local record; `fleet` names the URL's fault
                self._forward_to = None
            if create:
                private_dir(self.path.parent)
                if not self.path.exists():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite's -wal/-shm copy this mode
                _tighten(self.path, 0o600)
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 10000")
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a commit survives a crash of any process (not a power cut) without an fsync.
                self._db.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.OperationalError:  # read-only directory: WAL needs a -wal file; plain reads still work
                pass
            if create:
                self._migrate()
            else:
                self._probe()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StoreError(f"cannot open the store at {self.path}: {_reason(exc)}") from exc

    def _probe(self) -> None:
        """Make reading work in a read-only directory, where WAL cannot create its -shm file."""
        try:
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            self._db.close()
            # Nobody can write a read-only directory's database, so reading it as immutable is safe.
            uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?immutable=1"
            self._db = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {_reason(exc)}") from exc

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return a read query's rows as dicts (``?`` placeholders): the fleet's queries run on either store."""
        return [dict(r) for r in self._query(sql, args)]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if hasattr(self, "_db"):
                self._db.close()
        except Exception:
            pass
        if self._queued and self._forward_to:
            self._queued = False
            try:
                from .fleet.forward import kick

                kick(self.path)
            except Exception:  # the outbox keeps the records; the next write or read forwards them
                pass

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot write the store at {self.path}: {_reason(exc)}") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another writer may have migrated
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in migration_sql(target, "sqlite").split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    # -- kernels -----------------------------------------------------------------------------------

    def kernel_started(
        self, kernel_id: str, pid: int, *, supervisor_pid: int | None = None, connection_file: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO kernels (kernel_id, pid, supervisor_pid, connection_file, started_at, status)"
                " VALUES (?, ?, ?, ?, ?, 'running')",
                (kernel_id, pid, supervisor_pid, connection_file, time.time()),
            )

    def kernel_ended(self, kernel_id: str, pid: int, status: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE kernels SET ended_at = ?, status = ? WHERE kernel_id = ? AND pid = ?",
                (time.time(), status, kernel_id, pid),
            )

    # -- deaths ------------------------------------------------------------------------------------

    def add_death(self, report: dict[str, Any], evidence: dict[str, Any], *, died_at: float | None = None) -> int:
        """Store one death (its why-report and its evidence); return its id. A second record of the same
        kernel process is ignored (the supervisor and a later sweep may both see it)."""
        row = death_record(report, evidence, died_at=died_at)
        with self._tx() as db:
            cur = db.execute(_insert_sql("deaths", DEATH_COLUMNS, "sqlite"), [row[c] for c in DEATH_COLUMNS])
            if cur.rowcount:
                self._enqueue(db, "death", row)
                return int(cur.lastrowid or 0)
            found = db.execute(
                "SELECT id FROM deaths WHERE kernel_id = ? AND pid IS ?", (row["kernel_id"], row["pid"])
            ).fetchone()
            return int(found["id"]) if found else 0

    def add_memory_error(self, error: dict[str, Any]) -> int:
        """Store one MemoryBudgetError the guard raised (a death avoided); return its id."""
        row = memory_error_record(error)
        with self._tx() as db:
            cur = db.execute(
                _insert_sql("memory_errors", MEMORY_ERROR_COLUMNS, "sqlite"), [row[c] for c in MEMORY_ERROR_COLUMNS]
            )
            if cur.rowcount:
                self._enqueue(db, "memory_error", row)
            return int(cur.lastrowid or 0)

    def _enqueue(self, db: sqlite3.Connection, kind: str, row: dict[str, Any]) -> None:
        if self._forward_to:
            db.execute(
                "INSERT INTO outbox (kind, uid, payload, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (kind, row["uid"], json.dumps(row), time.time()),
            )
            self._queued = True

    def has_death(self, kernel_id: str, pid: int) -> bool:
        return bool(self._query("SELECT 1 FROM deaths WHERE kernel_id = ? AND pid = ?", (kernel_id, pid)))

    def death(self, kernel_id: str | None = None) -> dict[str, Any] | None:
        """Return the newest death's stored row (of ``kernel_id``, or of any kernel), or None."""
        if kernel_id is None:
            row = _first(self._query("SELECT * FROM deaths ORDER BY died_at DESC, id DESC LIMIT 1"))
        else:
            row = _first(
                self._query(
                    "SELECT * FROM deaths WHERE kernel_id = ? ORDER BY died_at DESC, id DESC LIMIT 1", (kernel_id,)
                )
            )
            if row is None:  # a unique prefix is enough, as with git hashes
                rows = self._query(
                    "SELECT * FROM deaths WHERE kernel_id LIKE ? ESCAPE '\\' ORDER BY died_at DESC, id DESC",
                    (_like_prefix(kernel_id),),
                )
                if len({r["kernel_id"] for r in rows}) == 1:
                    row = rows[0]
        return _death_row(row) if row is not None else None

    def deaths(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM deaths ORDER BY died_at DESC, id DESC LIMIT ?", (limit,))
        return [_death_row(r) for r in rows]

    def memory_errors(self, kernel_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Return stored memory errors, newest first (of ``kernel_id`` when given)."""
        where, args = ("WHERE kernel_id = ?", [kernel_id]) if kernel_id else ("", [])
        rows = self._query(f"SELECT * FROM memory_errors {where} ORDER BY at DESC, id DESC LIMIT ?", [*args, limit])
        return [dict(r) for r in rows]

    def unshown_death(self, kernel_id: str) -> dict[str, Any] | None:
        """Return the newest death of ``kernel_id`` not yet shown in its restarted kernel, or None."""
        row = _first(
            self._query(
                "SELECT * FROM deaths WHERE kernel_id = ? AND shown_at IS NULL ORDER BY died_at DESC, id DESC LIMIT 1",
                (kernel_id,),
            )
        )
        return _death_row(row) if row is not None else None

    def mark_shown(self, death_id: int) -> None:
        """Mark a death, and the same kernel's older ones never shown, as shown (the newest speaks for all)."""
        with self._tx() as db:
            db.execute(
                "UPDATE deaths SET shown_at = ? WHERE shown_at IS NULL"
                " AND kernel_id = (SELECT kernel_id FROM deaths WHERE id = ?)"
                " AND died_at <= (SELECT died_at FROM deaths WHERE id = ?)",
                (time.time(), death_id, death_id),
            )

    # -- the outbox (the forwarder's side) --------------------------------------------------------------

    def outbox(self, limit: int = 500, *, after: int = 0, max_attempts: int = 3) -> list[dict[str, Any]]:
        """Return queued records to forward (ids above ``after``), oldest first, leaving aside those the
        database refused ``max_attempts`` times."""
        rows = self._query(
            "SELECT id, kind, uid, payload, attempts FROM outbox WHERE attempts < ? AND id > ? ORDER BY id LIMIT ?",
            (max_attempts, after, limit),
        )
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def outbox_done(self, ids: Sequence[int]) -> None:
        """Drop forwarded records from the outbox (they are in the shared database now)."""
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def outbox_refused(self, ids: Sequence[int], error: str) -> None:
        """Count a refusal of these records by the database (not an outage): after 3 they are left aside."""
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?", [(error, i) for i in ids]
            )

    def outbox_counts(self) -> tuple[int, int, str | None]:
        """Return (records waiting, records the database refused 3 times, the last refusal's reason).

        Waiting means still to be sent: never refused, or refused fewer than 3 times (``outbox_state``'s
        ``waiting`` + ``refused`` - ``given_up``). The one definition, so the forwarder's ``waiting`` is this."""
        waiting = self._query("SELECT count(*) AS n FROM outbox WHERE attempts < 3")[0]["n"]
        refused = self._query(
            "SELECT count(*) AS n, max(last_error) AS e FROM outbox WHERE attempts >= 3"
        )[0]
        return int(waiting), int(refused["n"]), refused["e"]

    def outbox_retry(self) -> int:
        """Return how many refused records were queued again (their refusals forgotten): for after the cause of
        the refusals was fixed (the server's database URL named the wrong role), so nothing stays aside for good."""
        with self._tx() as db:
            return int(db.execute("UPDATE outbox SET attempts = 0 WHERE attempts > 0").rowcount)

    def outbox_state(self) -> dict[str, Any]:
        """Return what the outbox holds: ``waiting`` (never refused, not yet sent), ``refused`` (refused by the
        shared database at least once; retried up to 3 times, then left aside, never deleted), ``given_up``
        (of those, no longer retried) and ``reason`` (why the newest refused record was refused). Exists so that commands can say
        which records are not in the shared view, and why, instead of keeping them silently."""
        tables = {r["name"] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "outbox" not in tables:  # a store older than the outbox (read as it is): nothing queued
            return {"waiting": 0, "refused": 0, "given_up": 0, "reason": None}
        row = self._query(
            "SELECT coalesce(sum(attempts = 0), 0) AS waiting, coalesce(sum(attempts > 0), 0) AS refused,"
            " coalesce(sum(attempts >= 3), 0) AS given_up FROM outbox"
        )[0]
        reason = _first(self._query("SELECT last_error FROM outbox WHERE attempts > 0 ORDER BY id DESC LIMIT 1"))
        return {
            "waiting": int(row["waiting"]), "refused": int(row["refused"]), "given_up": int(row["given_up"]),
            "reason": reason["last_error"] if reason is not None else None,
        }


class SharedStore:
    """The shared PostgreSQL store: same tables as the local one, written by ``fleet.forward``, read by ``fleet``.

    Opens one connection (or borrows one from ``pool`` per call, for long-lived processes). Every failure is a
    one-line ``StoreError``; ``StoreUnavailable`` (a subclass) means the database cannot be reached now.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, pool: Any = None, connect_timeout: float = 3.0, migrate: bool = True) -> None:
        """Connect (unless ``pool``) and check the schema, migrating it when this role may; raise StoreError."""
        self.url = url
        self._pool = pool
        self._conn: Any = None
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - the fleet extra is missing
            raise StoreError("PostgreSQL needs psycopg: pip install 'kernel-sentinel[fleet]'") from exc
        self._psycopg = psycopg
        if pool is None:
            try:
                self._conn = psycopg.connect(url, connect_timeout=max(1, int(connect_timeout)), autocommit=True)
            except psycopg.Error as exc:
                raise StoreUnavailable(f"cannot reach the database at {redact(url)}: {_pg_reason(exc)}") from exc
        if migrate:
            self._check_schema()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._pool is None:
            yield self._conn
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {_pg_reason(exc)}") from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {exc}") from exc
            raise

    def _check_schema(self) -> None:
        try:
            version = self.schema_version()
            if version < SCHEMA_VERSION:
                self.migrate()
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {_pg_reason(exc)}") from exc
        except self._psycopg.Error as exc:
            raise StoreError(
                f"the database at {redact(self.url)} is not set up for kernel-sentinel ({_pg_reason(exc)}): "
                "run `kernel-sentinel fleet --setup` once as its owner"
            ) from exc

    def schema_version(self) -> int:
        """Return the schema version (0 for a database never set up)."""
        with self._connection() as conn:
            found = conn.execute("SELECT to_regclass('kernel_sentinel_schema') IS NOT NULL").fetchone()[0]
            if not found:
                return 0
            return int(conn.execute("SELECT max(version) FROM kernel_sentinel_schema").fetchone()[0] or 0)

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION (the owner's job), serialised by an advisory lock."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7148305)")
            conn.execute("CREATE TABLE IF NOT EXISTS kernel_sentinel_schema (version INTEGER NOT NULL)")
            version = int(conn.execute("SELECT coalesce(max(version), 0) FROM kernel_sentinel_schema").fetchone()[0])
            for target in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(migration_sql(target, "postgresql"))
                conn.execute("INSERT INTO kernel_sentinel_schema (version) VALUES (%s)", (target,))

    def insert(self, kind: str, records: Sequence[dict[str, Any]]) -> None:
        """Insert records of one kind in one transaction; ones already there (same uid) are skipped."""
        table, columns = TABLES[kind]
        cols = ", ".join(columns)
        try:
            # COPY into a transaction's scratch table, then one INSERT ... ON CONFLICT DO NOTHING: COPY has no
            # conflict clause, and executemany would cost a round trip per record.
            with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute(f"CREATE TEMP TABLE ks_incoming ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA")
                with cur.copy(f"COPY ks_incoming ({cols}) FROM STDIN") as copy:
                    for record in records:
                        copy.write_row([_pg_text(record.get(c)) for c in columns])
                cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM ks_incoming ON CONFLICT DO NOTHING")
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {_pg_reason(exc)}") from exc
        except self._psycopg.Error as exc:
            raise StoreError(f"the database at {redact(self.url)} refused the records: {_pg_reason(exc)}") from exc

    def report_outbox(self, host: str, store: str, state: dict[str, Any]) -> None:
        """Record, under this role's name, how many records of the local store ``store`` on ``host`` the database
        refused (``Store.outbox_state``), so that the admin's ``fleet`` can name them; raises StoreError."""
        try:
            with self._connection() as conn:
                conn.execute(
                    "INSERT INTO outbox_status (host, store, refused, given_up, reason, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username, host, store) DO UPDATE SET"
                    " refused = excluded.refused, given_up = excluded.given_up, reason = excluded.reason,"
                    " updated_at = excluded.updated_at",
                    (host, store, int(state.get("refused") or 0), int(state.get("given_up") or 0),
                     _pg_text(state.get("reason")), time.time()),
                )
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {_pg_reason(exc)}") from exc
        except self._psycopg.Error as exc:
            raise StoreError(f"the database at {redact(self.url)} refused the outbox status: {_pg_reason(exc)}") from exc

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return a read query's rows as dicts (``?`` placeholders, as for the local store)."""
        from psycopg.rows import dict_row

        try:
            with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(args))
                return list(cur.fetchall())
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the database at {redact(self.url)}: {_pg_reason(exc)}") from exc
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot read the database at {redact(self.url)}: {_pg_reason(exc)}") from exc

    def __enter__(self) -> SharedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


class StoreUnavailable(StoreError):
    """The shared database cannot be reached now (down, slow, refused the connection): retry later."""


_POOLS: dict[str, Any] = {}


def shared_pool(url: str, *, max_size: int = 4) -> Any:
    """Return this process's connection pool for ``url`` (psycopg_pool), made once: for long-lived processes
    (the server extension, a hub service) that read or forward often. Connections open lazily."""
    pool = _POOLS.get(url)
    if pool is None:
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            url, min_size=0, max_size=max_size, open=True, timeout=5.0, kwargs={"autocommit": True, "connect_timeout": 3}
        )
        _POOLS[url] = pool
    return pool


def problem(path: str | os.PathLike[str] | None = None) -> str | None:
    """Return the one line that says why the local store cannot be read, or None when it can (or is absent).

    Exists so that every command that reads the store (``why`` as much as ``deaths``) names a corrupt or
    unreadable store instead of answering as if it were empty.
    """
    target = Path(path) if path is not None else home_dir() / STORE_NAME
    if not target.exists():
        return None
    try:
        with Store(target, create=False) as store:
            store.rows("SELECT count(*) AS n FROM deaths")
    except StoreError as exc:
        return str(exc)
    return None


def migration_sql(version: int, dialect: str) -> str:
    """Return migration ``version``'s SQL for ``dialect`` ("sqlite" or "postgresql")."""
    common, postgres_only = _MIGRATIONS[version]
    sql = common.format(**_DIALECT[dialect])
    if dialect == "postgresql" and postgres_only:
        sql = (sql.rstrip().rstrip(";") + ";\n" if sql.strip() else "") + postgres_only
    return sql


def _insert_sql(table: str, columns: Sequence[str], dialect: str) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})"
        " ON CONFLICT DO NOTHING"
    )


def _death_row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["report"] = json.loads(data["report"])
    data["evidence"] = json.loads(data["evidence"])
    return data


def _first(rows: list[sqlite3.Row]) -> sqlite3.Row | None:
    return rows[0] if rows else None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _os_user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _pg_text(value: Any) -> Any:
    """Return ``value`` as PostgreSQL's text takes it: NUL (which SQLite keeps, in a cell's code or a summary) as
    U+FFFD, so that one such character does not get the whole record refused; the local copy keeps the original."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _pg_reason(exc: BaseException) -> str:
    """Return the first line of a PostgreSQL error (they come with hints on further lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
