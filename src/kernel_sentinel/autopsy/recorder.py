"""The flight recorder: runs inside the kernel and keeps, crash-safe, what an autopsy needs.

``load(ip)`` (called first by the kernel_sentinel extension, guard on or off):
- each ``pre_run_cell`` writes the running cell (execution count, code, start time) to the flight record,
  ``post_run_cell`` marks it finished: one small ``pwrite`` each, no measurable cost per cell;
- a daemon thread every 250 ms writes recent memory samples and the budget, the line the main thread is
  running in the cell, the recursion depth when deep, and every second the shared file mappings (memmaps);
- ``faulthandler`` writes tracebacks of all threads for fatal signals into a file of our own (ipykernel
  captures fd 2, so its default stderr output would be lost);
- a shutdown or restart requested by the frontend is marked before the kernel acts on it, so that it is
  never taken for a death;
- the explanation of this kernel's previous death (same kernel id) is shown once, in the output of the next
  cell that runs;
- a request the frontend sends once it has an error reply is never aborted for that error (ipykernel 7's
  race, see ``abort_window``).
Nothing here may break the kernel: every failure turns the recorder (or one of its parts) off quietly.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import threading
import time
from typing import Any

from ..identity import home_dir, kernel_identity
from .flight import CODE_LIMIT, WALK_LIMIT, FlightWriter, record_paths

SAMPLE_SECONDS = 0.25
MAPS_EVERY = 4  # ticks: /proc/self/maps is the costliest read, once a second is enough
SNAPSHOT_EVERY = 8  # ticks: limits and cgroup details every 2 s; RSS and headroom every tick
KEEP_SAMPLES = 40  # ten seconds of history
DEEP = 200  # frames: recursion deeper than this is reported
PENDING_WAIT_SECONDS = 2.0  # the first cell waits at most this for the look for a previous death
READY_FD_ENV = "KERNEL_SENTINEL_READY_FD"  # set by the supervisor: one byte there says "ready, do your chores"
PARTS_WAIT_SECONDS = 5.0  # the sampler's first look-ups wait this long at most for the other parts to load

_recorder: Recorder | None = None


def load(ip: Any) -> None:
    """Start the flight recorder in this IPython shell (idempotent; never raises)."""
    global _recorder
    if _recorder is not None:
        return
    try:
        rec = Recorder(ip)
        rec.start()
        _recorder = rec
    except Exception as exc:  # the kernel matters more than its autopsy
        print(f"kernel-sentinel: flight recorder off: {exc}", file=sys.__stderr__)


def shutdown_requested() -> bool:
    """Return True once the frontend asked this kernel to shut down or restart (nothing more should start)."""
    rec = _recorder
    return rec is not None and rec._state == "shutdown_requested"


def parts_loaded() -> None:
    """Let the sampler thread begin its slower look-ups: the guard and checkpoints have loaded (or never will).

    While a kernel starts, the main thread answers the frontend's first request and then loads the rest of
    the sentinel; the sampler's first look-ups (the memory group, the store) would only compete with both.
    """
    rec = _recorder
    if rec is not None:
        rec._parts_loaded.set()
    _tell_supervisor_ready()


def _tell_supervisor_ready() -> None:
    """Write the supervisor its "ready" byte and close the pipe, so that no process this kernel starts holds it."""
    value = os.environ.pop(READY_FD_ENV, "")
    if not value.isdigit():
        return
    fd = int(value)
    try:
        os.write(fd, b"R")
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def unload(ip: Any) -> None:
    """Stop the flight recorder and mark the record as a clean stop (idempotent)."""
    global _recorder
    rec, _recorder = _recorder, None
    if rec is not None:
        rec.stop()


class Recorder:
    """The in-kernel half of the autopsy: one per kernel process."""

    def __init__(self, ip: Any) -> None:
        self.ip = ip
        self.home = home_dir()
        self.kernel_id, self.supervisor_pid, self.connection_file = kernel_identity()
        self.pid = os.getpid()
        self.record_path, self.fault_path = record_paths(self.home, self.kernel_id, self.pid)
        self.writer = FlightWriter(self.record_path)
        self._fault_file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_ident = threading.get_ident()
        self._cell: dict[str, Any] | None = None
        self._line: int | None = None
        self._ec_offset: int | None = None  # IPython 9 counts the cell before pre_run_cell, older ones after
        self._pending: dict[str, Any] | None = None
        self._looked_for_pending = False
        self._pending_looked = threading.Event()  # set once the sampler thread has looked for a previous death
        self._parts_loaded = threading.Event()  # set by the main thread once the guard and checkpoints loaded
        self._orig_shutdown: Any = None
        self._reopen_abort_window: Any = None
        self._samples: list[list[Any]] = []
        self._reader: Any = None
        self._details: dict[str, Any] = {}
        self._maps_vm_size: int | None = -1
        self._cell_prefixes = _cell_prefixes()
        self._state = "running"
        self._forked = False

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Write who this kernel is, hook the cells and the shutdown, start the sampler; cheap (kernel start waits).

        What is slower to find (the memory group, a previous death to explain) the sampler thread looks up
        first thing, while the kernel answers its first requests.
        """
        self.writer.write("meta", self._meta(with_cgroup=False))
        self.writer.write("state", {"state": "running", "t": time.time()})
        self._fault_file = open(self.fault_path, "w")  # noqa: SIM115 - must stay open for faulthandler
        faulthandler.enable(file=self._fault_file, all_threads=True)
        events = self.ip.events
        events.register("pre_run_cell", self._pre_run_cell)
        events.register("post_run_cell", self._post_run_cell)
        self._hook_shutdown()
        try:
            from ..abort_window import close_abort_window

            self._reopen_abort_window = close_abort_window(getattr(self.ip, "kernel", None))
        except Exception:
            pass
        atexit.register(self._at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)
        self._thread = threading.Thread(target=self._sample_loop, name="kernel-sentinel-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._parts_loaded.set()  # a sampler still waiting for them leaves at once
        try:
            self.ip.events.unregister("pre_run_cell", self._pre_run_cell)
            self.ip.events.unregister("post_run_cell", self._post_run_cell)
        except Exception:
            pass
        kernel = getattr(self.ip, "kernel", None)
        if kernel is not None and self._orig_shutdown is not None:
            try:
                del kernel.do_shutdown  # the instance attribute we added; the class method shows again
            except AttributeError:
                pass
        if self._reopen_abort_window is not None:
            self._reopen_abort_window()
        try:
            atexit.unregister(self._at_exit)
        except Exception:
            pass
        self.writer.write("state", {"state": "unloaded", "t": time.time()})
        try:
            faulthandler.disable()
            if self._fault_file is not None:
                self._fault_file.close()
        except Exception:
            pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.writer.close()

    def _meta(self, with_cgroup: bool = True) -> dict[str, Any]:
        cgroup_path = cgroup_version = None
        if with_cgroup:
            try:
                from ..memory import locate_cgroup

                location, _ = locate_cgroup()
                cgroup_path = location.path if location else None
                cgroup_version = location.version if location else None
            except Exception:
                pass
        return {
            "kernel_id": self.kernel_id,
            "pid": self.pid,
            "ppid": os.getppid(),
            "supervisor_pid": self.supervisor_pid,
            "connection_file": self.connection_file,
            "started": time.time(),
            "cwd": os.getcwd(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "cgroup_path": cgroup_path,
            "cgroup_version": cgroup_version,
            "guard": os.environ.get("KERNEL_SENTINEL_GUARD", "1") != "0",
            "fault_file": str(self.fault_path),
        }

    def _hook_shutdown(self) -> None:
        """Mark a frontend's shutdown/restart request before the kernel acts on it."""
        kernel = getattr(self.ip, "kernel", None)
        if kernel is None or not hasattr(kernel, "do_shutdown"):
            return
        original = kernel.do_shutdown
        writer = self.writer

        def do_shutdown(restart: bool, *args: Any, **kwargs: Any) -> Any:
            self._state = "shutdown_requested"
            writer.write("state", {"state": "shutdown_requested", "restart": bool(restart), "t": time.time()})
            return original(restart, *args, **kwargs)

        self._orig_shutdown = original
        kernel.do_shutdown = do_shutdown

    def _after_fork_in_child(self) -> None:
        """A process forked from the kernel (multiprocessing, os.fork) is not the kernel: stay out of its way."""
        self._forked = True
        try:
            faulthandler.disable()  # its crash must not land in the kernel's file and be taken for the kernel's
        except Exception:
            pass

    def _at_exit(self) -> None:
        if self._forked or os.getpid() != self.pid:
            return
        self.writer.write("state", {"state": "exiting", "t": time.time(), "previous": self._state})

    # -- cells -------------------------------------------------------------------------------------

    def _pre_run_cell(self, info: Any) -> None:
        try:
            self._main_ident = threading.get_ident()
            raw = getattr(info, "raw_cell", "") or ""
            count = int(getattr(self.ip, "execution_count", 0) or 0)
            if getattr(info, "store_history", False):
                offset = self._ec_offset if self._ec_offset is not None else _default_offset()
                count += offset
            self._line = None
            self._cell = {
                "execution_count": count,
                "code": raw[:CODE_LIMIT],
                "truncated": len(raw) > CODE_LIMIT,
                "started": time.time(),
                "finished": None,
                "cell_id": getattr(info, "cell_id", None),
            }
            self.writer.write("cell", self._cell)
            if not self._looked_for_pending:
                # the first cell came before the sampler thread had looked: the explanation of the previous
                # death belongs in this cell's output, so wait for the look (a store query), this once
                self._pending_looked.wait(PENDING_WAIT_SECONDS)
            if self._pending is not None:  # found by the sampler thread, shown here: in the cell's output
                self._show_pending()
        except Exception:
            pass

    def _post_run_cell(self, result: Any) -> None:
        try:
            cell = self._cell
            if cell is None:
                return
            ec = getattr(result, "execution_count", None)
            info = getattr(result, "info", None)
            if ec is not None and self._ec_offset is None and getattr(info, "store_history", False):
                self._ec_offset = _default_offset() + (ec - cell["execution_count"])
                cell["execution_count"] = ec
            cell = {**cell, "finished": time.time(), "line": self._line}
            self._cell = cell
            self.writer.write("cell", cell)
        except Exception:
            pass

    # -- the previous death, shown once ------------------------------------------------------------

    def _find_pending(self) -> None:
        """Look for this kernel's previous death not yet shown (the sampler thread does, once, at start)."""
        try:
            self._find_pending_now()
        finally:
            self._looked_for_pending = True
            self._pending_looked.set()

    def _find_pending_now(self) -> None:
        try:
            from ..store import Store, StoreError

            if self.supervisor_pid is None:  # no supervisor swept for us: find an unseen previous death here
                from .sweep import sweep

                sweep(self.home, self.kernel_id)
            try:
                store = Store(self.home / "store.db", create=False)
            except StoreError:
                return
            with store:
                row = store.unshown_death(self.kernel_id)
            if row is not None and row["pid"] != self.pid:
                self._pending = row
        except Exception:
            pass

    def _show_pending(self) -> None:
        row, self._pending = self._pending, None
        if row is None:
            return
        try:
            from IPython.display import display

            from ..report.death_html import render as render_html
            from ..report.death_text import render as render_text

            report = row["report"]
            display({"text/plain": render_text(report), "text/html": render_html(report)}, raw=True)
            from ..store import Store

            with Store(self.home / "store.db", create=False) as store:
                store.mark_shown(row["id"])
        except Exception:
            pass

    # -- the sampler thread ------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        tick = 0
        self._parts_loaded.wait(PARTS_WAIT_SECONDS)  # off the kernel's start; the first cell sets it at the latest
        if self._stop.is_set():
            return
        try:  # first what start() left for later: the memory group in the meta, a previous death to show
            self.writer.write("meta", self._meta())
        except Exception:
            pass
        self._find_pending()
        try:
            from ..memory import MemoryReader

            self._reader = MemoryReader(rlimits=not _guard_on())
        except Exception:
            self._reader = None
        while not self._stop.is_set():
            try:
                self._sample(tick)
            except Exception:
                pass
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)

    def _sample(self, tick: int) -> None:
        now = time.time()
        depth, line = self._main_stack()
        if line is not None:
            self._line = line
        data: dict[str, Any] = {"t": now, "depth": depth if depth >= DEEP else None, "line": self._line}
        if self._cell is not None:
            data["execution_count"] = self._cell.get("execution_count")
        if self._reader is not None:
            if tick % SNAPSHOT_EVERY == 0:  # the full picture (limits, cgroup) now and then; cheap reads between
                snap = self._reader.snapshot()
                cg = snap.cgroup
                self._details = {
                    "budget_bytes": snap.budget_bytes,
                    "source": snap.source,
                    "peak_rss_bytes": snap.process.peak_rss_bytes,
                    "cgroup": None
                    if cg is None
                    else {
                        "path": cg.path,
                        "directory": cg.directory,
                        "version": cg.version,
                        "limit_bytes": cg.limit_bytes,
                        "usage_bytes": cg.usage_bytes,
                        "peak_bytes": cg.peak_bytes,
                        "oom_kills": cg.oom_kills,
                    },
                }
            quick = self._reader.quick()
            self._samples.append([round(now, 3), quick.rss_bytes, quick.available_bytes])
            del self._samples[:-KEEP_SAMPLES]
            data.update(self._details)
            data.update(
                {"rss_bytes": quick.rss_bytes, "available_bytes": quick.available_bytes, "samples": self._samples}
            )
        if not self.writer.write("memory", data):
            data["samples"] = self._samples[-8:]
            self.writer.write("memory", data)
        if tick % MAPS_EVERY == 0:
            size = _vm_size()
            if size != self._maps_vm_size:  # no new mapping can have appeared while the address space stood still
                self._maps_vm_size = size
                maps = shared_file_maps()
                if maps is not None:
                    self.writer.write("maps", {"t": now, "files": maps[:40]})

    def _main_stack(self) -> tuple[int, int | None]:
        """Return (frames on the main thread's stack, capped; the line it runs in the current cell).

        The cell's line is that of the outermost frame compiled from a cell (ipykernel names them
        ``<tmp>/ipykernel_<pid>/<hash>.py``, IPython ``<ipython-input-N-...>``): functions from earlier cells
        are called from it, so they are further in.
        """
        frame = sys._current_frames().get(self._main_ident)
        depth = 0
        line = None
        inner: list[int] = []  # the two innermost lines in cell code
        prefixes = self._cell_prefixes
        while frame is not None and depth < WALK_LIMIT:
            if frame.f_code.co_filename.startswith(prefixes):
                line = frame.f_lineno
                if len(inner) < 2:
                    inner.append(line)
            depth += 1
            frame = frame.f_back
        # A frame just entered reports its ``def`` line; its caller's line is the recursive call itself.
        innermost = inner[-1] if inner else None
        if depth >= WALK_LIMIT:
            # The cell's own frame is below what we walked: a runaway recursion. Its innermost line in cell
            # code (the recursive call) is what the user needs to see, unless we already knew a line.
            line = self._line if self._line is not None else innermost
        return depth, line


def shared_file_maps(path: str = "/proc/self/maps") -> list[dict[str, Any]] | None:
    """Return the writable shared file mappings of this process (memmaps), with their sizes; None off Linux."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    seen: dict[str, int] = {}
    for line in text.split("\n"):
        sp = line.find(" ")
        if line[sp + 4 : sp + 5] != "s" or line[sp + 2 : sp + 3] != "w":  # perms "rw-s": shared and writable
            continue
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/") or parts[5].startswith("/dev/"):
            continue
        name = parts[5].removesuffix(" (deleted)")
        start, _, end = parts[0].partition("-")
        try:
            seen[name] = seen.get(name, 0) + int(end, 16) - int(start, 16)
        except ValueError:
            continue
    return [{"path": p, "mapped_bytes": n} for p, n in seen.items()]


def _vm_size() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split(None, 1)[0])
    except (OSError, ValueError, IndexError):
        return None


def _guard_on() -> bool:
    return os.environ.get("KERNEL_SENTINEL_GUARD", "1") != "0"


def _default_offset() -> int:
    try:
        import IPython

        return -1 if IPython.version_info[0] >= 9 else 0
    except Exception:
        return 0


def _cell_prefixes() -> tuple[str, ...]:
    """Return how the file names of code compiled from cells start in this kernel."""
    prefixes = ["<ipython-input-"]
    try:
        from ipykernel.compiler import get_tmp_directory

        prefixes.append(get_tmp_directory() + os.sep)
    except Exception:
        pass
    return tuple(prefixes)
