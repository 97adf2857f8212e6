"""Writing a checkpoint off the cell's critical path: in a forked child, or in a background thread.

A forked child sees the namespace exactly as it was when the cell ended (copy-on-write), so the next
cell can run at once and the checkpoint is still consistent; the price is that pages the kernel rewrites
while the child lives are copied (the checkpointer forks only with that much headroom). The child runs
in a process group of its own (ipykernel's shutdown waits for every child in the kernel's group, and an
interrupt of that group is not for it) and dies with the thread that forked it (PR_SET_PDEATHSIG), so it
never outlives the kernel. A thread shares the live objects: it is told to give up (``cancel()``) when a
cell starts, and it counts its own CPU time.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

Job = Callable[[], dict[str, Any]]
CHILD_TIMEOUT_SECONDS = 900
# The forked writer leaves (abandoning that checkpoint) when the headroom under the budget falls below
# this share of it: before the guard's 90% line, and long before the OOM killer would pick it.
CHILD_LEAVE_BELOW = 0.15
CHILD_POLL_SECONDS = 0.01
PR_SET_PDEATHSIG = 1


class ThreadWriter:
    """Runs one job at a time in the thread that claims it, never in a thread of its own.

    The checkpoint scheduler's thread claims it (``run_pending()``), or the caller of ``wait()`` when
    nobody has yet. No thread is started per checkpoint: ``Thread.start()`` can hang for good when memory
    is short (the new thread cannot set itself up and never says it started), and the scheduler would hold
    its lock meanwhile. Threads: ``start``/``cancel`` from any thread; ``_claim`` guards ``_job``.
    """

    kind = "thread"

    def __init__(self) -> None:
        self._job: Job | None = None
        self._result: dict[str, Any] | None = None
        self._claim = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._cancel = threading.Event()
        self._cpu = 0.0
        self.last_cpu = 0.0  # CPU seconds of the job last collected
        self.started_at = 0.0
        self._runner: int | None = None  # the thread running the job: it never waits for itself

    def cancel(self, wait: float = 0.0) -> bool:
        """Return True once no job holds the namespace's objects: ask the running one to give up, drop one not claimed.

        The job asks ``cancelled()`` at every pickle frame and before each chunk of a blob, but a chunk's write
        and fdatasync run to their end (~20-90 ms for 32 MiB here, longer on a slow disk), and until then the
        job holds the object it writes: a cell's ``del`` of it would free nothing, and the next cell could be
        refused memory a stock kernel has. So the starting cell waits up to ``wait`` seconds for it to let go.
        """
        self._cancel.set()
        with self._claim:
            if self._job is not None:  # handed over, not claimed yet: it never runs
                self._job = None
                self._result = {"status": "cancelled", "bytes_written": 0, "seconds": 0.0, "notes": []}
                self._cpu = 0.0
                self._done.set()
        if wait > 0 and self._runner != threading.get_ident():
            return self._done.wait(wait)
        return self._done.is_set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def start(self, job: Job) -> None:
        """Hand ``job`` over; it runs when a thread claims it."""
        with self._claim:
            self._job = job
            self._result = None
            self._cancel.clear()
            self._done.clear()
            self.started_at = time.monotonic()

    def run_pending(self) -> bool:
        """Run the job handed over, in this thread, if nobody has claimed it yet; return True if it ran."""
        with self._claim:
            job, self._job = self._job, None
        if job is None:
            return False
        t0 = time.thread_time()
        self._runner = threading.get_ident()
        result: dict[str, Any]
        try:
            result = job()
        except BaseException as exc:  # the kernel must never see a checkpoint failure as its own
            result = {"status": "failed", "notes": [f"checkpoint failed: {type(exc).__name__}: {exc}"]}
        finally:
            self._cpu = time.thread_time() - t0
            del job  # it holds the objects: gone before anyone waiting in cancel() is told the job let go
            self._runner = None
        self._result = result
        self._done.set()
        return True

    @property
    def busy(self) -> bool:
        return not self._done.is_set()

    def poll(self) -> dict[str, Any] | None:
        """Return the finished job's result once (None while running or when nothing ran)."""
        if not self._done.is_set():
            return None
        result, self._result = self._result, None
        if result is not None:
            self.last_cpu = self._cpu
        return result

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        self.run_pending()  # not claimed yet: run it here
        self._done.wait(timeout)
        return self.poll()


class ForkWriter:
    """Runs one job at a time in a forked child that exits with ``os._exit``; the result comes back in a file."""

    kind = "fork"

    def __init__(self, tmp_root: str | None = None) -> None:
        self.pid: int | None = None
        self._result_path: str | None = None
        self.started_at = 0.0
        self.last_cpu = 0.0  # CPU seconds of the child last reaped (its rusage)
        self._killed = False  # stop() sent SIGKILL; not reaped yet
        self._last_pid = 0
        self.tmp_root = tmp_root  # where the child's half-written blobs would be left if it must leave

    def start(self, job: Job) -> None:
        fd, self._result_path = tempfile.mkstemp(prefix="ks-checkpoint-", suffix=".json")
        os.close(fd)
        self.started_at = time.monotonic()
        parent = os.getpid()
        with warnings.catch_warnings():  # Python 3.12+ warns about fork() with threads: the child execs nothing
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: only pickling, hashing and file writes; never zmq, logging or stdout
            code = 1
            try:
                _die_with_parent(parent)
                try:
                    os.setpgid(0, 0)  # out of the kernel's group: shutdown does not wait for us, interrupts miss us
                except OSError:
                    pass
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt of the kernel's group is not for us
                # a writer stuck for good (a user object's __reduce__ waiting on a lock some other thread of
                # the kernel held at fork time) must not block checkpoints forever: SIGALRM ends it
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(CHILD_TIMEOUT_SECONDS)
                # ipykernel's stdout/stderr talk to threads that do not exist in the child
                import sys

                sys.stdout = sys.stderr = open(os.devnull, "w")
                _volunteer_to_die_first()
                _leave_when_memory_is_tight(self._result_path, self.tmp_root)
                try:
                    os.nice(10)
                except OSError:
                    pass
                result = job()
                with open(self._result_path, "w") as f:
                    json.dump(result, f)
                code = 0
            except BaseException as exc:
                try:
                    with open(self._result_path, "w") as f:
                        json.dump({"status": "failed", "notes": [f"checkpoint failed: {type(exc).__name__}: {exc}"]}, f)
                except BaseException:
                    pass
            finally:
                os._exit(code)
        self.pid = pid

    @property
    def busy(self) -> bool:
        return self._reap(block=False) is None and self.pid is not None

    def _reap(self, block: bool) -> int | None:
        if self.pid is None:
            return None
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # somebody else reaped it: read the file anyway
            pid, status, usage = self.pid, 0, None
        if pid == 0:
            return None
        self._last_pid, self.pid = self.pid, None
        self.last_cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
        return status

    def poll(self) -> dict[str, Any] | None:
        if self.pid is not None and self._reap(block=False) is None:
            return None
        return self._collect()

    def stop(self, wait: float = 0.0) -> bool:
        """Kill the running child (our own, by pid) and wait up to ``wait`` s for it to be gone; True if one ran.

        The pages it copied are charged to the kernel's memory group until it has exited: a cell starting
        meanwhile was refused memory a stock kernel has ("the child process grew to about 216 MiB while
        Cell [2] waited for it", two CPU burners). A child in the middle of an fsync dies only once the disk
        answers, hence the bound. Reaped here, or by ``poll()`` later, which removes its half-written files
        and reports ``{"status": "given_up"}``. Threads: the caller holds the checkpointer's lock.
        """
        pid = self.pid
        if pid is None or self._killed:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._killed = True
        if wait > 0:
            _wait_exit(pid, wait)
            self._reap(block=False)
        return True

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.pid is not None:
            if timeout is None:
                self._reap(block=True)
            else:
                _wait_exit(self.pid, timeout)
                self._reap(block=False)
                if self.pid is not None:
                    return None
        return self._collect()

    def _collect(self) -> dict[str, Any] | None:
        path, self._result_path = self._result_path, None
        if path is None:
            return None
        if self._killed:
            self._killed = False
            _remove_partial(self.tmp_root, self._last_pid)
            try:
                os.unlink(path)
            except OSError:
                pass
            return {"status": "given_up", "notes": []}
        try:
            with open(path) as f:
                text = f.read()
            return json.loads(text) if text else {"status": "failed", "notes": ["checkpoint writer died"]}
        except (OSError, ValueError):
            return {"status": "failed", "notes": ["checkpoint writer died before reporting"]}
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


def _leave_when_memory_is_tight(result_path: str | None, tmp_root: str | None) -> None:
    """Start a thread in the forked writer that abandons the checkpoint before the memory group fills up.

    The child's copied pages are charged to the kernel's group. Were it to stay while the kernel grows,
    the OOM killer would end it (it volunteers) and the group's OOM-kill counter would move; leaving on its
    own costs only this one checkpoint, which the next cell takes again.
    """
    try:
        from ..memory import MemoryReader

        reader = MemoryReader(rlimits=False)
        budget = reader.snapshot().budget_bytes
    except Exception:
        return
    if not budget:
        return
    floor = int(budget * CHILD_LEAVE_BELOW)

    def watch() -> None:
        while True:
            try:
                available = reader.quick().available_bytes
            except Exception:
                available = None
            if available is not None and available < floor:
                _abandon(result_path, tmp_root, available)
            time.sleep(CHILD_POLL_SECONDS)

    threading.Thread(target=watch, name="sentinel-checkpoint-memory", daemon=True).start()


def _abandon(result_path: str | None, tmp_root: str | None, available: int) -> None:
    """Report why, remove this child's half-written blobs, and exit at once."""
    from ..sizes import format_bytes

    try:
        if result_path:
            with open(result_path, "w") as f:
                note = f"checkpoint abandoned: memory is tight ({format_bytes(available)} left under the budget)"
                json.dump({"status": "failed", "notes": [note]}, f)
        _remove_partial(tmp_root, os.getpid())
    except BaseException:
        pass
    os._exit(3)


def _remove_partial(tmp_root: str | None, pid: int) -> None:
    """Remove the half-written blob files of writer ``pid`` under ``tmp_root``."""
    if not tmp_root:
        return
    import glob

    for path in glob.glob(os.path.join(glob.escape(tmp_root), "**", f".*.{pid}.tmp"), recursive=True):
        try:
            os.unlink(path)
        except OSError:
            pass


def _wait_exit(pid: int, timeout: float) -> None:
    """Return once child ``pid`` has exited (not reaped) or ``timeout`` has passed: woken by its pidfd at once.

    A killed writer's exit (its copied pages freed) took 5-35 ms here, 120 ms once under load; polling
    would add its own interval to each.
    """
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3), or already reaped
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return
            except ChildProcessError:
                return
            time.sleep(0.002)
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def _die_with_parent(parent: int) -> None:
    """Ask for SIGKILL when the thread that forked us ends (the kernel's exit), and leave if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(1)


def _volunteer_to_die_first() -> None:
    """Raise our oom_score_adj (allowed unprivileged): if memory runs out, the writer dies, not the kernel."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
