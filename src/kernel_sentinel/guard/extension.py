"""The guard inside IPython: cell tracking, and turning a memory failure into the user's MemoryBudgetError.

``load(ip)`` / ``unload(ip)`` are called by ``kernel_sentinel.extension`` (``%load_ext kernel_sentinel``,
the sentinel kernelspec). ``%load_ext kernel_sentinel.guard.extension`` loads the guard alone.

- ``pre_run_cell`` / ``post_run_cell`` tell the guard when a cell runs on the main thread: the watchdog
  interrupts only then, with a threshold fixed when the cell starts.
- ``threading.excepthook`` is wrapped: a thread that dies of MemoryError while a cell runs interrupts
  that cell too (evidence ``thread``), since a thread holding the GIL can outrun the watchdog.
- ``ip.set_custom_exc((MemoryError, KeyboardInterrupt), handler)``: while the guard is on, any
  ``MemoryError`` (the fence refused an allocation) and any ``GuardInterrupt`` (the watchdog stopped the
  cell) become a ``kernel_sentinel.MemoryBudgetError``, which is the cell's error (ename) and carries
  ``.evidence``. A ``KeyboardInterrupt`` the user sent stays a ``KeyboardInterrupt``.

The handler, in this order (each step may fail on its own without hiding the error):
1. ``Guard.begin_failure()``: frees the error-path reserve and holds the fence so there is room to show
   the error (the error path itself needs memory: FACTS.md); returns the evidence dict.
2. Replaces the original exception in IPython's ``ExecutionResult`` by the ``MemoryBudgetError`` (which
   has no traceback): the original's traceback holds the failed cell's frames and their locals.
3. ``kernel_sentinel.guard.reclaim.release_after_failure(ip, etype, value, tb)`` (UX side), first, so
   the rest has memory to work with (the cell line for the short traceback is read before).
4. ``kernel_sentinel.guard.namespace.namespace_report(ip)``,
   ``kernel_sentinel.guard.explain.explain_memory_error(evidence, namespace_report)``,
   ``kernel_sentinel.report.memory_error.render(explanation) -> {"text/plain", "text/html"}``: displayed;
   the exception's message is ``kernel_sentinel.report.memory_error.error_message(explanation)``.
   Without those modules (or when one fails), a short built-in text and message are used instead.
5. A SHORT traceback: the cell line it came from and the error line (IPython's ultratb walks every frame
   and needs memory the kernel may not have).

Evidence keys (plain data, no references to frames or objects): ``trigger`` ("fence" | "watchdog"),
``requested_bytes`` (int | None; numpy's size when known), ``budget_bytes``, ``budget_source``,
``budget_kind``, ``usage_bytes``, ``rss_bytes``, ``working_set_bytes``, ``vm_data_bytes``,
``fence_bytes``, ``interrupt_at_bytes``, ``cell`` (execution count), ``code`` (the cell's source), ``line`` (line in the cell),
``usage_at_cell_start_bytes``, ``peak_usage_bytes``, ``exception`` (the original, as text),
``watchdog_fired``, ``background`` (growth in another thread, or while no cell ran), ``thread`` (the
name of a thread that died of MemoryError), ``usage_at_interrupt_bytes``, ``time``.

The UX side's magics class ``kernel_sentinel.guard.magics.SentinelMagics`` is registered when it exists;
it reaches the guard with ``kernel_sentinel.guard.get_guard(ip)``.
"""

from __future__ import annotations

import linecache
import sys
import threading
from typing import Any

from ..errors import MemoryBudgetError
from ..sizes import format_bytes
from .config import SentinelGuard, resolve_settings
from .core import Guard, get_guard
from .watchdog import GuardInterrupt, SigintRouter

_ATTR = "_kernel_sentinel_guard"
_HOOKS = "_kernel_sentinel_guard_hooks"


def load(ip: Any) -> Guard | None:
    """Create the guard for ``ip`` from its config and the environment; return it (None without a shell)."""
    if ip is None:
        return None
    existing = getattr(ip, _ATTR, None)
    if existing is not None:
        return existing
    try:
        config = SentinelGuard(parent=ip)
    except Exception:
        config = SentinelGuard()
    settings = resolve_settings(config)
    for warning in settings.warnings:
        _say(f"kernel-sentinel: {warning}")
    try:
        guard = Guard(settings)
    except Exception as exc:  # e.g. no /proc (macOS): the kernel runs, unguarded, and says why once
        _say(f"kernel-sentinel: the memory guard is not available here: {exc}")
        return None
    setattr(ip, _ATTR, guard)
    router = SigintRouter(guard)
    router.protected.add(_custom_exc.__code__)

    def pre_run_cell(info: Any = None) -> None:
        if not guard.enabled or threading.current_thread() is not threading.main_thread():
            return
        router.install()  # first: cell_started() may already interrupt, and only the router may receive it
        guard.cell_started(getattr(ip, "execution_count", None), getattr(info, "raw_cell", None))

    def post_run_cell(result: Any = None) -> None:
        if guard.cell_running:
            guard.cell_finished()

    previous_hook = threading.excepthook

    def thread_excepthook(args: Any) -> None:
        # A thread that dies of MemoryError under the guard stops the cell that waits for it, too.
        try:
            if (
                guard.enabled
                and isinstance(args.exc_value, MemoryError)
                and args.thread is not threading.main_thread()
            ):
                guard.thread_failed(getattr(args.thread, "name", "?"), args.exc_value)
        except Exception:
            pass
        previous_hook(args)

    thread_excepthook.previous = previous_hook  # type: ignore[attr-defined]
    threading.excepthook = thread_excepthook
    ip.events.register("pre_run_cell", pre_run_cell)
    ip.events.register("post_run_cell", post_run_cell)
    setattr(ip, _HOOKS, (pre_run_cell, post_run_cell))
    ip.set_custom_exc((MemoryError, KeyboardInterrupt), _custom_exc)
    _register_magics(ip)
    if settings.enabled:
        try:
            guard.enable()
        except Exception as exc:  # the kernel must start even when the guard cannot
            _say(f"kernel-sentinel: the memory guard could not start: {exc}")
    return guard


def unload(ip: Any) -> None:
    """Turn the guard off and take its hooks out of ``ip``; the user's RLIMIT_DATA comes back."""
    guard = getattr(ip, _ATTR, None)
    if guard is None:
        return
    hooks = getattr(ip, _HOOKS, None)
    if hooks:
        for name, callback in zip(("pre_run_cell", "post_run_cell"), hooks):
            try:
                ip.events.unregister(name, callback)
            except ValueError:
                pass
        delattr(ip, _HOOKS)
    previous_hook = getattr(threading.excepthook, "previous", None)
    if previous_hook is not None:
        threading.excepthook = previous_hook
    if tuple(getattr(ip, "custom_exceptions", ())) == (MemoryError, KeyboardInterrupt):
        ip.set_custom_exc((), None)
    guard.close()
    delattr(ip, _ATTR)


load_ipython_extension = load
unload_ipython_extension = unload


def _register_magics(ip: Any) -> None:
    try:
        from .magics import SentinelMagics  # the UX side's module; absent until it lands
    except ImportError:
        return
    try:
        ip.register_magics(SentinelMagics)
    except Exception as exc:
        _say(f"kernel-sentinel: %sentinel magics could not be registered: {exc}")


# -- the custom exception handler --------------------------------------------------------------------


def _custom_exc(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> None:
    """IPython's CustomTB for MemoryError and KeyboardInterrupt: returns None, shows the error itself.

    It must never raise: IPython unregisters a custom handler that does.
    """
    guard = get_guard(shell)
    from_guard = isinstance(value, GuardInterrupt)
    ours = guard is not None and (
        from_guard
        or (guard.enabled and isinstance(value, MemoryError) and not isinstance(value, MemoryBudgetError))
    )
    if not ours:
        _standard(shell, etype, value, tb, tb_offset)
        return None
    assert guard is not None
    evidence: dict[str, Any] = {}
    try:
        evidence = guard.begin_failure("watchdog" if from_guard else "fence", value)
        line = _cell_line(shell, tb)
        if line is not None:
            evidence["line"] = line[0]
        result = getattr(shell.displayhook, "exec_result", None)
        if result is not None:
            result.error_in_exec = None  # the original's traceback holds the failed cell's frames
            if isinstance(getattr(result, "execution_count", None), int):
                evidence["cell"] = result.execution_count  # IPython 9 counts up before pre_run_cell
        _release(shell, etype, value, tb)
        value = tb = None  # type: ignore[assignment]
        explanation, bundle = _explain(shell, evidence)
        err = MemoryBudgetError(_message(evidence, explanation))
        err.evidence = evidence  # type: ignore[attr-defined]
        if result is not None:
            result.error_in_exec = err
        _display(bundle or {"text/plain": _fallback_text(evidence)})
        shell._showtraceback(MemoryBudgetError, err, _short_traceback(err, evidence, line))
    except BaseException as exc:  # noqa: BLE001 - even a second interrupt must not unregister us
        try:
            err = MemoryBudgetError(_message(evidence) if evidence else "memory budget exhausted")
            err.evidence = evidence  # type: ignore[attr-defined]
            result = getattr(shell.displayhook, "exec_result", None)
            if result is not None:
                result.error_in_exec = err  # the cell failed, whatever failed in explaining it
            shell._showtraceback(
                MemoryBudgetError, err, [f"MemoryBudgetError: {err}", f"(while explaining: {type(exc).__name__})"]
            )
        except BaseException:
            pass
    finally:
        if guard is not None:
            guard.end_failure()
    return None


def _standard(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None) -> None:
    """Show an exception the guard does not own exactly as IPython would have."""
    try:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    except BaseException:
        try:
            shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])
        except BaseException:
            pass


def _message(ev: dict[str, Any], explanation: Any = None) -> str:
    """Return the error's one-line message: the UX side's when there is one, else a short built-in one."""
    if explanation is not None:
        try:
            from ..report.memory_error import error_message

            return error_message(explanation)
        except Exception:
            pass
    budget = f"the kernel's budget is {format_bytes(ev.get('budget_bytes'))} ({ev.get('budget_source')})"
    used = ev.get("usage_at_interrupt_bytes") or ev.get("usage_bytes")
    if ev.get("trigger") == "watchdog":
        what = f"memory use reached {format_bytes(used)}, near the limit, so the cell was stopped"
        if ev.get("background"):
            what += " (memory also grew while no cell ran: a background thread?)"
    elif ev.get("requested_bytes"):
        what = f"the cell asked for {format_bytes(ev['requested_bytes'])} more, with {format_bytes(used)} in use"
    else:
        what = f"an allocation was refused, with {format_bytes(used)} in use"
    return f"{what}; {budget}. The kernel and its other variables are intact."


def _cell_line(shell: Any, tb: Any) -> tuple[int, str] | None:
    """Return (line number, text) of the innermost frame that runs the user's own cell code."""
    found = None
    user_ns = getattr(shell, "user_global_ns", None)
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals is user_ns:
            found = (tb.tb_lineno, frame.f_code.co_filename)
        tb = tb.tb_next
    if found is None:
        return None
    lineno, filename = found
    return lineno, linecache.getline(filename, lineno).strip()


def _short_traceback(err: MemoryBudgetError, ev: dict[str, Any], line: tuple[int, str] | None) -> list[str]:
    red, reset = "\x1b[0;31m", "\x1b[0m"
    stb = []
    if line is not None:
        cell = ev.get("cell")
        where = f"Cell In[{cell}], line {line[0]}" if cell is not None else f"line {line[0]}"
        stb.append(f"{where}: {line[1]}" if line[1] else where)
    stb.append(f"{red}MemoryBudgetError{reset}: {err}")
    return stb


def _release(shell: Any, etype: type, value: Any, tb: Any) -> None:
    try:
        from .reclaim import release_after_failure
    except ImportError:
        return
    try:
        release_after_failure(shell, etype, value, tb)
    except Exception as exc:
        _say(f"kernel-sentinel: releasing memory after the failure failed: {exc}")


def _explain(shell: Any, evidence: dict[str, Any]) -> tuple[Any, dict[str, str] | None]:
    """Return the UX side's explanation and its text/plain + text/html bundle (None, None without it)."""
    try:
        from ..report.memory_error import render
        from .explain import explain_memory_error
        from .namespace import namespace_report
    except ImportError:
        return None, None
    try:
        explanation = explain_memory_error(evidence, namespace_report(shell))
    except Exception as exc:
        _say(f"kernel-sentinel: could not explain the memory error: {type(exc).__name__}: {exc}")
        return None, None
    try:
        return explanation, render(explanation)
    except Exception as exc:
        _say(f"kernel-sentinel: could not render the memory error: {type(exc).__name__}: {exc}")
        return explanation, None


def _display(bundle: dict[str, str]) -> None:
    try:
        from IPython.display import display

        display(bundle, raw=True)
    except Exception:
        pass


def _fallback_text(ev: dict[str, Any]) -> str:
    lines = [
        "kernel-sentinel stopped this cell before the kernel ran out of memory.",
        f"  budget: {format_bytes(ev.get('budget_bytes'))} ({ev.get('budget_source')})",
        f"  in use: {format_bytes(ev.get('usage_bytes'))}",
    ]
    if ev.get("requested_bytes"):
        lines.append(f"  asked for: {format_bytes(ev['requested_bytes'])}")
    return "\n".join(lines)


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except Exception:
        pass
