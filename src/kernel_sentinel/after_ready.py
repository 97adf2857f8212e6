"""When a starting kernel's slower set-up may run: right after it has said it is ready, before any code runs.

A frontend waits for a new (or restarted) kernel's ``kernel_info_reply`` before anything else; every part
of the sentinel that loads before that reply makes every start and restart slower. ``defer(ip, fn)``
runs ``fn`` on the kernel's main thread instead at the first of:
- just after the kernel has answered its first ``kernel_info_request`` (shell or control channel): the
  frontend then still waits 0.2 s for its output channel to go quiet (jupyter_client's ``wait_for_ready``),
  so the set-up mostly overlaps that wait;
- the start of the first ``execute_request`` handled on the main thread: no cell ever runs before ``fn``;
- ``FALLBACK_SECONDS`` after the kernel's event loop started (a client that never asks for kernel_info).
A shutdown requested first skips ``fn`` (a kernel on its way out needs no guard). Only a kernel that is still
starting defers; one already running (``%load_ext`` in a live kernel), one whose start-up runs user code
(startup files, ``exec_lines``...) and any shell that is not ipykernel's run ``fn`` at once.

Threads: the wrappers run on whichever thread ipykernel calls them (main, control); only the main thread
(its event loop, or the execute gate) ever calls ``fn``; other threads only schedule it.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Callable

FALLBACK_SECONDS = 3.0
_SHELL = "shell_handlers"
_CONTROL = "control_handlers"


def defer(ip: object, fn: Callable[[], None], *, shutting_down: Callable[[], bool] = lambda: False) -> bool:
    """Arrange for ``fn`` to run once the starting kernel of ``ip`` is ready; return False if it must run now.

    ``shutting_down()`` is asked just before ``fn`` would run: True skips it for good.
    """
    kernel = getattr(ip, "kernel", None)
    if kernel is None or getattr(kernel, "io_loop", None) is not None:  # no kernel, or one already running
        return False
    shell = getattr(kernel, _SHELL, None)
    control = getattr(kernel, _CONTROL, None)
    if not isinstance(shell, dict) or "kernel_info_request" not in shell or "execute_request" not in shell:
        return False
    if _startup_runs_code():
        return False
    once = _Once(kernel, fn, shutting_down)
    once.install(shell, control if isinstance(control, dict) else None)
    return True


class _Once:
    """Runs ``fn`` at most once, on the main thread; puts ipykernel's own handlers back when it has."""

    def __init__(self, kernel: object, fn: Callable[[], None], shutting_down: Callable[[], bool]) -> None:
        self.kernel = kernel
        self.fn = fn
        self.shutting_down = shutting_down
        self.done = False  # main thread only
        self._originals: list[tuple[dict, str, object, object]] = []  # (handlers, name, original, ours)
        self._start = None

    def install(self, shell: dict, control: dict | None) -> None:
        self._wrap(shell, "kernel_info_request", self._after_reply)
        if control is not None and "kernel_info_request" in control:
            self._wrap(control, "kernel_info_request", self._after_reply)
        self._wrap(shell, "execute_request", self._before_execute)
        start = getattr(self.kernel, "start", None)
        if callable(start):
            self._start = start

            def started(*args: object, **kwargs: object) -> object:
                result = start(*args, **kwargs)
                self._schedule(FALLBACK_SECONDS)
                return result

            self.kernel.start = started  # an instance attribute over the method; removed when done

    def _wrap(self, handlers: dict, name: str, make: Callable[[Callable], Callable]) -> None:
        original = handlers[name]
        ours = make(original)
        handlers[name] = ours
        self._originals.append((handlers, name, original, ours))

    def _after_reply(self, original: Callable) -> Callable:
        async def kernel_info_request(*args: object) -> None:
            result = original(*args)
            if hasattr(result, "__await__"):
                await result
            # the reply is sent; ipykernel publishes "idle" before the loop runs this callback
            self._schedule(0.0)

        return kernel_info_request

    def _before_execute(self, original: Callable) -> Callable:
        def execute_request(*args: object) -> object:
            if threading.current_thread() is threading.main_thread():
                self.run()
            return original(*args)

        return execute_request

    def _schedule(self, delay: float) -> None:
        loop = getattr(self.kernel, "io_loop", None)
        if loop is None:
            return
        try:
            if delay:
                loop.call_later(delay, self.run)  # only ever called from the main thread (kernel.start)
            else:
                loop.add_callback(self.run)  # thread-safe: the control thread may call this
        except Exception:
            pass

    def run(self) -> None:
        """Run ``fn`` unless it ran or a shutdown came first (main thread only)."""
        if self.done:
            return
        self.done = True
        for handlers, name, original, ours in self._originals:
            if handlers.get(name) is ours:  # someone who wrapped it after us keeps their wrapper (and ours)
                handlers[name] = original
        self._originals.clear()
        if self._start is not None:
            try:
                del self.kernel.start
            except AttributeError:
                pass
        try:
            if self.shutting_down():
                return
        except Exception:
            pass
        try:
            self.fn()
        except Exception as exc:  # an event-loop callback or the first cell: neither may fail for this
            print(f"kernel-sentinel: could not finish loading: {exc}", file=sys.__stderr__)


def _startup_runs_code() -> bool:
    """Return True when IPython runs user code at start-up (before the kernel is ready): load at once then."""
    if os.environ.get("PYTHONSTARTUP"):
        return True
    try:
        from ipykernel.kernelapp import IPKernelApp

        if not IPKernelApp.initialized():
            return True  # not ipykernel's own start-up: nothing to gain, take no risk
        app = IPKernelApp.instance()
        if app.exec_lines or app.exec_files or app.code_to_run or app.file_to_run or app.module_to_run:
            return True
        startup = getattr(getattr(app, "profile_dir", None), "startup_dir", None)
        if startup and (glob.glob(os.path.join(startup, "*.py")) or glob.glob(os.path.join(startup, "*.ipy"))):
            return True
    except Exception:
        return True
    return False
