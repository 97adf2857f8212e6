"""The flight recorder: runs inside the kernel and keeps, crash-safe, what an autopsy needs.

``load(ip)`` (called first by the kernel_sentinel extension, guard on or off):
- each ``pre_run_cell`` writes the running cell (execution count, code, start time) to the flight record,
  ``post_run_cell`` marks it finished: one small ``pwrite`` each, no measurable cost per cell;
- a daemon thread every 250 ms while a cell runs writes recent memory samples and the budget, the line the main
  thread is running in the cell, the recursion depth when deep, and the shared file mappings (memmaps) when the
  address space outside the heap changed; an idle kernel whose memory stands still is sampled less often
  (up to every 2 s), and the next cell's start wakes the thread at once. With the guard on, its watchdog takes
  these samples right after its own ticks while the line is far (``_ride``), so the thread wakes only every 2 s
  for the limits and the mappings: a thread's own wake-up in a busy kernel cost more than the sample;
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
from .flight import CODE_LIMIT, WALK_LIMIT, Encoded, FlightWriter, encode, record_paths

SAMPLE_SECONDS = 0.25
IDLE_SAMPLE_SECONDS = 2.0  # the longest pause between samples of an idle kernel whose RSS stands still
STILL_BYTES = 1 << 20  # RSS moved less than this since the last sample: "stands still"
MAPS_EVERY = 4  # ticks: /proc/self/maps is the costliest read (~1.7 ms with numpy and pandas), at most once a second
MAPS_MOVED_BYTES = 1 << 20  # ... and only when the address space outside the heap moved by this much
SNAPSHOT_SECONDS = 2.0  # limits and cgroup details every 2 s; RSS every tick
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
        rec._ride_the_watchdog()
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

    _ridden_at = 0.0  # monotonic time of the watchdog's last sample (``_ride``); 0: it does not sample for us
    _next_due = 0.0  # monotonic time the next sample is due

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
        self._cell_text: str | None = None  # the running cell's record as written at its start (JSON)
        self._line: int | None = None
        self._ec_offset: int | None = None  # IPython 9 counts the cell before pre_run_cell, older ones after
        self._pending: dict[str, Any] | None = None
        self._looked_for_pending = False
        self._pending_looked = threading.Event()  # set once the sampler thread has looked for a previous death
        self._parts_loaded = threading.Event()  # set by the main thread once the guard and checkpoints loaded
        self._orig_shutdown: Any = None
        self._reopen_abort_window: Any = None
        # The last KEEP_SAMPLES samples, each as its JSON text ``[t,rss,available]``: the memory record splices them
        # in (``_memory_text``) instead of encoding forty lists of numbers at every sample (formatting their floats was
        # most of a sample's cost: ~180 us a write in a kernel busy in a cell, in the watchdog's thread).
        self._samples: list[str] = []
        self._reader: Any = None
        self._details: dict[str, Any] = {}
        self._maps_key: int | None = -1
        self._statm: Any = None  # memory.linux.StatmMeter, opened by the sampler thread (off the kernel's way to ready)
        self._wake = threading.Event()  # the next cell's start cuts a long idle pause short
        self._long_pause = False  # the sampler is (about to be) in a pause longer than SAMPLE_SECONDS
        self._cell_prefixes = _cell_prefixes()
        self._state = "running"
        self._forked = False
        self._last_rss: int | None = None
        self._snapshot_due = 0.0
        self._snap_available: int | None = None
        self._snap_rss: int | None = None
        # The guard's watchdog takes the samples in its own wake-ups while it waits long (``_ride``); this thread
        # then wakes only for the full picture every SNAPSHOT_SECONDS, and takes over when the watchdog stops riding.
        self._sample_lock = threading.Lock()  # one sample at a time, whichever thread takes it
        self._tick = 0
        self._pause = SAMPLE_SECONDS
        self._can_ride = False  # the sampler thread has set up (memory reader, meta): the watchdog may sample

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
        # The watchdog's rides begin once the guard has loaded (``parts_loaded``): importing ``guard.watchdog``
        # here loaded the whole guard package (~15-20 ms of CPU, 15-80 ms wall) before the kernel's first reply.

    def _ride_the_watchdog(self) -> None:
        """Have the guard's watchdog take the samples (``_ride``) when the guard is loaded; without it, nothing
        to ride (the sampler thread samples on its own). Asked once the parts have loaded, not at ``start``."""
        watchdog = sys.modules.get(__name__.rsplit(".", 2)[0] + ".guard.watchdog")
        if watchdog is not None:
            try:
                watchdog.add_rider(self._ride)
            except Exception:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        try:
            from ..guard.watchdog import remove_rider

            remove_rider(self._ride)
        except Exception:
            pass
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
        if self._statm is not None:
            self._statm.close()
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
            self._cell_text = None
            self._cell = cell = {
                "execution_count": count,
                "code": raw[:CODE_LIMIT],
                "truncated": len(raw) > CODE_LIMIT,
                "started": time.time(),
                "finished": None,
                "cell_id": getattr(info, "cell_id", None),
            }
            self._cell_text = text = encode(cell)
            self.writer.write("cell", Encoded(text))
            self._next_due = 0.0  # the running cell's first samples are not ~2 s away
            if self._long_pause and not self._ridden_at:  # an idle sampler thread, and no watchdog sampling for it
                self._wake.set()
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
            text = self._cell_text
            if ec is not None and self._ec_offset is None and getattr(info, "store_history", False):
                self._ec_offset = _default_offset() + (ec - cell["execution_count"])
                cell["execution_count"] = ec
                text = None
            cell = {**cell, "finished": time.time(), "line": self._line}
            self._cell = cell
            self._cell_text = None
            if text is not None:
                text = _finished_text(text, cell["finished"], cell["line"], cell["cell_id"])
            self.writer.write("cell", cell if text is None else Encoded(text))
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
        self._can_ride = True
        while not self._stop.is_set():
            now = time.monotonic()
            riding = self._riding(now)
            snapshot_due = self._reader is not None and now >= self._snapshot_due
            if now >= self._next_due or (riding and snapshot_due):
                with self._sample_lock:
                    self._take_sample(now, cheap=False)
            now = time.monotonic()
            if riding:
                # the watchdog samples: wake for the full picture only (and when it stops riding: _ride wakes us)
                self._long_pause = True
                wake_at = self._snapshot_due if self._snapshot_due > now else now + IDLE_SAMPLE_SECONDS
            else:
                self._long_pause = self._next_due - now > SAMPLE_SECONDS
                wake_at = self._next_due
            self._wake.wait(min(max(0.0, wake_at - now), IDLE_SAMPLE_SECONDS))
            self._wake.clear()
            self._long_pause = False

    def _riding(self, now: float) -> bool:
        """Return True while the guard's watchdog takes the samples (it did within the longest pause between them)."""
        return bool(self._ridden_at) and now - self._ridden_at <= IDLE_SAMPLE_SECONDS + SAMPLE_SECONDS

    def _take_sample(self, now: float, cheap: bool) -> None:
        """Take one sample (the caller holds ``_sample_lock``) and set when the next is due."""
        rss = None
        try:
            rss = self._sample(self._tick, cheap=cheap)
        except Exception:
            pass
        self._tick += 1
        self._pause = self._next_pause(self._pause, rss)
        self._next_due = now + self._pause

    def _ride(self, now: float, far: bool) -> None:
        """Take the sample that is due in the guard's watchdog thread, right after its tick (``watchdog.add_rider``).

        The watchdog wakes up to ten times a second anyway, and this thread's own wake-ups cost more than the
        sample (a thread taking the GIL from a main thread that runs Python). Only while the watchdog waits long
        (``far``: the line is far); nearer the line this thread samples on its own again, woken here.
        """
        if now < self._next_due or not self._can_ride or self._stop.is_set():
            return
        if not far:
            if self._ridden_at:
                self._ridden_at = 0.0
                self._wake.set()
            return
        if not self._sample_lock.acquire(blocking=False):
            return
        try:
            self._ridden_at = now
            self._take_sample(now, cheap=True)
        finally:
            self._sample_lock.release()

    def _next_pause(self, pause: float, rss: int | None) -> float:
        """Return how long to wait before the next sample: SAMPLE_SECONDS while a cell runs or memory moves;
        doubled, up to IDLE_SAMPLE_SECONDS, while the kernel is idle and its RSS stands still.

        ``_long_pause`` is set before the cell is looked at: a cell that starts after the look wakes us, one
        that started before it is seen here.
        """
        self._long_pause = True
        cell = self._cell
        idle = cell is None or cell.get("finished") is not None
        still = rss is not None and self._last_rss is not None and abs(rss - self._last_rss) < STILL_BYTES
        self._last_rss = rss
        if idle and still:
            return min(pause * 2, IDLE_SAMPLE_SECONDS)
        self._long_pause = False
        return SAMPLE_SECONDS

    def _sample(self, tick: int, cheap: bool = False) -> int | None:
        """Write one memory sample (and the shared file mappings when they may have changed); return the RSS.

        ``cheap`` (the watchdog's thread): leave the full picture and the mappings to the sampler thread's own
        wake-ups (every SNAPSHOT_SECONDS while the watchdog samples), which may read files that give the GIL up.
        """
        now = time.time()
        depth, line = self._main_stack()
        if line is not None:
            self._line = line
        data: dict[str, Any] = {"t": now, "depth": depth if depth >= DEEP else None, "line": self._line}
        if self._cell is not None:
            data["execution_count"] = self._cell.get("execution_count")
        statm = self._read_statm()  # one pread keeping the GIL: RSS, and the size outside the heap for the maps
        rss = statm[1] if statm is not None else None
        if self._reader is not None:
            mono = time.monotonic()
            if (mono >= self._snapshot_due and not cheap) or rss is None:
                # the full picture (limits, cgroup, headroom) now and then: a dozen reads that give up the GIL
                self._snapshot_due = mono + SNAPSHOT_SECONDS
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
                self._snap_available = snap.available_bytes
                self._snap_rss = snap.process.rss_bytes if rss is None else rss
                if rss is None:
                    rss = snap.process.rss_bytes
            available = self._snap_available
            if available is not None and rss is not None and self._snap_rss is not None:
                # between full readings: the headroom then, less what the kernel's RSS grew since
                available = max(0, available - (rss - self._snap_rss))
            samples = self._samples
            samples.append(encode([round(now, 3), rss, available]))
            del samples[:-KEEP_SAMPLES]
            data.update(self._details)
            data["rss_bytes"] = rss
            data["available_bytes"] = available
            head = encode(data)
            if not self.writer.write("memory", Encoded(_memory_text(head, samples))):
                self.writer.write("memory", Encoded(_memory_text(head, samples[-8:])))
        else:
            self.writer.write("memory", data)
        if not cheap and (tick % MAPS_EVERY == 0 or self._ridden_at):
            key = statm[0] - statm[2] if statm is not None else _vm_size()
            if _maps_may_have_changed(self._maps_key, key):
                self._maps_key = key
                maps = shared_file_maps()
                if maps is not None:
                    self.writer.write("maps", {"t": now, "files": maps[:40]})
        return rss

    def _read_statm(self) -> tuple[int, int, int] | None:
        """Return (VmSize, RSS, statm's data) in bytes (``StatmMeter.sizes``), or None where it cannot be read."""
        try:
            if self._statm is None:
                from ..memory.linux import StatmMeter

                self._statm = StatmMeter()
            return self._statm.sizes()
        except Exception:
            return None

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


_UNFINISHED = ',"finished":null,"cell_id":'


def _memory_text(head: str, samples: list[str]) -> str:
    """Return the memory record's JSON text: ``head`` (the encoded record, without its samples) with
    ``"samples":[...]`` as its last key, the samples' texts spliced in: the very text ``encode`` gives for the
    record with its samples as lists, without formatting them again at every sample."""
    return f'{head[:-1]},"samples":[{",".join(samples)}]}}'


def _finished_text(started: str, finished: float, line: int | None, cell_id: Any) -> str | None:
    """Return the JSON of a cell's record once it finished, from the JSON written at its start (None: encode it).

    Exactly ``encode`` of the finished record (``{**cell, "finished": ..., "line": ...}``: "finished" keeps its
    place before "cell_id", "line" comes last), but the code, up to 48 KiB, is not encoded a second time. The
    start's text ends with ``,"finished":null,"cell_id":<its cell id>}``: that end is cut where it begins, found
    by length (a cell id, which a frontend may send as any JSON, could hold those words itself).
    """
    cid = "null" if cell_id is None else encode(cell_id)
    tail = f"{_UNFINISHED}{cid}}}"
    if not started.endswith(tail):
        return None
    # what encode gives for a finite float, an int and None, without a call to the encoder for each
    end = repr(finished) if type(finished) is float and finished - finished == 0 else encode(finished)
    at_line = "null" if line is None else repr(line) if type(line) is int else encode(line)
    return f'{started[: len(started) - len(tail)]},"finished":{end},"cell_id":{cid},"line":{at_line}}}'


def _maps_may_have_changed(before: int | None, now: int | None) -> bool:
    """Return True when the address space outside the heap (statm's size less its data) moved by a MiB or more.

    Only a mapping there can be a memmap: the heap's growth (statm's data) is not one. Threads' malloc arenas
    move it by a few pages as they grow (their reserve turns writable, so data grows and size stays): below a
    MiB the mappings are not read again (~1.7 ms in a kernel with numpy and pandas loaded); the change is
    counted from the last reading, so small steps add up.
    """
    if before is None or now is None:
        return True
    return abs(now - before) >= MAPS_MOVED_BYTES


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
