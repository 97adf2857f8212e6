"""The supervisor: the process a sentinel kernelspec starts, parent of the real ipykernel, witness of its end.

``python -m kernel_sentinel.launch -f CONNECTION_FILE`` runs ``supervise()``: it forks the ipykernel child
(same command line as a stock sentinel kernel), waits for it with ``os.wait4`` (exit status and peak RSS),
then gathers evidence (flight record, faulthandler file, the cgroup's OOM-kill counter before/after, the
kernel log for that pid and memcg, the filesystems of mapped files), classifies, stores the death, and
exits exactly as the child did (same code, or the same signal re-raised), so jupyter_client's restarter
behaves as with a stock kernel.

Signals: jupyter_client interrupts with ``killpg(SIGINT)``; the child is in our process group and gets it
directly, so the supervisor only notes it and never dies of it. SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 sent to
the supervisor are forwarded to the child. The child has ``PR_SET_PDEATHSIG(SIGKILL)``: a SIGKILLed
supervisor takes it along, nothing is ever orphaned; a small forked witness in the same process group
records that death (a SIGKILL of the whole group is jupyter_client's own forced shutdown: not a death).
"""

from __future__ import annotations

import os
import resource
import select
import sys
import time

try:  # the C module under ``signal``: its enums cost ~5 ms of imports (enum, functools) before the kernel's fork
    import _signal as signal
except ImportError:  # not CPython
    import signal  # type: ignore[no-redef]
from collections.abc import Sequence
TYPE_CHECKING = False  # typing costs ~10 ms to import: not on the launcher's way to forking the kernel
if TYPE_CHECKING:
    from typing import Any

# Only what the fork needs is imported up here: every module imported before the kernel is forked delays
# every start and restart. The rest (memory, flight, gather, store...) is imported after the fork.
from ..identity import connection_file_from_argv, home_dir, kernel_id_from_connection_file

PR_SET_PDEATHSIG = 1
GROUP_LIMIT_ENV = "KERNEL_SENTINEL_GROUP_LIMIT"  # kernel_group.ENV_LIMIT, not imported before the fork
READY_FD_ENV = "KERNEL_SENTINEL_READY_FD"  # recorder.READY_FD_ENV: the kernel writes one byte there once it is ready
EXEC_WAIT_SECONDS = 1.0  # the supervisor waits at most this long for its child to exec the kernel
READY_WAIT_SECONDS = 10.0  # the supervisor's own chores wait at most this long for the kernel to be ready
SWEEP_NICE = 10  # the sweep of earlier kernels' leftovers runs this much nicer than the kernel (~10% of a busy core)
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
HANDLED = (signal.SIGINT, *FORWARDED)
NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP", signal.SIGQUIT: "SIGQUIT",
         signal.SIGUSR1: "SIGUSR1", signal.SIGUSR2: "SIGUSR2"}  # what ``signal.Signals(n).name`` says, for HANDLED


def _preload() -> None:
    """Import what leaving after a shutdown needs (the flight record, the store), while the kernel runs: the
    frontend waits for the supervisor to leave. The autopsy (evidence, classify, explain: 1.5 MiB of the
    supervisor's memory in the kernel's group, ~22 ms of CPU) is imported at a death, when the kernel's memory is
    free again: its record takes that much longer."""
    from .. import store  # noqa: F401
    from . import gather  # noqa: F401


def _running(pid: int) -> bool:
    """Return True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _set_pdeathsig() -> None:
    """Have the kernel SIGKILLed when the supervisor dies (the child's side, between fork and exec).

    Every millisecond here delays every start and restart: ``_ctypes`` alone (~0.9 ms) instead of ``ctypes``
    (~2.4 ms of imports, then a ``CDLL``: ~4 ms in all, timed between the fork and the exec)."""
    try:
        import _ctypes

        prctl = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")
        _ctypes.call_function(prctl, (PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0))
    except Exception:  # not CPython's _ctypes, or it changed: the public way
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:
            pass


class Supervisor:
    """Runs one kernel process to its end and records how it ended."""

    def __init__(self, command: list[str], connection_file: str | None) -> None:
        self.command = command
        self.connection_file = os.path.abspath(connection_file) if connection_file else None
        self.kernel_id = kernel_id_from_connection_file(connection_file) or f"pid-{os.getpid()}"
        self._home: Any = None
        self.child: int | None = None
        self.pid = os.getpid()
        self.signals: list[dict[str, Any]] = []
        self._cgroup: tuple[str, int, str] | None = None  # (directory, version, path)
        self._kmsg: Any = None
        self._witness_pid = 0
        self._limit: Any = None  # the kernel's own memory group (kernel_group.KernelLimit), when asked for
        self._store: Any = None  # the store, open from _register on (main thread only; the witness never uses it)
        self._ready = False  # the kernel said it was ready (its extension loaded)
        self._witness_fd: int | None = None  # the pipe that tells the witness "recorded" (D) or "replaced" (R)
        self._note_file: str | None = None  # where the witness's pid is left for sweeps (``_note_witness``)

    @property
    def home(self) -> Any:
        """The store's folder (jupyter_core's data dir unless KERNEL_SENTINEL_HOME): looked up after the fork."""
        if self._home is None:
            self._home = home_dir()
        return self._home

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Start the kernel, wait for it, record its death, and exit as it did. Never returns.

        The kernel is forked first, with nothing imported that the fork does not need. The memory group's
        OOM-kill counter is read while it starts; the rest (the store, sweeping what earlier kernels left,
        preloading the autopsy) waits until the kernel writes "ready" into a pipe (its recorder does, once
        the sentinel's parts have loaded), so that none of it takes CPU from the start a frontend waits
        for. Only the kernel's own memory group, when the kernelspec asks for one, comes before: the child
        enters it before exec.
        """
        own_group = bool((os.environ.get(GROUP_LIMIT_ENV) or "").strip())
        if own_group:
            self._quietly(self._make_group)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        env = {
            **os.environ,
            "KERNEL_SENTINEL_KERNEL_ID": self.kernel_id,
            "KERNEL_SENTINEL_SUPERVISOR": str(os.getpid()),
            "KERNEL_SENTINEL_CONNECTION_FILE": self.connection_file or "",
            **(self._limit.env if self._limit else {}),
        }
        command = self._limit.command(self.command) if self._limit else self.command
        ready_r, ready_w = _ready_pipe()
        if ready_w is not None:
            env[READY_FD_ENV] = str(ready_w)
        parent = os.getpid()
        exec_r, exec_w = _ready_pipe()  # close-on-exec: the child's exec (or its exit) closes the write end
        pid = os.fork()
        if pid == 0:  # the child: become the kernel
            try:
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                _set_pdeathsig()
                if os.getppid() != parent:  # the supervisor died before prctl took effect
                    os._exit(1)
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                if ready_w is not None:
                    os.set_inheritable(ready_w, True)
                if self._limit:
                    self._limit.enter(env)
                os.execvpe(command[0], command, env)
            finally:
                os._exit(127)
        self.child = pid
        # Signals are taken again at once: an interrupt of the group during the kernel's start-up is noted with what
        # the kernel did with it while the kernel still lives (``_interrupted_while_starting``), not once it is dead.
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if ready_w is not None:
            os.close(ready_w)  # now only the kernel holds it: its exit reads as "ready" (EOF) too
        _wait_exec(exec_r, exec_w)
        # While the kernel starts. The OOM-kill counter is read before the kernel can have allocated much:
        # its interpreter is still starting (a kill before this read would be seen in the kernel log).
        # ``memory.cgroup`` imports nothing heavy: the whole ``memory`` package cost ~45 ms of CPU here.
        from ..memory.cgroup import oom_kill_counter

        self._quietly(self._find_cgroup)
        oom_before = oom_kill_counter(*self._cgroup[:2]) if self._cgroup else None
        from .kmsg import KmsgCursor, boot_usec_of

        child_start = boot_usec_of(pid)
        self._kmsg = KmsgCursor()
        witness = self._start_witness(pid, oom_before, child_start, old_mask)
        # The supervisor's own chores wait until the kernel is ready: on a shared or 2-core machine they
        # would only take CPU from the kernel's start, which is what a frontend waits for.
        self._ready = _wait_ready(ready_r)
        if witness is not None:  # first of the chores: the home folder's lookup imports jupyter_core (~20 ms)
            self._quietly(lambda: self._note_witness(pid, self._witness_pid))
        self._quietly(_preload)
        self._quietly(self._register)
        self._sweep_apart(own_group, old_mask, witness)
        witness = self._renew_witness(witness, pid, oom_before, child_start, old_mask)
        self._witness_fd = witness
        while True:
            try:
                ended, status, usage = os.wait4(-1, 0)
            except ChildProcessError:  # cannot happen while our own child runs; be safe rather than spin
                status, usage = 0, None
                break
            if ended == pid:
                break
            # the sweeper (or a witness gone on its own) ended: reaped, the kernel still runs
        died_at = time.time()
        code = os.waitstatus_to_exitcode(status)
        try:
            self._record(pid, code, usage, died_at, oom_before, child_start)
        except Exception as exc:  # the exit status must be mirrored whatever happened above
            print(f"kernel-sentinel: could not record the kernel's end: {exc}", file=sys.stderr)
        finally:
            if witness is not None:
                self._release_witness()
                try:
                    os.waitpid(self._witness_pid, 0)  # reaped here, not left to init
                except (OSError, ChildProcessError):
                    pass
            if self._limit:
                self._quietly(lambda: self._limit.finish(self.home))
        self._mirror(code)

    def _on_signal(self, signum: int, frame: Any) -> None:
        noted: dict[str, Any] = {"signal": NAMES.get(signum, str(signum)), "t": time.time()}
        if signum == signal.SIGINT and self.child and not self._ready:
            # The group's interrupt reached the starting kernel too: what the kernel did with it tells whether its
            # exit status 1 before ready is the interrupt's doing (``_interrupted_while_starting``): ignored, it had
            # no effect. Read now, as near the signal as can be.
            noted["kernel_sigint"] = _sigint_disposition(self.child)
        self.signals.append(noted)
        if signum in FORWARDED and self.child:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    # -- the witness -------------------------------------------------------------------------------

    def _start_witness(
        self, child: int, oom_before: int | None, child_start: int | None, mask: Any, replaces: int | None = None
    ) -> int | None:
        """Fork a tiny witness in our process group; return the pipe end that tells it "all is recorded".

        The caller leaves its pid beside the flight record (``_note_witness``) for sweeps: the first witness's
        once the kernel is ready (there is no flight record to sweep before: the kernel's recorder makes it).

        jupyter_client's forced shutdown/restart SIGKILLs the whole process group: witness, supervisor and
        kernel die together, and nothing is recorded (it was asked for). A SIGKILL sent to the supervisor's
        pid alone leaves the witness alive: it sees the pipe close without the "recorded" byte, waits for the
        kernel to follow (PDEATHSIG), and records the death itself.
        """
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # no handler of ours may run in the child
        try:
            r, w = os.pipe()  # not inherited by the kernel: Python's fds are close-on-exec
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            if replaces is None:  # else the first witness stays
                print(f"kernel-sentinel: no witness ({exc}); a SIGKILLed supervisor will go unrecorded", file=sys.stderr)
            return None
        if pid == 0:
            try:
                os.close(w)
                if replaces is not None:
                    os.close(replaces)  # held open here, it would keep the first witness from ever seeing EOF
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_IGN)  # interrupts are for the kernel
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                seen = b""
                while True:
                    chunk = os.read(r, 64)
                    if not chunk:
                        break
                    seen += chunk
                    if b"R" in seen:
                        break
                if b"D" not in seen and b"R" not in seen:
                    self._witness_record(child, oom_before, child_start)
                    if self._limit:  # the supervisor was SIGKILLed: the kernel's group goes with it
                        self._limit.finish(self.home, wait=5.0)  # once init has reaped the orphaned kernel
            except BaseException:
                pass
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(r)
        self._witness_pid = pid
        return w

    def _renew_witness(
        self, old: int | None, child: int, oom_before: int | None, child_start: int | None, mask: Any
    ) -> int | None:
        """Return the pipe end of a witness forked now that the supervisor only waits; the first one leaves.

        A forked witness shares the supervisor's pages until either writes one. The first is forked while the
        kernel starts, so that a SIGKILLed supervisor is recorded from then on; the supervisor's chores after
        it (the autopsy's imports, the store, the sweep) wrote most of its pages, each then copied, and that
        witness came to hold ~4.4 MiB of its own in the kernel's memory group; one forked now, ~1.5 MiB.
        The new one is forked first (were the fork refused, the first stays): a SIGKILL in the microseconds
        between the two steps would leave both to record the death.
        """
        first_pid = self._witness_pid
        if old is None or not first_pid:
            return old
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # no handler may run in the child
        try:
            new = self._start_witness(child, oom_before, child_start, mask, replaces=old)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if new is None:
            return old
        self._quietly(lambda: self._note_witness(child, self._witness_pid))
        try:
            os.write(old, b"R")  # replaced: leave without recording
            os.close(old)
            os.waitpid(first_pid, 0)  # it leaves at once, and is reaped here
        except (OSError, ChildProcessError):
            pass
        return new

    def _release_witness(self) -> None:
        """Tell the witness that the kernel's end is accounted for ("D"): it leaves without recording anything.

        At a shutdown this is said as soon as the flight record shows it, so that the witness's exit overlaps
        the store's UPDATE and the flight files' removal: a SIGKILL of the supervisor after it loses no death
        (there is none; a later sweep discards what is left)."""
        fd, self._witness_fd = self._witness_fd, None
        if fd is None:
            return
        try:
            os.write(fd, b"D")
            os.close(fd)
        except OSError:
            pass

    def _note_witness(self, child: int, witness: int) -> None:
        """Leave the witness's pid beside the flight record, so that a sweep waits for it.

        The note's path is worked out once, at the first witness's note: the renewed witness's is written right
        after its fork, when every page the supervisor writes is copied and charged to the kernel's memory group
        again (pathlib's objects and ``write_text`` copied ~0.5 MiB there); plain ``os`` calls copy a few pages."""
        if self._note_file is None:
            from .flight import record_paths

            path = record_paths(self.home, self.kernel_id, child)[0].with_suffix(".sup")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._note_file = str(path)
        fd = os.open(self._note_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, b"%d %d\n" % (self.pid, witness))
        finally:
            os.close(fd)

    def _witness_record(self, child: int, oom_before: int | None, child_start: int | None) -> None:
        from ..memory.cgroup import oom_kill_counter
        from .evidence import Evidence
        from .gather import discard_flight, finish, gather_flight, gather_kernel_log

        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        ev = Evidence(
            kernel_id=self.kernel_id, pid=child, supervisor_pid=self.pid, source="witness", died_at=time.time()
        )
        ev.inferred_signal = signal.SIGKILL
        ev.notes.append(
            "the supervisor was SIGKILLed (sent to its pid alone, not to the process group as jupyter_client does); "
            "the kernel went with it (PDEATHSIG)"
        )
        if self._cgroup:
            ev.cgroup_path = self._cgroup[2]
            ev.oom_kills_before = oom_before
            ev.oom_kills_after = oom_kill_counter(*self._cgroup[:2])
        gather_flight(ev, self.home)
        if ev.shutdown_requested:
            discard_flight(self.home, self.kernel_id, child)
            return
        gather_kernel_log(ev, child_start, self._kmsg)
        finish(ev, self.home)

    def _sweep_apart(self, own_group: bool, mask: Any, witness_fd: int | None) -> None:
        """Sweep what earlier kernels left (their records; their memory groups, when this kernel has none of its
        own) in a forked process at a lower priority, reaped by the supervisor's wait for its kernel.

        The sweep's imports (``kernel_group`` and the memory reader under it: ~1.7 MiB, ~15 ms of CPU) then never
        stay in the supervisor, whose memory counts in the kernel's group for the kernel's whole life, and its
        CPU yields to the kernel's. Where the fork is refused, the supervisor sweeps itself."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # no handler of ours may run in the child
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            if not own_group:
                self._quietly(self._make_group)  # no group asked for: this only sweeps groups dead kernels left
            self._quietly(self._sweep_previous)
            return
        if pid == 0:
            try:
                if witness_fd is not None:
                    os.close(witness_fd)  # held here, it would keep the witness from seeing a SIGKILLed supervisor
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_IGN)  # interrupts are for the kernel
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.nice(SWEEP_NICE)
                if not own_group:
                    self._quietly(self._make_group)
                self._quietly(self._sweep_previous)
            except BaseException:
                pass
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _find_cgroup(self) -> None:
        from ..memory.cgroup import memory_group

        self._cgroup = memory_group()
        if self._limit and self._limit.cgroup(self.child):
            self._cgroup = self._limit.cgroup()  # the kernel's own group: v1's OOM-kill counter is per group

    def _make_group(self) -> None:
        from .kernel_group import start_for_kernel

        self._limit = start_for_kernel(self.kernel_id, self.home)
        if self._limit.message:
            print(f"kernel-sentinel: {self._limit.message}", file=sys.stderr)

    def _register(self) -> None:
        """Note the kernel in the store, and keep the store open: leaving after a shutdown then costs one UPDATE."""
        from ..store import Store

        store = Store(self.home / "store.db")
        store.kernel_started(
            self.kernel_id, self.child or 0, supervisor_pid=os.getpid(), connection_file=self.connection_file
        )
        self._store = store  # never closed: the supervisor leaves with os._exit, WAL keeps every commit

    def _sweep_previous(self) -> None:
        from .sweep import sweep

        # every kernel's leftovers but our own child's (its end is ours to record): a restart is a natural moment
        sweep(self.home, skip_pids=frozenset({self.child}) if self.child else frozenset())

    # -- after the death ---------------------------------------------------------------------------

    def _record(
        self, pid: int, code: int, usage: Any, died_at: float, oom_before: int | None, child_start: int | None
    ) -> None:
        from .flight import read_record, record_paths, shutdown_in_record
        from .gather import discard_flight

        # What follows a shutdown is only bookkeeping; jupyter_client waits for this process to leave.
        record = read_record(record_paths(self.home, self.kernel_id, pid)[0])  # the kernel has ended: read once
        if shutdown_in_record(record[0]):
            self._release_witness()
            self._ended("shutdown")
            discard_flight(self.home, self.kernel_id, pid)
            return
        from ..memory.cgroup import oom_kill_counter

        # read for a death only, a millisecond after the kernel's end as before (the autopsy's imports come next)
        oom_after = oom_kill_counter(*self._cgroup[:2]) if self._cgroup else None
        from .evidence import Evidence
        from .gather import finish, gather_disk, gather_flight, gather_kernel_log

        ev = Evidence(kernel_id=self.kernel_id, pid=pid, supervisor_pid=os.getpid(), died_at=died_at)
        if code < 0:
            ev.signal = -code
        else:
            ev.exit_code = code
        if usage is not None:
            ev.ru_maxrss_bytes = int(usage.ru_maxrss) * 1024  # kilobytes on Linux
        ev.signals_received = list(self.signals)
        if self._cgroup:
            ev.cgroup_path = self._cgroup[2]
        gather_flight(ev, self.home, record)
        if self._interrupted_while_starting(ev):
            self._release_witness()
            print(
                f"kernel-sentinel: kernel {self.kernel_id} was interrupted while it started (a frontend's shutdown "
                "or interrupt); not a death",
                file=sys.stderr,
            )
            self._ended("interrupted_starting")
            discard_flight(self.home, self.kernel_id, pid)
            return
        if self._cgroup:
            ev.oom_kills_before = oom_before
            ev.oom_kills_after = oom_after
            if oom_before is None or ev.oom_kills_after is None:
                ev.notes.append("the cgroup's OOM-kill counter could not be read")
        else:
            ev.notes.append("no memory cgroup found: OOM kills can only be seen in the kernel log")
        if ev.signal is not None:
            gather_kernel_log(ev, child_start, self._kmsg)
        if ev.signal == signal.SIGBUS:
            gather_disk(ev)
        report = finish(ev, self.home)
        print(f"kernel-sentinel: kernel {self.kernel_id} died: {report['summary']}", file=sys.stderr)
        self._ended("died")

    def _interrupted_while_starting(self, ev: Any) -> bool:
        """Return True when the kernel ended, before it was ever ready, of a shutdown the frontend began.

        jupyter_client's shutdown interrupts the process group (SIGINT) before it asks the kernel to leave, and
        terminates the group (SIGTERM) when it has not left in time. A kernel still starting dies of the
        interrupt, as stock does, or is terminated (a start-up the interrupt broke, a slow start on a loaded
        machine). No cell can have run then, so nothing the user made is lost: it is the frontend's doing.

        Python mostly ends of the interrupt's signal itself, but with exit status 1 when the KeyboardInterrupt
        lands while it imports ``site`` (``.pth`` files, sitecustomize: "Fatal Python error: init_import_site").
        Another KeyboardInterrupt during the start-up imports can end the same way: it leaves a module half
        imported and the next import fails ("Could not import runpy module", AttributeError on a partial module).
        Exit status 1 is the interrupt's doing unless the kernel was already ignoring SIGINT when the first
        interrupt came (read in the supervisor's handler: before ready a kernel's SIGINT only goes from default to
        caught by Python to ignored by ipykernel, never back): then the interrupt had no effect and the kernel
        failed on its own, a death. Caught, default (seen 373 ms before a KeyboardInterrupt ended a kernel under
        load: the read can come before the kernel's own delivery) or already ended do not prove that. What this
        cannot tell apart: a kernel not yet ignoring SIGINT that fails by itself right as a frontend shuts it down
        before it was ready; it fails again at its next start, where no interrupt excuses it.
        """
        if self._ready or (ev.flight or {}).get("cell"):
            return False
        if ev.signal == signal.SIGTERM:  # the shutdown's next step once the kernel has not left in time
            return any(s.get("signal") == "SIGTERM" for s in self.signals)  # sent to us, forwarded: asked for
        interrupts = [s for s in self.signals if s.get("signal") == "SIGINT"]
        if ev.signal == signal.SIGINT:
            return bool(interrupts)
        return ev.exit_code == 1 and bool(interrupts) and interrupts[0].get("kernel_sigint") != "ignored"

    def _ended(self, status: str) -> None:
        def write() -> None:
            if self._store is not None:
                self._store.kernel_ended(self.kernel_id, self.child or 0, status)
                return
            from ..store import Store

            with Store(self.home / "store.db") as store:
                store.kernel_ended(self.kernel_id, self.child or 0, status)

        self._quietly(write)

    def _mirror(self, code: int) -> None:
        """Exit as the child did: the same exit code, or the same signal raised on ourselves."""
        sys.stdout.flush()
        sys.stderr.flush()
        if code >= 0:
            os._exit(code)
        sig = -code
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        except (OSError, ValueError):
            pass
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL/SIGSTOP cannot be caught anyway
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        time.sleep(0.5)  # a signal whose default action is to ignore: fall back to the shell's convention
        os._exit(128 + sig)

    @staticmethod
    def _quietly(fn: Any) -> None:
        try:
            fn()
        except Exception as exc:
            print(f"kernel-sentinel: {getattr(fn, '__name__', 'step')}: {exc}", file=sys.stderr)


def _sigint_disposition(pid: int) -> str | None:
    """Return what process ``pid`` does with SIGINT ("ignored", "caught" or "default"), from its /proc status;
    "ended" once it is a zombie (its masks then read as zero), None when the file cannot be read."""
    ignored = caught = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    return "ended"
                if line.startswith("SigIgn:"):
                    ignored = int(line.split()[1], 16)
                elif line.startswith("SigCgt:"):
                    caught = int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    if ignored is None or caught is None:
        return None
    bit = 1 << (signal.SIGINT - 1)
    return "ignored" if ignored & bit else "caught" if caught & bit else "default"


def _ready_pipe() -> tuple[int | None, int | None]:
    """Return (read end, write end) of the pipe the kernel says "ready" through; (None, None) without one."""
    try:
        return os.pipe()
    except OSError:
        return None, None


def _wait_exec(r: int | None, w: int | None) -> None:
    """Return once the forked child has exec'd the kernel (or ended), at most EXEC_WAIT_SECONDS later.

    Until then the child only resets signals, sets PDEATHSIG and enters its group: were the supervisor to go on
    with its own start-up meanwhile (its imports, the witness's fork), the child would wait for a core on a busy
    2-core machine, and every start and restart with it. Blocked here, the supervisor leaves it its own core."""
    if w is not None:
        os.close(w)
    if r is None:
        return
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN | select.POLLHUP)
        poller.poll(EXEC_WAIT_SECONDS * 1000)  # EOF (POLLHUP) at the exec; signals are handled meanwhile (PEP 475)
    except OSError:
        pass
    finally:
        os.close(r)


def _wait_ready(fd: int | None) -> bool:
    """Return True once the kernel wrote its "ready" byte; False when it ended first (EOF) or after
    READY_WAIT_SECONDS. Closes ``fd``."""
    if fd is None:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if poller.poll(READY_WAIT_SECONDS * 1000):  # signals (forwarded to the kernel) do not end it (PEP 475)
            return os.read(fd, 1) == b"R"
        return False
    except OSError:
        return False
    finally:
        os.close(fd)


def supervise(args: Sequence[str], command: list[str]) -> None:
    """Run ``command`` (the ipykernel child) under a supervisor for the connection file in ``args``."""
    Supervisor(command, connection_file_from_argv(args)).run()
