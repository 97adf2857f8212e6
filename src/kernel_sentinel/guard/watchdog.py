"""The watchdog thread, and how its interrupt reaches the running cell (and only the running cell).

Every ``poll_interval`` (10 ms) the thread calls ``Guard.tick()``: a few ``pread`` calls and a
``setrlimit`` when the fence moves. Far below the threshold it reads up to 10x less often, and up to 50x
less far below a big budget such as a machine's RAM (``policy.poll_factor``): each wake-up also costs GIL
hand-offs with the busy main thread (each ``pread`` of a tick gives the GIL up, and taking it back from a
thread running Python waits for the switch interval, 5 ms). When a cell's usage crosses its threshold
the guard sends ``signal.pthread_kill(main, SIGINT)``: unlike ``_thread.interrupt_main`` it also wakes
sleeps, lock waits (``thread.join()``) and pipe reads (FACTS.md).

The SIGINT handler installed for the cell (``SigintRouter``) decides what the signal means:
- sent by the guard, while the cell's own code runs: raise ``GuardInterrupt`` (a ``KeyboardInterrupt``,
  so ``except Exception`` in user code does not swallow it); the extension turns it into
  ``MemoryBudgetError``;
- sent by the guard, but arriving outside the cell's code (IPython's own bookkeeping, after the cell):
  dropped; the watchdog sends another in 0.1 s if the cell still grows. So the guard never raises
  inside IPython or ipykernel, where an exception could break the kernel;
- sent by anyone else (the user's interrupt button): handed to the handler that was there before.

Waiting longer far from the line is allowed only where it is provably safe: the headroom to the interrupt line
must exceed twice what the fastest fill this machine can do covers in the longer wait. Measured here (2026-11-30,
1 GiB group; README, "What the default kernel costs"): one thread filling fresh anonymous memory, numpy on
transparent huge pages, 6.7 GB/s (4 KiB pages: 1.7-2.1 GB/s, one or two threads). In a 1 GiB group no headroom
reaches 2 x 6.7 GB/s x 0.1 s = 1.34 GB, so the rule allows nothing beyond today's 10 intervals there (what makes
today's 100 ms safe is the fence: committed memory cannot pass RLIMIT_DATA between ticks); beyond half a big budget
``policy.poll_factor`` already waits up to 50 intervals with 16 GB/s in place of the fill rate. So a tick is made
cheaper instead (``Meters``, ``memory.linux``), never rarer. The one growth the fence cannot hold, heap freed before
a cell and taken again (no VmData growth), keeps the wait at one interval while more of it than the fence's margin
is left; a cell's start that shortens the wait wakes the thread at once (``nudge``) rather than after the long
wait begun while no cell ran.

The thread never dies of its own errors: a ``MemoryError`` (it also lives under the fence) skips one
tick; three other errors in a row make it say so once, give the user's RLIMIT_DATA back and step aside.
A C call that holds the GIL stalls the thread; the fence, set at the last tick, still stands meanwhile,
and the next tick simply reads again (``max_tick_gap_seconds`` in ``status()`` shows the longest stall).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

MAX_ERRORS = 3
# Callables of other parts run after each tick, in this thread (``add_rider``): the flight recorder's memory
# sample rides the watchdog's wake-up instead of waking its own thread. A wake-up of a thread while the main
# thread runs Python costs far more than the work done in it (a recorder sample: ~80 us warm, ~1 ms as its own
# wake-up in the cost bench's cells), and the watchdog wakes anyway, up to ten times a second.
_riders: list[Any] = []


def add_rider(fn: Any) -> None:
    """Run ``fn(now, far)`` after each of the watchdog's ticks; ``far``: the next tick is at least ``RIDE_FACTOR``
    intervals away (the line is far), so a few hundred microseconds there delay nothing the guard needs."""
    if fn not in _riders:
        _riders.append(fn)


def remove_rider(fn: Any) -> None:
    """Stop running ``fn`` after the ticks (idempotent)."""
    try:
        _riders.remove(fn)
    except ValueError:
        pass


RIDE_FACTOR = 5  # a rider does its work in this thread only while the watchdog waits at least this many intervals
# The C function, without signal.py's enum conversion (~30 us a cell's start): ints and handlers compare the same.
_getsignal = getattr(getattr(signal, "_signal", None), "getsignal", signal.getsignal)


class GuardInterrupt(KeyboardInterrupt):
    """The guard stopped the running cell because memory use crossed its threshold."""


class Watchdog(threading.Thread):
    """Daemon thread that runs ``guard.tick()`` every ``interval`` seconds until ``stop()``."""

    def __init__(self, guard: Any, interval: float) -> None:
        super().__init__(name="kernel-sentinel-watchdog", daemon=True)
        self.guard = guard
        # Never negative: Lock.acquire takes -1 as "forever" where Event.wait took any wait <= 0 as "don't"
        self.interval = max(0.0, interval)
        # Held from the start, released by stop(): the thread waits on it with a timeout, one C call where
        # Event.wait (a Condition: a fresh lock, a deque, the condition's own lock taken back) runs ~10 Python
        # calls at each of its wake-ups, each one cold in the caches of a kernel busy in a cell.
        self._asleep = threading.Lock()
        self._asleep.acquire()
        self._stopped = False
        self.waiting_factor = 1  # the guard's interval_factor the current wait began with (this thread writes it)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (any thread; idempotent) and wait up to ``timeout`` for it to end."""
        if not self._stopped:
            self._stopped = True
            try:
                self._asleep.release()  # wakes the thread at once, however long its wait
            except RuntimeError:
                pass  # released already (a concurrent stop)
        if self is not threading.current_thread() and self.is_alive():
            self.join(timeout)

    def nudge(self) -> None:
        """Wake the thread for a tick now (any thread): the guard wants a shorter wait than the one under way."""
        try:
            self._asleep.release()  # the thread takes it back at once: woken, not stopped (run checks _stopped)
        except RuntimeError:
            pass  # released already: a wake-up (or the stop) is pending

    def run(self) -> None:
        errors = 0
        last = time.monotonic()
        wait = self._asleep.acquire
        guard = self.guard
        cpu_start = time.thread_time()
        while True:
            self.waiting_factor = guard.interval_factor
            if wait(True, self.interval * self.waiting_factor) and self._stopped:
                break
            guard.watchdog_cpu_seconds = time.thread_time() - cpu_start
            now = time.monotonic()
            gap = now - last
            last = now
            try:
                if gap > guard.max_tick_gap:
                    guard.max_tick_gap = gap
                guard.tick(now)
                errors = 0
            except MemoryError:
                continue  # the watchdog lives under the fence too; the fence holds, try again next tick
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive anything a tick does
                errors += 1
                if errors >= MAX_ERRORS:
                    self._step_aside(exc)
                    return
            if _riders:
                far = guard.interval_factor >= RIDE_FACTOR
                for rider in tuple(_riders):
                    try:
                        rider(now, far)
                    except Exception:  # noqa: BLE001 - a rider's failure is its own, never the guard's
                        pass

    def _step_aside(self, exc: BaseException) -> None:
        reason = f"watchdog stopped after repeated errors ({type(exc).__name__}: {exc})"
        try:
            self.guard.step_aside(reason)
        except Exception:
            pass
        try:
            print(f"kernel-sentinel: {reason}; the memory guard is off in this kernel.", file=sys.stderr)
        except Exception:
            pass


def _run_code_code() -> Any:
    try:
        from IPython.core.interactiveshell import InteractiveShell

        return InteractiveShell.run_code.__code__
    except Exception:  # pragma: no cover - IPython is always there in a kernel
        return None


class SigintRouter:
    """The SIGINT handler of a guarded cell: guard interrupts become ``GuardInterrupt``, others pass on."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard
        self.previous: Any = signal.default_int_handler
        self._handler = self.handle  # one bound method, so ``getsignal() is`` works
        self._run_code = _run_code_code()
        self.protected: set[Any] = set()  # code objects (the guard's error handler) never interrupted
        self._deep = False  # the last _in_cell_code walk ended deep in the cell's own recursion

    def install(self) -> None:
        """Install for the cell that starts now (main thread only); remembers the handler it replaces."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = _getsignal(signal.SIGINT)
        if current is self._handler:
            return
        self.previous = current
        signal.signal(signal.SIGINT, self._handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        guard = self.guard
        if guard.consume_interrupt():
            if guard.cell_running and self._in_cell_code(frame):
                guard.interrupt_raised()  # first: no resend while this one is counted and unwinds
                if self._deep and frame is not None:
                    code = frame.f_code
                    guard.note_recursion(_stack_depth(), code.co_name, code.co_filename, frame.f_lineno)
                raise GuardInterrupt("memory use crossed the guard's threshold")
            return  # late or early: the watchdog resends while the cell still grows
        guard.note_user_interrupt()
        previous = self.previous
        if previous is self._handler or previous is None or previous == signal.SIG_DFL:
            raise KeyboardInterrupt
        if previous == signal.SIG_IGN:
            return
        previous(signum, frame)

    def _in_cell_code(self, frame: FrameType | None) -> bool:
        """Return True when ``frame`` runs inside IPython's ``run_code`` (the cell's own code)."""
        self._deep = False
        if self._run_code is None:
            return True
        depth = 0
        below = None  # the frame run_code called: the cell's own code is its "<module>"
        while frame is not None and depth < DEEP:
            if frame.f_code in self.protected:
                return False  # the guard's own error path: a second interrupt there would hide the first
            if frame.f_code is self._run_code:
                # Not in IPython's own frames under run_code either: raised in its CustomTB wrapper (after
                # the guard's handler had shown the error), it unregistered the handler and showed a
                # second, raw GuardInterrupt traceback.
                return below is not None and below.f_code.co_name == "<module>"
            below = frame
            frame = frame.f_back
            depth += 1
        # Deeper than IPython or ipykernel ever go: the cell's own runaway recursion (whose frames, on
        # the heap since 3.11, are what fills memory); dropping the interrupt there let it run forever.
        self._deep = frame is not None
        return self._deep


DEEP = 400  # frames above IPython's run_code that only a recursion in the cell's code reaches


_DEPTH = re.compile(r"recursion depth (\d+)")


def _stack_depth() -> int | None:
    """Return how many frames deep the calling thread is, in O(1): CPython says it when refusing a limit.

    ``sys.setrecursionlimit(1)`` at depth d raises "cannot set the recursion limit to 1 at the recursion
    depth d" and changes nothing. Walking millions of frames instead (``f_back`` or ``sys._getframe(n)``)
    took seconds in the signal handler, long enough for the next SIGINT to nest another handler in it.
    """
    try:
        sys.setrecursionlimit(1)
    except RecursionError as exc:
        match = _DEPTH.search(str(exc))
        return int(match.group(1)) if match else None
    except Exception:
        return None
    return None  # pragma: no cover - only at depth 0, which a handler never is
