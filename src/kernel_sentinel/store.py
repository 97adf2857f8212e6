"""The store: one SQLite file that keeps every kernel and every death, safe for many writers at once.

Lives under ``KERNEL_SENTINEL_HOME`` or the user's Jupyter data directory (``kernel-sentinel/store.db``).
WAL mode and a busy timeout let many supervisors and kernels write at the same moment. A store that
cannot be opened (read-only directory, corrupt file) is reported as ``StoreError`` with one line; callers
degrade instead of crashing (a death that cannot be stored is still explained on stderr by the supervisor).

Schema changes: bump ``SCHEMA_VERSION`` and append one entry to ``_MIGRATIONS`` (version -> SQL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STORE_NAME = "store.db"

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS kernels (
        kernel_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        supervisor_pid INTEGER,
        connection_file TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        status TEXT NOT NULL DEFAULT 'running',
        PRIMARY KEY (kernel_id, pid)
    );
    CREATE TABLE IF NOT EXISTS deaths (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kernel_id TEXT NOT NULL,
        pid INTEGER,
        died_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        cause TEXT NOT NULL,
        summary TEXT NOT NULL,
        report TEXT NOT NULL,
        evidence TEXT NOT NULL,
        shown_at REAL,
        UNIQUE (kernel_id, pid)
    );
    CREATE INDEX IF NOT EXISTS deaths_by_kernel ON deaths (kernel_id, died_at);
    CREATE INDEX IF NOT EXISTS deaths_by_time ON deaths (died_at);
    """,
}


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says why in one line."""


def home_dir() -> Path:
    """Return where the store and flight records live: KERNEL_SENTINEL_HOME, else the Jupyter data dir."""
    explicit = os.environ.get("KERNEL_SENTINEL_HOME")
    if explicit:
        return Path(explicit)
    try:
        from jupyter_core.paths import jupyter_data_dir

        return Path(jupyter_data_dir()) / "kernel-sentinel"
    except Exception:  # jupyter_core missing or broken: a plain per-user folder still works
        return Path.home() / ".local" / "share" / "kernel-sentinel"


class Store:
    """A connection to the store; cheap to open, use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        """Open (and with ``create``, create and migrate) the store; raises ``StoreError`` when it cannot."""
        self.path = Path(path) if path is not None else home_dir() / STORE_NAME
        if not create and not self.path.exists():
            raise StoreError(f"no store at {self.path} (no kernel death has been recorded here yet)")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {_reason(exc)}") from exc

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
                for statement in _MIGRATIONS[target].split(";"):
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
        died = float(died_at if died_at is not None else report.get("died_at") or time.time())
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO deaths (kernel_id, pid, died_at, recorded_at, cause, summary, report, evidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report["kernel_id"],
                    evidence.get("pid"),
                    died,
                    time.time(),
                    report["cause"],
                    report["summary"],
                    json.dumps(report),
                    json.dumps(evidence, default=str),
                ),
            )
            if cur.rowcount:
                return int(cur.lastrowid or 0)
            row = db.execute(
                "SELECT id FROM deaths WHERE kernel_id = ? AND pid = ?", (report["kernel_id"], evidence.get("pid"))
            ).fetchone()
            return int(row["id"]) if row else 0

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


def _death_row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["report"] = json.loads(data["report"])
    data["evidence"] = json.loads(data["evidence"])
    return data


def _first(rows: list[sqlite3.Row]) -> sqlite3.Row | None:
    return rows[0] if rows else None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
