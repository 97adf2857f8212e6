"""The per-cell checkpoint policy: after each cell, save what changed, off the cell's critical path.

On the critical path (``post_run_cell``) only cheap things happen: list the user's names, group names
that point at one object (aliases stay aliases), note which cell (re)bound each name, check memory and
disk headroom, and hand the references to a writer (a forked child when there is headroom for its
copy-on-write pages, else a thread that the next cell waits for). The writer pickles each object
(protocol 5, arrays out-of-band), hashes the parts, writes only blobs it does not have yet, then the
manifest, then prunes old checkpoints. A big dict or list is pickled in chunks of entries, each its own
blob: rebound with one entry changed, it costs one chunk's write, not the whole container's.
"""

from __future__ import annotations

import os
import re
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import ne
from pathlib import Path
from typing import Any

from ..sizes import format_bytes, parse_size
from .blobs import BlobStore, checkpoints_root, enforce_disk_budget, home_dir, private_dirs, session_dirname
from .detect import (
    HASH_NAME,
    Cancelled,
    Unpicklable,
    big_buffer_bytes,
    blob_id,
    blob_size,
    chunkable,
    serialize,
    serialize_chunks,
)
from .writer import ForkWriter, ThreadWriter

EXCLUDED_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
REF_MIN_BYTES = 1 << 20  # variables this big are stored once even when other variables hold them too
MEMORY_RESERVE = 64 << 20  # never checkpoint into the last 64 MiB of the budget
DEFAULT_KEEP = 3
DISK_RESERVE_MIN = 1 << 30  # stop before the filesystem has less than max(1 GiB, 5%) free
IDLE_SECONDS = 0.1  # a checkpoint starts once the kernel has been idle this long: quick cells make one
MAX_DEFER_SECONDS = 30.0  # cells back to back without a pause: take one between two of them after this long
MAX_IDLE_SECONDS = 10.0  # the longest pause asked for before a checkpoint, after writers were given up for cells
WRITER_POLL_SECONDS = 0.02  # how often the scheduler looks whether the writer has finished
BUDGET_RETRY_SECONDS = 1.0
PRE_RUN_LOCK_SECONDS = 0.5  # the longest a cell waits for a fork in progress (a fork takes milliseconds)
# The longest a starting cell waits for a stopped writer to let go of memory: a cancelled thread writer of
# the objects it holds (the chunk it writes, 32 MiB and an fdatasync, ends first: 20-90 ms here), a killed
# forked writer of the pages it copied (its exit: 5-35 ms here). Without the wait, `del a` freed nothing while
# the thread held `a`, and the dying child's pages were counted by the guard's fence as the cell started:
# both refused memory a stock kernel had.
LET_GO_SECONDS = 2.0
# The writers' CPU budget: half the kernel's own CPU time, plus 2% of the time it has been up (so an idle
# kernel still gets its last state saved), plus a grace for the first checkpoints.
CPU_SHARE = 0.5
IDLE_CPU_SHARE = 0.02
CPU_GRACE_SECONDS = 2.0
KEEP_EVENTS = 8
# What forks may cost the kernel itself (the fork, and a write fault per page afterwards): 0.5% of its own CPU
# time plus 0.1% of the time it has been up, plus a grace for the first one. The fork write-protects every
# private page of the kernel, and every page the kernel writes afterwards faults once, whether or not the child
# read it, and even once the child is gone: bench/bench_default_cost.py's cells (rebinding a 200k-entry dict
# and 50k records) take ~31k more faults after a fork of a 330 MiB kernel, ~60-95 ms of its CPU (~2-3 us each;
# the fork itself ~9 ms), where a round of them costs ~0.75-1 s. At 2% that was ~25 ms a round, most of issue
# #11's 3%. At 0.5% a kernel busy in cells forks after ~18 s of its own CPU; one a user works in interactively
# is paced by the idle share (a fork of that kernel each ~90 s of wall time, whatever its CPU).
KERNEL_SHARE = 0.005
IDLE_KERNEL_SHARE = 0.001
KERNEL_GRACE_SECONDS = 0.1
PAGE_BYTES = 4096
FAULT_SECONDS = 1e-6
_GONE = object()  # a name's value when the name is no longer there


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
    """Remembers which cell last (re)bound each name, so an unpicklable object can name its cell.

    One pass per cell, after it (``after``): a name whose object is not the one it held after the previous
    cell was bound by this one. ``before`` sets that baseline (the checkpointer does once, when it loads);
    code that rebinds names between two cells (a background thread) is counted to the next.
    """

    def __init__(self) -> None:
        self.cells: dict[str, list[dict[str, Any]]] = {}
        self._before: dict[str, int] = {}  # the user's names (no leading "_") -> id of their object
        self._names: list[str] = []  # the namespace's names at the last pass, in its order ("_" ones included)

    def before(self, ns: dict[str, Any]) -> None:
        self._names = list(ns)
        self._before = {k: id(v) for k, v in ns.items() if not k.startswith("_")}

    def after(self, ns: dict[str, Any], execution_count: int | None, code: str) -> None:
        # IPython adds a name per cell (``_i<N>``, and ``_<N>`` per output), so most of a long session's
        # namespace is names we skip; between two cells they are out of the CPU's caches, and each one looked
        # at costs a miss or two. What a walk of the whole namespace found is found here with one listing of
        # the names (in C) and no set of them: a dict keeps its order, so when the names of the last pass
        # come first, unchanged, the new ones are those after them (else a name was deleted: a set difference
        # finds them). The user's names seen then whose object changed are found in C too (their ids now
        # beside those then); only those few are looked at in Python.
        names = list(ns)
        seen = self._names
        fresh = names[len(seen):] if names[: len(seen)] == seen else set(names).difference(seen)
        before = self._before
        ids = list(map(id, map(ns.get, before, repeat(_GONE))))  # id(_GONE) where the name went
        now = dict(zip(before, ids))
        gone: list[str] = []
        for name in chain(compress(before, map(ne, before.values(), ids)), fresh):
            if name.startswith("_"):
                continue
            value = ns.get(name, _GONE)
            if value is _GONE:
                gone.append(name)
                now.pop(name, None)
                continue
            key = now[name] = id(value)
            if before.get(name) != key:
                self.cells[name] = [{"execution_count": execution_count, "code": code}]
        if gone and not set(gone).isdisjoint(names):  # deleted since we listed it: a name bound again later is new
            dropped = set(gone)
            names = [n for n in names if n not in dropped]
        self._names = names
        self._before = now

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


def write_checkpoint(
    capture: Capture, previous: dict[str, Any] | None = None, cancelled: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Write one checkpoint (runs in the writer); return a JSON-able result: status, bytes, notes.

    ``cancelled`` (the thread writer's): asked between objects, pickle frames and 32 MiB of a big buffer's
    write; when it says so, stop with status "cancelled" and write no manifest (a cell started and may be
    changing the objects, or deleting them: held here, they are not freed).

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
            if cancelled is not None and cancelled():
                raise Cancelled
            spill = str(store.dir / "tmp")
            # a big dict or list of small objects goes in chunks: a chunk that did not change is not written again
            chunks = serialize_chunks(group.obj, spill_dir=spill, refs=refs, cancelled=cancelled) \
                if chunkable(group.obj) else None
            parts_list = chunks if chunks is not None else [serialize(group.obj, spill_dir=spill, refs=refs, cancelled=cancelled)]
        except Cancelled:
            return _cancelled(written, started)
        except Unpicklable as exc:
            unpicklable.append({"names": group.names, "type": group.type_name, "reason": str(exc), "cells": group.cells})
            continue
        except RecursionError:
            unpicklable.append({"names": group.names, "type": group.type_name, "reason": "too deeply nested to pickle", "cells": group.cells})
            continue
        inbands: list[str] = []
        buffers: list[str] = []
        held: set[str] = set()
        nbytes = 0
        for n, parts in enumerate(parts_list):
            part_buffers = [blob_id(b) for b in parts.buffers]
            pending: list[tuple[str, Any]] = [(parts.inband_id, parts.inband if parts.inband is not None else Path(parts.inband_path))]
            pending.extend(zip(part_buffers, parts.buffers))
            for i, (bid, data) in enumerate(pending):
                if store.has_blob(bid):
                    _discard_spilled([(bid, data)])
                    continue
                size = blob_size(bid)
                free = _free_bytes(store.dir)
                if free is not None and free - size < capture.disk_reserve:
                    _discard_rest(pending[i:], parts_list[n + 1:])
                    return {"status": "disk_full", "bytes_written": written, "seconds": time.monotonic() - started,
                            "notes": [f"checkpoints stopped: {format_bytes(free)} free on the disk of {store.dir}, "
                                      f"the checkpoint needs {format_bytes(size)} more and "
                                      f"{format_bytes(capture.disk_reserve)} must stay free"]}
                try:
                    written += store.write_blob(bid, data, cancelled)
                except Cancelled:  # between chunks of a big buffer: let go of the objects now
                    _discard_rest(pending[i:], parts_list[n + 1:])
                    return _cancelled(written, started)
            inbands.append(parts.inband_id)
            buffers.extend(part_buffers)
            held.update(parts.refs)
            nbytes += parts.nbytes
            method = parts.method
        total += nbytes
        entry: dict[str, Any] = {"names": group.names, "type": group.type_name, "method": method}
        if chunks is not None:
            entry.update({"container": type(group.obj).__name__, "inband": None, "chunks": inbands})
        else:
            entry["inband"] = inbands[0]
        entry.update({"buffers": buffers, "nbytes": nbytes, "cells": group.cells, **({"refs": sorted(held)} if held else {})})
        objects.append(entry)
        del parts_list, chunks, parts, pending  # one object's pickles at a time
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


def _cancelled(written: int, started: float) -> dict[str, Any]:
    """Return the result of a checkpoint a starting cell stopped (no manifest written)."""
    return {"status": "cancelled", "bytes_written": written, "seconds": time.monotonic() - started, "notes": []}


def _discard_rest(pending: list[tuple[str, Any]], later: list[Any]) -> None:
    """Remove what a checkpoint that stops half-way made and will not write: spilled blobs, parts not reached."""
    _discard_spilled(pending)
    for parts in later:
        parts.discard()


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
            sorted((tuple(o["names"]), o["inband"] or "", tuple(o.get("chunks", [])), tuple(o["buffers"]), o["method"],
                    tuple(o.get("refs", [])))
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
    from ..identity import kernel_identity

    return kernel_identity()[0]


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
    """The per-kernel checkpoint policy: when to save, with which writer, within which CPU budget.

    Threads (which may touch what):
    - the main thread runs the IPython hooks and ``%sentinel checkpoint``: ``pre_run_cell`` marks a cell as
      running, ``post_run_cell`` notes what the cell bound and marks the namespace dirty. Neither pickles,
      forks or waits for a writer (one exception, rare by design: ``post_run_cell`` forks itself when cells
      have come back to back for ``MAX_DEFER_SECONDS`` with changes unsaved, since no idle moment came).
    - the scheduler thread (``sentinel-checkpoint``) starts a checkpoint once the kernel has been idle for
      ``IDLE_SECONDS`` with changes unsaved (cells that come quickly are coalesced into one checkpoint),
      within the CPU budget, and reaps the writer (its CPU time counts against the budget).
    ``_lock`` guards ``_in_cell``, ``_dirty``, the writers and the counters; a fork happens only with the
    lock held and no cell running, so a cell never starts while the namespace is being copied: it waits at
    most for one ``fork()`` call, never for a writer. Nothing here prints into a cell's output except the
    restore offer after a death; what happened is in ``status()`` (``%sentinel checkpoint status``).
    """

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
        idle_seconds: float | None = None,
    ) -> None:
        self.ns = ns
        self.enabled = enabled
        self.kernel_id = kernel_id or kernel_id_of_this_kernel()
        self.incarnation = f"{self.kernel_id}@{os.getpid()}"
        self.session_key = session_key if session_key is not None else session_key_of(ns)
        self.root = checkpoints_root(home if home is not None else home_dir())
        self.store = BlobStore(self.root / session_dirname(self.session_key, self.kernel_id))
        self.keep = keep or int(os.environ.get("KERNEL_SENTINEL_CHECKPOINT_KEEP", DEFAULT_KEEP))
        private_dirs(self.root)
        budget_text = os.environ.get("KERNEL_SENTINEL_CHECKPOINT_DISK")
        free = _free_bytes(self.root) or (10 << 30)
        self.disk_budget = disk_budget or (parse_size(budget_text) if budget_text else min(10 << 30, free // 4))
        self.disk_reserve = _disk_reserve(self.root)
        self.writer_choice = (writer or os.environ.get("KERNEL_SENTINEL_CHECKPOINT_WRITER") or "auto").lower()
        self.hidden = hidden
        self.history = history
        self.tracker = CellTracker()
        self.tracker.before(ns)  # names bound before we loaded are found in the history, not counted to a cell
        self._fork = ForkWriter(tmp_root=str(self.store.dir))
        self._thread = ThreadWriter()
        self._memory_available = memory_available or _memory_reader()
        self._process_rss = process_rss or _own_rss
        self.idle_seconds = IDLE_SECONDS if idle_seconds is None else idle_seconds
        self.last_result: dict[str, Any] | None = None
        self.last_manifest: dict[str, Any] | None = None
        self.last_writer: str | None = None
        self.notes: list[str] = []  # printed once after a cell: only the restore offer goes here
        self.events: list[str] = []  # what status() tells: skips, deferrals, stops (the newest few)
        self.stopped_reason: str | None = None
        self.count = 0
        self.skipped = 0
        self.coalesced = 0
        self.stopped_writers = 0
        self._fork_exposure = 0  # bytes a cell could make the kernel copy while the forked writer lives
        self._fork_overdue = False  # the running writer was started between back-to-back cells: let it finish
        self._fork_dirty_since = 0.0
        self._given_up_in_a_row = 0
        self._fork_count: int | None = None
        self.kernel_cost = 0.0  # estimated CPU seconds the forks cost the kernel itself (fork + later faults)
        self._budget_retry_at = 0.0  # a budget said no: not asked again before this (monotonic)
        self.writer_cpu = 0.0  # CPU seconds the writers used (fork: reaped child's rusage; thread: its thread_time)
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()
        self._lock = threading.RLock()
        self._in_cell = False
        self._dirty: int | None | bool = False  # False: saved; else the execution count to save (None: unknown)
        self._dirty_since = 0.0
        self._idle_since = time.monotonic()
        self._after_memory_error = False
        self._wake = threading.Event()
        self._armed = False  # the scheduler sleeps with a timeout (it will look again by itself): no wake needed
        self._stop_event = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._looping = False  # the scheduler thread is inside its loop: set and cleared by that thread alone
        self.offer: Callable[[], str | None] | None = None  # the extension sets the after-a-death restore offer

    # -- hooks (main thread) -----------------------------------------------------------------------

    def pre_run_cell(self, info: Any = None) -> None:
        """Before a cell: from now on the namespace may change, so no checkpoint starts until it ends.

        Never raises (IPython would print a second traceback into the cell): a failure here, e.g. no
        memory left, is noted in status and checkpoints carry on at the next cell.
        """
        try:
            self._pre_run_cell()
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included: the cell is the user's
            self._hook_failed("pre_run_cell", exc)

    def post_run_cell(self, result: Any = None) -> None:
        """After a cell: note which names it bound and that the namespace changed; the scheduler saves it later.

        Never raises, and prints nothing but the restore offer after a death.
        """
        try:
            self._post_run_cell(result)
        except BaseException as exc:  # noqa: BLE001
            self._hook_failed("post_run_cell", exc)

    def _hook_failed(self, hook: str, exc: BaseException) -> None:
        try:
            self._in_cell = hook == "pre_run_cell"
            self._event(f"{hook} failed ({type(exc).__name__}: {exc}); the next cell tries again")
        except BaseException:  # noqa: BLE001 - not even this may reach the cell
            pass

    def _pre_run_cell(self) -> None:
        # A fork in progress finishes first (the scheduler holds the lock only around a fork: milliseconds).
        # Bounded all the same: a cell never waits long on checkpoints, whatever happened to their thread.
        locked = self._lock.acquire(timeout=PRE_RUN_LOCK_SECONDS)
        thread_busy = True
        try:
            self._in_cell = True
            # a thread writer reads live objects: it gives up, the next idle moment retries. Jobs start under
            # the lock and only outside a cell, so one that is not busy now cannot start during this cell.
            thread_busy = not locked or self._thread.busy
            if thread_busy:
                self._thread.cancel()
            if locked and self._fork.busy:
                self._stop_writer_for_cell()
        finally:
            if locked:
                self._lock.release()
            else:
                self._event("a cell started while the checkpoint scheduler was busy (it waited no longer)",
                            dedupe="a cell started")
        # outside the lock: the writer does not need it to give up
        if thread_busy and not self._thread.cancel(wait=LET_GO_SECONDS):
            self._event(f"a cell started while the thread writer was still writing (it waited "
                        f"{LET_GO_SECONDS:.0f} s for it to let go, no longer)", dedupe="a cell started while")

    def _stop_writer_for_cell(self) -> None:
        """Stop the forked writer before the cell runs, unless it is the overdue one and memory has room.

        While the child lives, every page the kernel writes is copied (~3 us a page, measured: a cell that
        rewrites 350 MiB pays 270 ms for it), and the copies are charged to the kernel's memory group, where
        the guard would see them as the cell's growth. So a writer started in an idle moment is given up when
        a cell starts (the next idle moment takes the checkpoint again, after a longer pause each time it was
        given up). The overdue writer (cells back to back for ``MAX_DEFER_SECONDS``) is let finish when there
        is room for the cell's copies: one such checkpoint per that period bounds both the cost and what a
        death can lose.
        """
        if self._fork_overdue:
            try:
                available = self._memory_available()
            except Exception:
                available = None
            if available is None or available >= self._fork_exposure + MEMORY_RESERVE:
                return
        if self._fork.stop(wait=LET_GO_SECONDS):  # its CPU is counted when the scheduler takes its result
            self.stopped_writers += 1
            self._given_up_in_a_row += 1
            if self._dirty is False:
                self._dirty = self._fork_count if self._fork_count is not None else True
                self._dirty_since = self._fork_dirty_since
            self._event(f"checkpoint given up: a cell started before it was written (its writes would be copied); "
                        f"the next pause of {self._idle_needed():.1f} s takes it", dedupe="checkpoint given up")

    def _idle_needed(self) -> float:
        """Return how long the kernel must be idle before a checkpoint starts: longer after each one given up."""
        return min(self.idle_seconds * (4 ** self._given_up_in_a_row), MAX_IDLE_SECONDS)

    def _post_run_cell(self, result: Any) -> None:
        info = getattr(result, "info", None)
        code = getattr(info, "raw_cell", "") or ""
        count = getattr(result, "execution_count", None)
        try:
            self.tracker.after(self.ns, count, code)
        except Exception:
            pass
        if self.offer is not None:
            offer, self.offer = self.offer, None  # once, in the first cell after the kernel started
            try:
                text = None if _is_checkpoint_magic(code) else offer()
            except Exception:
                text = None
            if text:
                self.notes.append(text)
        ran_out = isinstance(getattr(result, "error_in_exec", None), MemoryError)
        now = time.monotonic()
        with self._lock:
            self._in_cell = False
            self._idle_since = now
            if ran_out:
                # The cell hit the memory budget: what is left is too little to copy or pickle the namespace
                # (a pickler's memo alone costs ~100 bytes per object). Said in status, never in the output:
                # the cell's error is the one thing the user must read. The next cell that ends normally saves.
                self._after_memory_error = True
                self._event(f"cell [{count}] ran out of memory: its checkpoint waits for a cell that ends normally")
            elif self.enabled and code.strip() and not _is_checkpoint_magic(code):
                self._after_memory_error = False
                if self._dirty is False:
                    self._dirty_since = now
                else:
                    self.coalesced += 1
                self._dirty = count
                overdue = now - self._dirty_since >= MAX_DEFER_SECONDS
                if overdue and not self._busy() and self._within_budget():
                    self._start_locked(overdue=True)  # cells without a pause for long: take it between two
        if (self._dirty is not False or self._busy()) and not ran_out:
            self._ensure_scheduler()  # running since load; started here only for a Checkpointer used alone
            if not self._armed:  # else it looks again by itself when its timeout ends: a wake per cell saved
                self._wake.set()
        if self.notes:
            self.flush_notes()

    def flush_notes(self) -> None:
        for note in dict.fromkeys(self.notes):
            print(f"[kernel-sentinel] {note}")
        self.notes.clear()

    # -- the scheduler thread ----------------------------------------------------------------------

    def _ensure_scheduler(self) -> None:
        if self._looping:  # inside its loop, so alive: Thread.is_alive() (three calls and a lock) not asked each cell
            return
        if self._scheduler is not None and self._scheduler.is_alive():
            return
        self._stop_event.clear()
        self._scheduler = threading.Thread(target=self._schedule, name="sentinel-checkpoint", daemon=True)
        self._scheduler.start()

    def start(self) -> None:
        """Start the scheduler thread now (the extension does, at kernel start, while memory is plentiful)."""
        self._ensure_scheduler()

    def _schedule(self) -> None:
        """Loop of the scheduler thread: reap writers, start a checkpoint once the kernel is idle, run a thread job."""
        self._looping = True
        try:
            self._loop()
        finally:
            self._looping = False

    def _loop(self) -> None:
        """Run the scheduler until ``close`` stops it; a failed tick is noted in status and the loop goes on."""
        while not self._stop_event.is_set():
            try:
                timeout = self._tick()
                if self._thread.run_pending():  # outside the lock: a cell may start (and cancel it) meanwhile
                    timeout = 0
            except BaseException as exc:  # noqa: BLE001 - this thread must outlive a MemoryError
                timeout = BUDGET_RETRY_SECONDS
                try:
                    self._event(f"checkpoint scheduler: {type(exc).__name__}: {exc}", dedupe="checkpoint scheduler")
                except BaseException:  # noqa: BLE001
                    pass
            if timeout != 0:
                self._wake.wait(timeout)
                self._wake.clear()
                self._armed = False

    def _tick(self) -> float | None:
        """Do what is due now; return how long to sleep (None: until woken).

        Sets ``_armed`` under the lock when it returns a timeout: the scheduler then looks again by itself
        (an idle moment it waits for moves only later with each cell), so ``post_run_cell`` does not wake it.
        """
        with self._lock:
            timeout = self._due_locked()
            self._armed = timeout is not None
            return timeout

    def _due_locked(self) -> float | None:
        self._reap()
        if self._busy():
            return WRITER_POLL_SECONDS
        if self._dirty is False or not self.enabled or self.stopped_reason or self._after_memory_error:
            return None
        if self._in_cell:
            return None  # post_run_cell wakes us
        wait = self._idle_since + self._idle_needed() - time.monotonic()
        if wait > 0:
            return wait  # coalesce: cells that come quickly make one checkpoint
        if not self._within_budget():
            # An idle moment came and the budget, not a pause, is what the checkpoint waits for: cells back to
            # back from now on are not "without a pause" (MAX_DEFER_SECONDS) since long, and do not fork
            # between two of them (in post_run_cell, with the writer left alive through the next cells) the
            # moment the budget allows; the next idle moment takes it.
            self._dirty_since = time.monotonic()
            return BUDGET_RETRY_SECONDS
        self._start_idle_locked()
        return WRITER_POLL_SECONDS

    def _start_idle_locked(self) -> None:
        """Start the checkpoint an idle moment owes (the scheduler, under the lock); never a thread job in a cell.

        A cell that did not get this lock within PRE_RUN_LOCK_SECONDS starts all the same, after ``_due_locked``
        looked, and its cancel() may come before this start, which clears it: a thread job must not read live
        objects while the cell runs, so it is dropped unclaimed and the next idle moment takes the checkpoint.
        (`%sentinel checkpoint now` starts one from a cell on purpose, through ``wait``.)
        """
        self._start_locked()
        if self._in_cell and self._thread.busy:
            self._thread.cancel()

    def _busy(self) -> bool:
        return self._fork.busy or self._thread.busy

    def _reap(self, block: bool = False) -> None:
        """Take in what the writers finished (``block``: wait for them first), with the CPU they used."""
        for writer, kind in ((self._fork, "fork"), (self._thread, "thread")):
            result = writer.wait() if block else writer.poll()
            if result is not None:
                self.writer_cpu += writer.last_cpu
                self._absorb(result, kind)

    def cpu_budget(self) -> float:
        """Return the CPU seconds the writers may have used by now: a share of the kernel's own CPU, and of idle time."""
        kernel = time.process_time() - self._cpu0
        wall = time.monotonic() - self._wall0
        return CPU_SHARE * kernel + IDLE_CPU_SHARE * wall + CPU_GRACE_SECONDS

    def kernel_budget(self) -> float:
        """Return the CPU seconds forks may have cost the kernel itself by now: a small share of its own CPU."""
        kernel = time.process_time() - self._cpu0
        wall = time.monotonic() - self._wall0
        return KERNEL_SHARE * kernel + IDLE_KERNEL_SHARE * wall + KERNEL_GRACE_SECONDS

    def _within_budget(self) -> bool:
        """Return True when both budgets allow another checkpoint; else say in status which one does not.

        A "no" holds for BUDGET_RETRY_SECONDS (``_budget_retry_at``): cells back to back past MAX_DEFER_SECONDS
        ask after each cell, and the budgets grow with the kernel's CPU and time, not from one cell to the next.
        """
        if time.monotonic() < self._budget_retry_at:
            return False
        for used, allowed, what in (
            (self.writer_cpu, self.cpu_budget(), "writers"),
            (self.kernel_cost, self.kernel_budget(), "forks"),
        ):
            if used > allowed:
                what = (f"the writers' CPU ({CPU_SHARE:.0%} of the kernel's own)" if what == "writers" else
                        f"what forks cost the kernel ({KERNEL_SHARE:.1%} of its CPU)")
                self._event(f"checkpoint deferred: {what} is spent ({used:.2f} s of {allowed:.2f} s); it is taken "
                            "when the budget allows", dedupe="checkpoint deferred")
                self._budget_retry_at = time.monotonic() + BUDGET_RETRY_SECONDS
                return False
        return True

    def _start_locked(self, overdue: bool = False) -> None:
        count = self._dirty
        self._dirty = False
        self._fork_overdue = overdue
        self._fork_dirty_since = self._dirty_since
        message = self._checkpoint_locked(None if count is True else count)  # type: ignore[arg-type]
        if not message.startswith("checkpoint started"):
            self._event(message)

    def _event(self, text: str, dedupe: str | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        if dedupe and self.events and self.events[-1].split(" ", 1)[1].startswith(dedupe):
            self.events[-1] = f"{stamp} {text}"
        else:
            self.events.append(f"{stamp} {text}")
        del self.events[:-KEEP_EVENTS]

    # -- the work ----------------------------------------------------------------------------------

    def checkpoint(self, execution_count: int | None = None, *, wait: bool = False) -> str:
        """Start a checkpoint of the namespace now (``wait``: and finish it); return what happened in one line."""
        if wait:
            self.wait()
        with self._lock:
            self._reap()
            if self._busy():
                self.skipped += 1
                return "skipped: the previous checkpoint is still being written (the next idle moment catches up)"
            self._dirty = False
            self._fork_overdue = True  # asked for: let it finish
            message = self._checkpoint_locked(execution_count)
        if wait:
            self.wait()
            return self.describe_last()
        self._ensure_scheduler()
        self._wake.set()  # the scheduler reaps the writer
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
        kind = self._choose_writer(big, available, small=_small_work(groups))
        if kind is None:
            self.skipped += 1
            if available is not None and available < MEMORY_RESERVE:
                why = f"{format_bytes(available)} left under the budget, a checkpoint needs {format_bytes(MEMORY_RESERVE)}"
            else:
                why = (f"{format_bytes(available)} left under the budget, too little for a background copy of "
                       f"this kernel's objects ({format_bytes(max(self._process_rss() - big, 0))} + "
                       f"{format_bytes(MEMORY_RESERVE)})")
            return f"checkpoint skipped: memory is tight ({why})"
        capture = Capture(self.kernel_id, self.incarnation, self.session_key, execution_count, groups, modules, str(self.store.dir),
                          self.keep, self.disk_budget, self.disk_reserve)
        previous = self.last_manifest
        writer = self._fork if kind == "fork" else self._thread
        self.last_writer = kind
        if kind == "thread":
            cancelled = self._thread.cancelled
            writer.start(lambda: write_checkpoint(capture, previous, cancelled=cancelled))
        else:
            t0 = time.thread_time()
            writer.start(lambda: write_checkpoint(capture, previous))
            # what this fork costs the kernel itself: the fork (page tables), then one write fault on each
            # page it writes later (no copy once the child is gone, as it is when a cell starts)
            self.kernel_cost += time.thread_time() - t0 + self._process_rss() / PAGE_BYTES * FAULT_SECONDS
            self._fork_count = execution_count
        self.count += 1
        return f"checkpoint started ({kind} writer)"

    def _choose_writer(self, big: int, available: int | None, small: bool = False) -> str | None:
        """Return "fork", "thread" or None (skip): fork only with headroom for its copy-on-write pages.

        ``small`` (little to pickle): a thread, in the idle moment, costs the kernel less than a fork
        (~5 ms of page-table copy for a kernel with pandas loaded, and a write fault on every page it
        writes afterwards) and it gives up within one pickle frame if a cell starts.

        The worst case is the whole process, not only its arrays: pickling in the child touches the
        reference count of every Python object it walks, so every page holding one is copied, while the
        kernel may rewrite its arrays meanwhile. Forking on array bytes alone let a child holding a
        million copied list pages push a nearly full group to the OOM killer. Without that headroom a
        thread writer reads the objects while the kernel is idle and gives up within one pickle frame when a
        cell starts (the next idle moment tries again): it costs the kernel's own CPU, so fork comes first.
        """
        if available is not None and available < MEMORY_RESERVE:
            return None
        if self.writer_choice == "thread" or not hasattr(os, "fork") or (small and self.writer_choice == "auto"):
            return "thread"
        rss = self._process_rss()
        self._fork_exposure = max(big, rss)
        # The child copies the pages of every Python object it pickles (their reference counts change) but
        # only reads array buffers; pages the kernel rewrites meanwhile are covered by stopping the writer
        # when a cell starts without room for them (pre_run_cell).
        child_copies = max(rss - big, 0)
        if available is None or available >= child_copies + MEMORY_RESERVE:
            return "fork"
        return "thread"  # read while the kernel is idle, given up the moment a cell starts

    def _stop(self, reason: str) -> str:
        self.stopped_reason = reason
        return f"checkpoints stopped: {reason}"

    def _absorb(self, result: dict[str, Any] | None, kind: str) -> None:
        if result is None:
            return
        if result.get("status") == "given_up":
            return  # stopped for a cell: said when it was stopped, and the checkpoint is owed again
        if result.get("status") == "cancelled":
            self._dirty = self._dirty if self._dirty is not False else True  # try again at the next idle moment
            self._event("thread checkpoint given up: a cell started while it read the namespace")
            return
        self.last_result = {**result, "writer": kind}
        for note in result.get("notes", []):
            self._event(note)
        if result.get("status") == "disk_full":
            self.stopped_reason = "the disk is nearly full"
        if result.get("status") in ("written", "unchanged"):
            self._given_up_in_a_row = 0
        if result.get("status") == "written":
            import json

            try:
                with open(result["manifest"]) as f:
                    self.last_manifest = json.load(f)
            except (OSError, ValueError):
                self.last_manifest = None

    def wait(self) -> None:
        """Block until the writer in flight, and a checkpoint still owed for the cells before, have finished.

        Called from a cell (``%sentinel checkpoint now``, a test), it takes the owed checkpoint at once:
        the namespace is then what the cells before it left.
        """
        with self._lock:
            self._reap(block=True)
            if self._dirty is not False and self.enabled and not self._after_memory_error:
                count, self._dirty = self._dirty, False
                self._fork_overdue = True
                message = self._checkpoint_locked(None if count is True else count)  # type: ignore[arg-type]
                if not message.startswith("checkpoint started"):
                    self._event(message)
                self._reap(block=True)

    def close(self) -> None:
        """Stop the scheduler thread and wait for a writer in flight (``%unload_ext``)."""
        self._stop_event.set()
        self._wake.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        with self._lock:
            self._reap(block=True)

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
        """Return the ``%sentinel checkpoint status`` text: state, budget, and what was skipped or deferred, and why."""
        with self._lock:
            self._reap()
            state = "writing" if self._busy() else ("a checkpoint is owed (waiting for an idle moment)"
                                                    if self._dirty is not False and self.enabled else "idle")
            lines = [
                f"checkpoints: {'on' if self.enabled else 'off'}" + (f" (stopped: {self.stopped_reason})" if self.stopped_reason else ""),
                f"kernel {self.kernel_id}, session {self.session_key or '(none: newest checkpoint of any kernel is used)'}",
                f"folder: {self.store.dir}",
                f"keep {self.keep} per kernel within {format_bytes(self.disk_budget)} of disk; writer {self.writer_choice}, now {state}",
                f"started {self.count}, skipped {self.skipped}, given up for a cell {self.stopped_writers}, "
                f"cells coalesced {self.coalesced}; "
                f"writers' CPU {self.writer_cpu:.2f} s of a {self.cpu_budget():.2f} s budget; forks' cost to the "
                f"kernel {self.kernel_cost * 1000:.0f} ms of {self.kernel_budget() * 1000:.0f} ms",
                self.describe_last(),
            ]
            if self.events:
                lines.append("recent:")
                lines.extend(f"  {e}" for e in self.events)
        return "\n".join(lines)


SMALL_ITEMS = 20_000  # top-level items of the user's containers: fewer, and a thread pickles them in ~ms
SMALL_BYTES = 4 << 20  # array bytes: fewer, and hashing/writing them in a thread takes ~ms


def _small_work(groups: list[Group]) -> bool:
    """Return True when pickling these variables is little work: few top-level items, little array data.

    Cheap (``len()`` and the array sizes already known): nested containers are not walked, so this can
    say "small" for a dict of big lists; the thread writer then gives up when the next cell starts.
    """
    items = arrays = 0
    for g in groups:
        arrays += g.big_bytes
        if not g.big_bytes:
            try:
                items += len(g.obj) if isinstance(g.obj, (list, tuple, dict, set, frozenset, str, bytes)) else 1
            except Exception:
                items += 1
        if items > SMALL_ITEMS or arrays > SMALL_BYTES:
            return False
    return True


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
