"""The per-cell checkpoint policy: after each cell, save what changed, off the cell's critical path.

On the critical path (``post_run_cell``) only cheap things happen: list the user's names, group names
that point at one object (aliases stay aliases), note which cell (re)bound each name, check memory and
disk headroom, and hand the references to a writer (a forked child when there is headroom for its
copy-on-write pages, else a thread that the next cell waits for). The writer pickles each object
(protocol 5, arrays out-of-band), hashes the parts, writes only blobs it does not have yet, then the
manifest, then prunes old checkpoints.
"""

from __future__ import annotations

import os
import re
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sizes import format_bytes, parse_size
from .blobs import BlobStore, checkpoints_root, enforce_disk_budget, home_dir, session_dirname
from .detect import HASH_NAME, Unpicklable, big_buffer_bytes, blob_id, blob_size, serialize
from .writer import ForkWriter, ThreadWriter

EXCLUDED_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
REF_MIN_BYTES = 1 << 20  # variables this big are stored once even when other variables hold them too
MEMORY_RESERVE = 64 << 20  # never checkpoint into the last 64 MiB of the budget
DEFAULT_KEEP = 3
DISK_RESERVE_MIN = 1 << 30  # stop before the filesystem has less than max(1 GiB, 5%) free


@dataclass
class Group:
    """Names bound to one object (aliases), the object itself, and what we know of its origin."""

    names: list[str]
    obj: Any
    type_name: str
    big_bytes: int
    cells: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Capture:
    """What a writer needs: references to the objects (no copies) and where to put the checkpoint."""

    kernel_id: str
    incarnation: str  # "<kernel id>@<pid>"
    session_key: str | None
    execution_count: int | None
    groups: list[Group]
    modules: list[dict[str, Any]]
    session_dir: str
    keep: int
    disk_budget: int
    disk_reserve: int


def type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def scan_namespace(ns: dict[str, Any], hidden: set[str] | frozenset[str] = frozenset()) -> tuple[list[Group], list[dict[str, Any]]]:
    """Return the user's variables grouped by identity, and the modules they imported (re-imported on restore).

    Pure: reads ``ns`` only. Names starting with ``_`` (IPython's ``_``, ``_i3``, ``_5``) and IPython's own
    names are left out.
    """
    groups: dict[int, Group] = {}
    modules: list[dict[str, Any]] = []
    for name, value in list(ns.items()):
        if name.startswith("_") or name in EXCLUDED_NAMES or name in hidden:
            continue
        if isinstance(value, types.ModuleType):
            modules.append({"names": [name], "module": value.__name__})
            continue
        key = id(value)
        if key in groups:
            groups[key].names.append(name)
        else:
            groups[key] = Group([name], value, type_name(value), big_buffer_bytes(value))
    return list(groups.values()), modules


class CellTracker:
    """Remembers which cell last (re)bound each name, so an unpicklable object can name its cell."""

    def __init__(self) -> None:
        self.cells: dict[str, list[dict[str, Any]]] = {}
        self._before: dict[str, int] = {}

    def before(self, ns: dict[str, Any]) -> None:
        self._before = {k: id(v) for k, v in ns.items() if not k.startswith("_")}

    def after(self, ns: dict[str, Any], execution_count: int | None, code: str) -> None:
        for name, value in list(ns.items()):
            if name.startswith("_"):
                continue
            if self._before.get(name) != id(value):
                self.cells[name] = [{"execution_count": execution_count, "code": code}]

    def cells_for(self, name: str, history: list[str] | None) -> list[dict[str, Any]]:
        """Return the cell that bound ``name``: tracked, else found in the input history by a simple pattern."""
        if name in self.cells:
            return self.cells[name]
        if history:
            pattern = re.compile(
                rf"(^|[\s;,(])({re.escape(name)}\s*(,[^=\n]*)?=(?!=)|as\s+{re.escape(name)}\b|def\s+{re.escape(name)}\b"
                rf"|class\s+{re.escape(name)}\b|for\s+{re.escape(name)}\s+in\b)",
                re.M,
            )
            for count in range(len(history) - 1, 0, -1):
                if pattern.search(history[count] or ""):
                    return [{"execution_count": count, "code": history[count]}]
        return []


def write_checkpoint(capture: Capture, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one checkpoint (runs in the writer); return a JSON-able result: status, bytes, notes.

    Only blobs not already stored are written; when nothing at all changed since ``previous`` (the last
    manifest this kernel wrote), no manifest is written either.
    """
    started = time.monotonic()
    store = BlobStore(capture.session_dir)
    objects: list[dict[str, Any]] = []
    unpicklable: list[dict[str, Any]] = []
    notes: list[str] = []
    written = total = 0
    # big variables (arrays, frames) held inside other variables are stored once, by reference
    refs = {id(g.obj): g.names[0] for g in capture.groups if g.big_bytes >= REF_MIN_BYTES}
    # one object at a time: serialize, write what the store lacks, let go. Memory stays at one in-band
    # pickle (at most 8 MiB, bigger ones are spilled to disk as they are made) whatever the namespace holds.
    for group in capture.groups:
        try:
            parts = serialize(group.obj, spill_dir=str(store.dir / "tmp"), refs=refs)
        except Unpicklable as exc:
            unpicklable.append({"names": group.names, "type": group.type_name, "reason": str(exc), "cells": group.cells})
            continue
        except RecursionError:
            unpicklable.append({"names": group.names, "type": group.type_name, "reason": "too deeply nested to pickle", "cells": group.cells})
            continue
        buffers = [blob_id(b) for b in parts.buffers]
        pending: list[tuple[str, Any]] = [(parts.inband_id, parts.inband if parts.inband is not None else Path(parts.inband_path))]
        pending.extend(zip(buffers, parts.buffers))
        for i, (bid, data) in enumerate(pending):
            if store.has_blob(bid):
                _discard_spilled([(bid, data)])
                continue
            size = blob_size(bid)
            free = _free_bytes(store.dir)
            if free is not None and free - size < capture.disk_reserve:
                _discard_spilled(pending[i:])
                return {"status": "disk_full", "bytes_written": written, "seconds": time.monotonic() - started,
                        "notes": [f"checkpoints stopped: {format_bytes(free)} free on the disk of {store.dir}, "
                                  f"the checkpoint needs {format_bytes(size)} more and "
                                  f"{format_bytes(capture.disk_reserve)} must stay free"]}
            written += store.write_blob(bid, data)
        total += parts.nbytes
        objects.append({"names": group.names, "type": group.type_name, "method": parts.method, "inband": parts.inband_id,
                        "buffers": buffers, "nbytes": parts.nbytes, "cells": group.cells,
                        **({"refs": parts.refs} if parts.refs else {})})
        del parts, pending
    state = {"objects": objects, "modules": capture.modules, "unpicklable": unpicklable}
    if previous is not None and _same_state(previous, state):
        return {"status": "unchanged", "bytes_written": written, "bytes_total": total, "seconds": time.monotonic() - started,
                "notes": notes}
    seq = store.next_seq(capture.incarnation)
    manifest = {
        "version": 1,
        "kernel_id": capture.kernel_id,
        "pid": int(capture.incarnation.rsplit("@", 1)[1]),
        "session": capture.session_key,
        "seq": seq,
        "execution_count": capture.execution_count,
        "created": time.time(),
        "hash": HASH_NAME,
        **state,
    }
    path = store.write_manifest(capture.incarnation, seq, manifest)
    store.write_latest(capture.incarnation, seq, capture.execution_count)
    store.collect(capture.incarnation, capture.keep)
    notes.extend(enforce_disk_budget(store.dir.parent, capture.disk_budget, store, capture.incarnation))
    return {"status": "written", "manifest": str(path), "seq": seq, "bytes_written": written, "bytes_total": total,
            "objects": len(objects), "unpicklable": [u["names"] for u in unpicklable],
            "seconds": time.monotonic() - started, "notes": notes}


def _discard_spilled(pending: list[tuple[str, Any]]) -> None:
    for _bid, data in pending:
        if isinstance(data, Path):
            try:
                data.unlink()
            except OSError:
                pass


def _same_state(previous: dict[str, Any], state: dict[str, Any]) -> bool:
    def key(m: dict[str, Any]) -> Any:
        return (
            sorted((tuple(o["names"]), o["inband"], tuple(o["buffers"]), o["method"], tuple(o.get("refs", [])))
                   for o in m.get("objects", [])),
            sorted((tuple(x["names"]), x["module"]) for x in m.get("modules", [])),
            sorted((tuple(u["names"]), u["type"]) for u in m.get("unpicklable", [])),
        )

    return key(previous) == key(state)


def _free_bytes(path: Any) -> int | None:
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


def _disk_reserve(path: Any) -> int:
    try:
        st = os.statvfs(path)
        return max(DISK_RESERVE_MIN, int(st.f_blocks * st.f_frsize * 0.05))
    except OSError:
        return DISK_RESERVE_MIN


def parse_switch(text: str | None, default: bool) -> bool:
    """Return what an on/off setting means (``on``/``1``/``true``/``yes`` or ``off``/``0``/``false``/``no``)."""
    if text is None or not text.strip():
        return default
    value = text.strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"KERNEL_SENTINEL_CHECKPOINT={text!r}: use on or off")


def kernel_id_of_this_kernel() -> str:
    """Return this kernel's id as the autopsy sees it (the supervisor's, else ``<id>`` of ``kernel-<id>.json``)."""
    try:
        from ..autopsy.recorder import kernel_identity

        return kernel_identity(None)[0]
    except Exception:
        pass
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return f"pid-{os.getpid()}"
    stem = name[:-5] if name.endswith(".json") else name
    return stem[len("kernel-"):] if stem.startswith("kernel-") else stem


def session_key_of(ns: dict[str, Any]) -> str | None:
    """Return a key that survives a kernel restart: the notebook path the frontend gives, if any.

    jupyter_server sets ``JPY_SESSION_NAME`` (ipykernel copies it to ``__session__``); VS Code puts
    ``__vsc_ipynb_file__`` in the namespace.
    """
    for value in (os.environ.get("JPY_SESSION_NAME"), ns.get("__session__"), ns.get("__vsc_ipynb_file__")):
        if isinstance(value, str) and value:
            return value
    return None


class Checkpointer:
    """The per-kernel checkpoint policy; the extension wires its hooks into IPython."""

    def __init__(
        self,
        ns: dict[str, Any],
        *,
        enabled: bool,
        kernel_id: str | None = None,
        session_key: str | None = None,
        home: str | os.PathLike[str] | None = None,
        keep: int | None = None,
        disk_budget: int | None = None,
        writer: str | None = None,
        hidden: set[str] | frozenset[str] = frozenset(),
        history: Callable[[], list[str] | None] = lambda: None,
        memory_available: Callable[[], int | None] | None = None,
        process_rss: Callable[[], int] | None = None,
    ) -> None:
        self.ns = ns
        self.enabled = enabled
        self.kernel_id = kernel_id or kernel_id_of_this_kernel()
        self.incarnation = f"{self.kernel_id}@{os.getpid()}"
        self.session_key = session_key if session_key is not None else session_key_of(ns)
        self.root = checkpoints_root(home if home is not None else home_dir())
        self.store = BlobStore(self.root / session_dirname(self.session_key, self.kernel_id))
        self.keep = keep or int(os.environ.get("KERNEL_SENTINEL_CHECKPOINT_KEEP", DEFAULT_KEEP))
        self.root.mkdir(parents=True, exist_ok=True)
        budget_text = os.environ.get("KERNEL_SENTINEL_CHECKPOINT_DISK")
        free = _free_bytes(self.root) or (10 << 30)
        self.disk_budget = disk_budget or (parse_size(budget_text) if budget_text else min(10 << 30, free // 4))
        self.disk_reserve = _disk_reserve(self.root)
        self.writer_choice = (writer or os.environ.get("KERNEL_SENTINEL_CHECKPOINT_WRITER") or "auto").lower()
        self.hidden = hidden
        self.history = history
        self.tracker = CellTracker()
        self._fork = ForkWriter(tmp_root=str(self.store.dir))
        self._thread = ThreadWriter()
        self._memory_available = memory_available or _memory_reader()
        self._process_rss = process_rss or _own_rss
        self.last_result: dict[str, Any] | None = None
        self.last_manifest: dict[str, Any] | None = None
        self.last_writer: str | None = None
        self.notes: list[str] = []  # shown once, after the cell that produced them
        self.stopped_reason: str | None = None
        self.count = 0
        self.skipped = 0
        self._lock = threading.RLock()
        self._in_cell = False
        self._pending: int | None = None
        self._watcher: threading.Thread | None = None
        self.offer: Callable[[], str | None] | None = None  # the extension sets the after-a-death restore offer

    # -- hooks -------------------------------------------------------------------------------------

    def pre_run_cell(self, info: Any = None) -> None:
        """Before a cell: a thread writer must finish reading the objects the cell may change."""
        with self._lock:  # a catch-up checkpoint being started from the watcher finishes first
            self._in_cell = True
        if self._thread.busy:
            result = self._thread.wait(timeout=2.0)
            if result is None and self._thread.busy:
                # why say it: the cell seems to hang otherwise (the thread writer is used when memory is too tight to fork)
                print("[kernel-sentinel] waiting for the previous cell's checkpoint to be written "
                      "(memory is too tight for a background copy); `%sentinel checkpoint off` skips them")
                result = self._thread.wait()
            self._absorb(result, "thread")
        self.tracker.before(self.ns)

    def post_run_cell(self, result: Any = None) -> None:
        """After a cell: note which names it bound, then start a checkpoint if checkpoints are on."""
        info = getattr(result, "info", None)
        code = getattr(info, "raw_cell", "") or ""
        count = getattr(result, "execution_count", None)
        self.tracker.after(self.ns, count, code)
        if self.offer is not None:
            offer, self.offer = self.offer, None  # once, in the first cell after the kernel started
            try:
                text = None if _is_checkpoint_magic(code) else offer()
            except Exception:
                text = None
            if text:
                self.notes.append(text)
        with self._lock:
            self._in_cell = False
            self._absorb(self._fork.poll(), "fork")
            self._absorb(self._thread.poll(), "thread")
            ran_out = isinstance(getattr(result, "error_in_exec", None), MemoryError)
            if self.enabled and ran_out:
                # The cell just hit the memory budget: whatever is left is too little to copy or pickle
                # the namespace (a pickler's memo alone costs ~100 bytes per object). The next cell that
                # ends normally checkpoints again.
                self.skipped += 1
                self.notes.append("checkpoint skipped: this cell ran out of memory")
            elif self.enabled and code.strip() and not _is_checkpoint_magic(code):
                if self._fork.busy or self._thread.busy:
                    # the previous checkpoint is still being written: take this one as soon as it is done,
                    # provided no cell is running then (the namespace is the same as now)
                    self._pending = count
                    self._start_watcher()
                else:
                    self._pending = None
                    self._checkpoint_locked(count)
        self.flush_notes()

    def _start_watcher(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return

        def watch() -> None:
            while True:
                time.sleep(0.02)
                with self._lock:
                    if self._pending is None or not self.enabled:
                        return
                    if self._in_cell:
                        continue  # a cell runs: the state is not the one to save; post_run_cell will take over
                    if self._fork.busy or self._thread.busy:
                        continue
                    self._absorb(self._fork.poll(), "fork")
                    self._absorb(self._thread.poll(), "thread")
                    count, self._pending = self._pending, None
                    self._checkpoint_locked(count)
                    return

        self._watcher = threading.Thread(target=watch, name="sentinel-checkpoint-catch-up", daemon=True)
        self._watcher.start()

    def flush_notes(self) -> None:
        for note in dict.fromkeys(self.notes):
            print(f"[kernel-sentinel] {note}")
        self.notes.clear()

    # -- the work ----------------------------------------------------------------------------------

    def checkpoint(self, execution_count: int | None = None, *, wait: bool = False) -> str:
        """Start a checkpoint of the namespace now (``wait``: and finish it); return what happened in one line."""
        if wait:
            self.wait()
        with self._lock:
            if self._fork.busy or self._thread.busy:
                self.skipped += 1
                return "skipped: the previous checkpoint is still being written (the next cell will catch up)"
            message = self._checkpoint_locked(execution_count)
        if wait:
            self.wait()
            return self.describe_last()
        return message

    def _checkpoint_locked(self, execution_count: int | None) -> str:
        if self.stopped_reason:
            return f"checkpoints are stopped: {self.stopped_reason}"
        groups, modules = scan_namespace(self.ns, self.hidden)
        untracked = any(g.names[-1] not in self.tracker.cells for g in groups)
        history = self.history() if untracked else None  # only names bound before we were loaded need it
        for group in groups:
            group.cells = self.tracker.cells_for(group.names[-1], history)
        big = sum(g.big_bytes for g in groups)
        free = _free_bytes(self.root)
        if free is not None and free - big < self.disk_reserve:
            return self._stop(f"{format_bytes(free)} free on the disk of {self.root}, "
                              f"{format_bytes(self.disk_reserve)} must stay free and the variables hold {format_bytes(big)}")
        available = self._memory_available()
        kind = self._choose_writer(big, available)
        if kind is None:
            self.skipped += 1
            note = (f"checkpoint skipped: memory is tight ({format_bytes(available)} left under the budget, "
                    f"a checkpoint needs {format_bytes(MEMORY_RESERVE)} of headroom)")
            self.notes.append(note)
            return note
        capture = Capture(self.kernel_id, self.incarnation, self.session_key, execution_count, groups, modules, str(self.store.dir),
                          self.keep, self.disk_budget, self.disk_reserve)
        previous = self.last_manifest
        writer = self._fork if kind == "fork" else self._thread
        self.last_writer = kind
        writer.start(lambda: write_checkpoint(capture, previous))
        self.count += 1
        return f"checkpoint started ({kind} writer)"

    def _choose_writer(self, big: int, available: int | None) -> str | None:
        """Return "fork", "thread" or None (skip): fork only with headroom for its copy-on-write pages.

        The worst case is the whole process, not only its arrays: pickling in the child touches the
        reference count of every Python object it walks, so every page holding one is copied, while the
        kernel may rewrite its arrays meanwhile. Forking on array bytes alone let a child holding a
        million copied list pages push a nearly full group to the OOM killer.
        """
        if available is not None and available < MEMORY_RESERVE:
            return None
        worst = max(big, self._process_rss())
        fork_ok = hasattr(os, "fork") and (available is None or available >= worst + MEMORY_RESERVE)
        if self.writer_choice == "thread" or (self.writer_choice == "auto" and not fork_ok):
            return "thread"
        if self.writer_choice == "fork" and not fork_ok:
            return "thread"
        return "fork"

    def _stop(self, reason: str) -> str:
        self.stopped_reason = reason
        self.notes.append(f"checkpoints stopped: {reason}")
        return f"checkpoints stopped: {reason}"

    def _absorb(self, result: dict[str, Any] | None, kind: str) -> None:
        if result is None:
            return
        self.last_result = {**result, "writer": kind}
        self.notes.extend(result.get("notes", []))
        if result.get("status") == "disk_full":
            self.stopped_reason = "the disk is nearly full"
        if result.get("status") == "written":
            import json

            try:
                with open(result["manifest"]) as f:
                    self.last_manifest = json.load(f)
            except (OSError, ValueError):
                self.last_manifest = None

    def wait(self) -> None:
        """Block until the writer in flight, and the catch-up checkpoint it was holding back, have finished.

        Called from a cell (``%sentinel checkpoint now``, a test), it takes the held-back checkpoint at
        once: the namespace is then what the cells before it left.
        """
        with self._lock:
            self._absorb(self._fork.wait(), "fork")
            self._absorb(self._thread.wait(), "thread")
            if self._pending is not None and self.enabled:
                count, self._pending = self._pending, None
                self._checkpoint_locked(count)
                self._absorb(self._fork.wait(), "fork")
                self._absorb(self._thread.wait(), "thread")

    # -- status ------------------------------------------------------------------------------------

    def describe_last(self) -> str:
        r = self.last_result
        if not r:
            return "no checkpoint finished yet"
        if r.get("status") == "written":
            return (f"checkpoint {r['seq']} written by the {r['writer']} writer in {r['seconds']:.2f} s: "
                    f"{r['objects']} objects, {format_bytes(r['bytes_written'])} new of {format_bytes(r['bytes_total'])}"
                    + (f"; not saved: {', '.join('/'.join(n) for n in r['unpicklable'])}" if r.get("unpicklable") else ""))
        if r.get("status") == "unchanged":
            return f"nothing changed since the last checkpoint (checked in {r['seconds']:.2f} s)"
        return f"last checkpoint {r.get('status')}: {'; '.join(r.get('notes', []))}"

    def status(self) -> str:
        """Return the ``%sentinel checkpoint status`` text."""
        if self._fork.busy or self._thread.busy:
            state = "writing"
        else:
            self._absorb(self._fork.poll(), "fork")
            self._absorb(self._thread.poll(), "thread")
            state = "idle"
        lines = [
            f"checkpoints: {'on' if self.enabled else 'off'}" + (f" (stopped: {self.stopped_reason})" if self.stopped_reason else ""),
            f"kernel {self.kernel_id}, session {self.session_key or '(none: newest checkpoint of any kernel is used)'}",
            f"folder: {self.store.dir}",
            f"keep {self.keep} per kernel within {format_bytes(self.disk_budget)} of disk; writer {self.writer_choice}, now {state}",
            f"started {self.count}, skipped {self.skipped}; {self.describe_last()}",
        ]
        return "\n".join(lines)


def _own_rss() -> int:
    """Return this process's resident size in bytes (0 when unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except Exception:
            return 0


def _is_checkpoint_magic(code: str) -> bool:
    text = code.strip()
    return text.startswith(("%sentinel restore", "%sentinel checkpoint"))


def _memory_reader() -> Callable[[], int | None]:
    """Return a function giving the bytes a checkpoint may use: headroom below 90% of the budget (None: unknown)."""
    try:
        from ..memory import MemoryReader

        reader = MemoryReader(rlimits=False)  # the guard's RLIMIT_DATA fence is not the budget
    except Exception:
        return lambda: None
    limit_text = os.environ.get("KERNEL_SENTINEL_MEMORY_LIMIT")

    def available() -> int | None:
        try:
            snap = reader.snapshot()
        except Exception:
            return None
        avail = snap.available_bytes
        if avail is not None and snap.budget_bytes:
            # the guard interrupts a cell at 90% of the budget: a checkpoint's copies must stay below that line
            avail -= snap.budget_bytes // 10
        if limit_text and snap.process.rss_bytes is not None:
            try:
                extra = parse_size(limit_text, of=snap.budget_bytes) - snap.process.rss_bytes
                avail = extra if avail is None else min(avail, extra)
            except Exception:
                pass
        return avail

    return available


__all__ = ["Capture", "CellTracker", "Checkpointer", "Group", "scan_namespace", "write_checkpoint"]
