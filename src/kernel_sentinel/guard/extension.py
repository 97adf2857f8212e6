"""The guard inside IPython: cell tracking, and turning a memory failure into the user's MemoryBudgetError.

``load(ip)`` / ``unload(ip)`` are called by ``kernel_sentinel.extension`` (``%load_ext kernel_sentinel``,
the sentinel kernelspec). ``%load_ext kernel_sentinel.guard.extension`` loads the guard alone.

- ``pre_run_cell`` / ``post_run_cell`` tell the guard when a cell runs on the main thread: the watchdog
  interrupts only then, with a threshold fixed when the cell starts.
- ``threading.excepthook`` is wrapped: a thread that dies of MemoryError while a cell runs interrupts
  that cell too (evidence ``thread``), since a thread holding the GIL can outrun the watchdog.
- ``ip.set_custom_exc((MemoryError, KeyboardInterrupt, SystemError), handler)``: while the guard is on, any
  ``MemoryError`` (the fence refused an allocation) and any ``GuardInterrupt`` (the watchdog stopped the
  cell) become a ``kernel_sentinel.MemoryBudgetError``, which is the cell's error (ename) and carries
  ``.evidence``. A ``KeyboardInterrupt`` the user sent stays a ``KeyboardInterrupt``. CPython 3.11's
  "SystemError: error return without exception set" at the bottom of a runaway recursion is a frame the
  fence refused (``recursion.refused_frame``) and becomes one too, after ``recursion.mend_lost_reference``;
  any other SystemError is shown exactly as IPython would.

The handler, in this order (each step may fail on its own without hiding the error):
1. ``Guard.begin_failure()``: frees the error-path reserve and holds the fence so there is room to show
   the error (the error path itself needs memory: FACTS.md); returns the evidence dict.
2. Replaces the original exception in IPython's ``ExecutionResult`` by the ``MemoryBudgetError`` (which
   has no traceback): the original's traceback holds the failed cell's frames and their locals.
3. ``kernel_sentinel.guard.reclaim.release_after_failure(ip, etype, value, tb)`` (UX side), first, so
   the rest has memory to work with (the cell line for the short traceback is read before).
4. ``kernel_sentinel.guard.namespace.namespace_report(ip)``,
   ``kernel_sentinel.guard.explain.explain_memory_error(evidence, namespace_report)``,
   ``kernel_sentinel.records.GuardEvidence.explained(evidence, explanation.to_dict())`` (the record),
   ``kernel_sentinel.report.memory_error.render(record) -> {"text/plain", "text/html"}``: displayed;
   the exception's message is ``kernel_sentinel.report.memory_error.error_message(record)``.
   Without those modules (or when one fails), a short built-in text and message are used instead.
5. A SHORT traceback: the cell line it came from and the error line (IPython's ultratb walks every frame
   and needs memory the kernel may not have).

Evidence keys (plain data, no references to frames or objects): ``trigger`` ("fence" | "watchdog"),
``requested_bytes`` (int | None; numpy's size when known), ``budget_bytes``, ``budget_source``,
``budget_kind``, ``usage_bytes``, ``unfilled_bytes`` (allocated, not yet filled), ``rss_bytes``, ``working_set_bytes``, ``vm_data_bytes``,
``fence_bytes``, ``interrupt_at_bytes``, ``cell`` (execution count), ``code`` (the cell's source), ``line`` (line in the cell),
``usage_at_cell_start_bytes``, ``peak_usage_bytes``, ``exception`` (the original, as text),
``watchdog_fired``, ``background`` (growth in another thread, or while no cell ran), ``thread`` (the
name of a thread that died of MemoryError), ``usage_at_interrupt_bytes``, ``time``; for a runaway recursion
``recursion_depth``, ``recursion_function`` and ``recursion_depth_at_least`` (counted on the traceback, which
loses entries that could not be allocated while it unwound at the fence).

The UX side's magics class ``kernel_sentinel.guard.magics.SentinelMagics`` is registered when it exists;
it reaches the guard with ``kernel_sentinel.guard.get_guard(ip)``.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import threading
import time
from typing import Any

from ..errors import MemoryBudgetError
from ..sizes import format_bytes
from . import children, imports, prerun, threadstart
from .config import SentinelGuard, resolve_settings
from .core import Guard, get_guard
from .recursion import mend_lost_reference, recursion_of, refused_frame
from .threadstop import ThreadMemoryError
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
    guard.native_stop = lambda code: interrupt_duckdb(ip, code)
    router = SigintRouter(guard)
    router.protected.add(_custom_exc.__code__)

    before = PreRun(ip, guard)
    children_watch = ChildrenWatch()
    young_threads = YoungThreads()

    def pre_run_cell(info: Any = None) -> None:
        if not guard.enabled or threading.current_thread() is not threading.main_thread():
            return
        router.install()  # first: cell_started() may already interrupt, and only the router may receive it
        _run_left(_NEXT_CELL, again=_AFTER_CELL)  # what the last memory error left to release
        raw = getattr(info, "raw_cell", None)
        _library_loaded(ip, "duckdb")
        guard.cell_started(getattr(ip, "execution_count", None), raw)
        before.check(raw)  # may start duckdb's default database
        if "duckdb" in sys.modules:
            young_threads.settle()
        children_watch.start(raw, guard)

    def post_run_cell(result: Any = None) -> None:
        before.done()
        children_watch.finish(guard)
        _run_left(_AFTER_CELL)
        if guard.cell_running:
            guard.cell_finished()
        if guard.enabled and "duckdb" in sys.modules:
            if not young_threads.started:
                young_threads.started = start_duckdb()
            young_threads.look()
        if _budget_key(guard) != _PUBLISHED[0]:
            # `%sentinel budget` (either path: the guard's own or the kernel group's), `%sentinel on/off`, or a
            # limit moved from outside: the server's REST and the status bar read the published state, so it is
            # republished before the cell's reply, not whenever something else next writes the region.
            note_flight(None)

    previous_hook = threading.excepthook

    def thread_excepthook(args: Any) -> None:
        # A thread that dies of MemoryError under the guard stops the cell that waits for it, too.
        try:
            if isinstance(args.exc_value, ThreadMemoryError):
                guard.thread_stopped(getattr(args.thread, "name", "?"))  # the guard's own doing: no interrupt
            elif (
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
    threadstart.install(guard)  # a thread start the fence refused is re-fenced and tried again
    imports.install(guard, loaded=lambda name: _library_loaded(ip, name))  # reservations are address space
    ip.events.register("pre_run_cell", pre_run_cell)
    ip.events.register("post_run_cell", post_run_cell)
    setattr(ip, _HOOKS, (pre_run_cell, post_run_cell))
    ip.set_custom_exc(_custom_exceptions(), _custom_exc)
    _register_magics(ip)
    if settings.enabled:
        try:
            guard.enable()
        except Exception as exc:  # the kernel must start even when the guard cannot
            _say(f"kernel-sentinel: the memory guard could not start: {exc}")
    note_flight(None)  # the guard's state, for the server, from the start
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
    threadstart.uninstall()
    imports.uninstall()
    if tuple(getattr(ip, "custom_exceptions", ()))[:2] == (MemoryError, KeyboardInterrupt):
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
    """IPython's CustomTB for the guard's kinds (``_custom_exceptions``): returns None, shows the error itself.

    What is not the guard's (a KeyboardInterrupt the user sent, any other SystemError) is shown by ``_standard``.

    It must never raise: IPython unregisters a custom handler that does.
    """
    guard = get_guard(shell)
    if isinstance(value, MemoryBudgetError) and (getattr(value, "evidence", None) or {}).get("trigger") == "prerun":
        _show_refusal(shell, value)
        return None
    library = library_oom(value, guard)  # duckdb's "Query interrupted" counts only when the guard sent the SIGINT
    stopped_library = _library_stopped(value, guard)  # polars' own KeyboardInterrupt after the guard's SIGINT
    if library is None and (stopped_library or isinstance(value, GuardInterrupt)):
        named = _stopped_library_name(guard)  # the cell's code calls polars: only then is its traceback walked
        if named is not None and (stopped_library or _raised_inside(tb, named)):
            library = named
    from_guard = (
        isinstance(value, GuardInterrupt) or (library is not None and _is_duckdb_interrupt(value)) or stopped_library
    )
    lost_frame = refused_frame(value, tb) if guard is not None and guard.enabled else None
    ours = guard is not None and (
        from_guard
        or (guard.enabled and isinstance(value, MemoryError) and not isinstance(value, MemoryBudgetError))
        or (guard.enabled and library is not None)
        or lost_frame is not None
    )
    if not ours:
        _standard(shell, etype, value, tb, tb_offset)
        return None
    assert guard is not None
    evidence: dict[str, Any] = {}
    mended = lost_frame is None
    try:
        evidence = guard.begin_failure("watchdog" if from_guard else "fence", value)  # first: the error path's room
        if not mended:
            mended = True
            mend_lost_reference(tb)  # while the traceback still holds the frames that keep the function alive
        if "recursion_depth" not in evidence:  # else the interrupt noted it, exactly
            _note_recursion(evidence, lost_frame or recursion_of(tb))
        if library is not None:
            evidence["library"] = library
        child = _child_that_grew(evidence)
        if child is not None:
            evidence["child"] = child
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
        if library == "duckdb" or prerun.uses_duckdb(evidence.get("code")):
            # At the next cell: until this one is over, the failed result is held. Not only when the error is
            # duckdb's own: a fetch stopped in numpy's conversion left ~700 MiB held until the next statement.
            _NEXT_CELL.append(lambda: release_duckdb(shell, evidence.get("code") or ""))
        explanation, bundle = _explain(shell, evidence)
        err = MemoryBudgetError(_message(evidence, explanation))
        err.evidence = evidence  # type: ignore[attr-defined]
        if result is not None:
            result.error_in_exec = err
        _display(bundle or {"text/plain": _fallback_text(evidence)})
        note_flight("refusal", evidence)
        shell._showtraceback(MemoryBudgetError, err, _short_traceback(err, evidence, line))
    except BaseException as exc:  # noqa: BLE001 - even a second interrupt must not unregister us
        if not mended:
            try:
                mend_lost_reference(tb)
            except BaseException:  # noqa: BLE001
                pass
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


# -- the pre-run check (guard/prerun.py) and the flight record's guard region --------------------------


class PreRun:
    """Runs ``prerun.check`` before a cell and, on refusal, replaces the cell by the refusal (main thread only).

    The refusal is raised by a one-shot AST transformer put in place for that cell alone, so ordinary
    cells pay one regular expression search and IPython's transformer list stays empty.
    """

    def __init__(self, ip: Any, guard: Guard) -> None:
        self.ip = ip
        self.guard = guard
        self.duckdb = prerun.DuckdbSizer()
        self.transformer: _Refuse | None = None

    def check(self, raw: str | None) -> None:
        """Size duckdb, note the native libraries the cell calls, and refuse it when it cannot fit."""
        if not raw or not prerun.triggered(raw):
            return
        try:
            code = self.ip.transform_cell(raw)  # magics and shell escapes become Python
        except Exception:
            code = raw
        try:
            room = prerun.headroom(self.guard)
            if room is None:
                return
            ns = self.ip.user_ns
            count = getattr(self.ip, "execution_count", None)
            if isinstance(count, int):
                count += _COUNT_OFFSET  # the recorder's numbering: IPython 9 counts the cell before pre_run_cell
            duck = self.duckdb.apply(code, ns, room[0])
            refusal = prerun.check(code, ns, room, self.ip)
            risks = prerun.native_libraries(code)
            if risks or duck:
                note_flight("risk", {"cell": count, "libraries": risks, "headroom_bytes": room[0],
                                     "budget_bytes": room[1], "duckdb_memory_limit": duck})
            if refusal is None:
                return
            evidence = refusal.evidence(count, raw)
            _LAST_REFUSAL[:] = [evidence]
            err = MemoryBudgetError(refusal.message())
            err.evidence = evidence  # type: ignore[attr-defined]
            self.transformer = _Refuse(err)
            self.ip.ast_transformers.append(self.transformer)
            note_flight("refusal", evidence)
        except Exception as exc:  # the check must never stop a cell it could not judge
            _say(f"kernel-sentinel: pre-run check skipped: {type(exc).__name__}: {exc}")

    def done(self) -> None:
        """Take the one-shot transformer out (also when the cell never got to it, e.g. a syntax error)."""
        if self.transformer is not None:
            try:
                self.ip.ast_transformers.remove(self.transformer)
            except ValueError:
                pass
            self.transformer = None


class _Refuse(ast.NodeTransformer):
    """Replaces the whole cell by ``raise <the refusal>``: nothing of it runs."""

    def __init__(self, err: MemoryBudgetError) -> None:
        self.err = err

    def visit(self, node: ast.AST) -> ast.AST:
        global _PENDING
        if not isinstance(node, ast.Module):
            return node
        _PENDING = self.err
        return ast.parse("__import__('kernel_sentinel.guard.extension', fromlist=['raise_refusal']).raise_refusal()")


_PENDING: MemoryBudgetError | None = None


def _count_offset() -> int:
    try:
        import IPython

        return -1 if IPython.version_info[0] >= 9 else 0
    except Exception:
        return 0


_COUNT_OFFSET = _count_offset()
# Callables the failure handler leaves for the next cell, run at its start and again at its end (main thread):
# what holds a failed duckdb result lets go at a moment that was not pinned down (measured: by the end of
# the next cell, not always at its start).
_NEXT_CELL: list[Any] = []
_AFTER_CELL: list[Any] = []


def _run_left(todo: list[Any], again: list[Any] | None = None) -> None:
    while todo:
        job = todo.pop()
        try:
            job()
        except Exception:
            pass
        if again is not None:
            again.append(job)


def last_refusal() -> dict[str, Any] | None:
    """Return the evidence of the pre-run check's last refusal in this kernel (None before any)."""
    return _LAST_REFUSAL[0] if _LAST_REFUSAL else None


_LAST_REFUSAL: list[dict[str, Any]] = []


def raise_refusal() -> None:
    """Raise the pre-run check's refusal for the cell being run (called from the cell that replaced it)."""
    global _PENDING
    err, _PENDING = _PENDING, None
    if err is not None:
        raise err.with_traceback(None)


def _show_refusal(shell: Any, err: MemoryBudgetError) -> None:
    """Show a pre-run refusal as one error: the cell's line and the message (no frames of ours)."""
    ev = getattr(err, "evidence", {}) or {}
    red, reset = "\x1b[0;31m", "\x1b[0m"
    lines = (ev.get("code") or "").splitlines()
    line = ev.get("line") or 1
    text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    where = f"Cell In[{ev['cell']}], line {line}" if ev.get("cell") is not None else f"line {line}"
    try:
        shell._showtraceback(MemoryBudgetError, err, [f"{where}: {text}" if text else where,
                                                      f"{red}MemoryBudgetError{reset}: {err}"])
    except BaseException:
        pass


# -- children (issue 10, item 7): the process that ate the memory is named -----------------------------

CHILD_SHARE = 0.25  # a child holding this share of the memory in use is named as the one that grew


def _child_that_grew(ev: dict[str, Any]) -> dict[str, Any] | None:
    """Return the child process that held the memory when the cell was stopped, or None when the kernel did.

    A child counts when it held at least a quarter of what was in use (its peak from the watchdog's scans,
    or, when it was the only child seen, the memory in use outside the kernel process).
    """
    try:
        child = children.child_report()
    except Exception:
        return None
    if not child:
        return None
    killed = bool(ev.get("child_killed"))
    if killed:
        # The OOM killer ended it (the evidence the watchdog stopped the cell for): named whatever its size
        # was when last seen, since it grew between two scans and took its memory with it.
        size = child.get("peak_bytes")
    else:
        used = ev.get("usage_at_interrupt_bytes") or ev.get("usage_bytes") or 0
        outside = max(0, int(used) - int(ev.get("rss_bytes") or used))
        size = max(int(child.get("peak_bytes") or 0), outside)
        if not used or size < max(64 << 20, CHILD_SHARE * used):
            return None
    named = {"pid": child["pid"], "command": child["command"], "rss_bytes": size, "alive": child.get("alive")}
    if killed:
        named.update(alive=False, killed=True)
    if child.get("pids"):
        named["pids"] = child["pids"]
    return named


class ChildrenWatch:
    """Per cell (main thread): tells the user when a child of the cell was stopped or OOM-killed for memory.

    A guard interrupt that reaches a shell command (``!cmd``) is passed on to the command by IPython and
    never becomes the cell's error; an OOM kill that picks a volunteering child leaves the kernel alive.
    In both cases the cell ends without a word from us unless we say one line here.
    """

    def __init__(self) -> None:
        self._guard: Guard | None = None  # whose OOM-kill counter (the kernel's own group) is read
        self._oom_before: int | None = None
        self._shell: str | None = None
        self._interventions = 0  # the guard's count at the cell's start: an error of this cell said it already

    def _oom_kills(self) -> int | None:
        """Return the kernel's memory group's OOM-kill counter, read through the guard's meter."""
        return self._guard.oom_kills() if self._guard is not None else None

    def start(self, raw: str | None = None, guard: Guard | None = None) -> None:
        children.forget_seen()  # a child of an earlier cell is not this cell's (a live one is read again)
        # A shell escape's command, for when the child is gone before its command line could be read.
        self._shell = next((ln.strip()[1:].strip() for ln in (raw or "").splitlines()
                            if ln.strip().startswith("!")), None) if raw and "!" in raw else None
        self._guard = guard
        self._oom_before = self._oom_kills()
        self._interventions = getattr(guard, "interventions", 0) or 0

    def finish(self, guard: Guard) -> None:
        try:
            line = self._line(guard)
        except Exception:
            line = None
        if line:
            _say(line)

    def _line(self, guard: Guard) -> str | None:
        pending = getattr(guard, "_pending", None)  # the watchdog's evidence of an interrupt nobody raised
        after = self._oom_kills() if self._oom_before is not None else None
        killed = after is not None and self._oom_before is not None and after > self._oom_before
        if not pending and not killed:
            return None
        last = getattr(guard, "last_failure", None) or {}
        if killed and last.get("child_killed") and getattr(guard, "interventions", 0) > self._interventions:
            return None  # the cell's MemoryBudgetError named the child the OOM killer ended
        ev = dict(pending or {})
        child = _child_that_grew(ev) if pending else None
        if child is None and killed:
            found = children.child_report()
            child = dict(found) if found else None
            if child is not None:
                child["rss_bytes"] = child.get("peak_bytes")
        command = str((child or {}).get("command") or "?")
        if child is not None and self._shell and (command in ("?", "") or command.startswith(children.FORKED)):
            child["command"] = self._shell  # seen only between fork and exec, or not at all: the cell's `!` line
        who = (f"{children.child_words(child)}, about {format_bytes(child['rss_bytes'])}"
               if child else "a child process of this cell")
        budget = f"the {format_bytes(ev.get('budget_bytes'))} budget" if ev.get("budget_bytes") else "the memory budget"
        if killed:
            return (f"kernel-sentinel: the OOM killer ended {who}: it ran out of {budget}. "
                    "The kernel and its variables are intact; give the command less data at once, or fewer workers.")
        used = format_bytes(ev.get("usage_at_interrupt_bytes") or ev.get("usage_bytes"))
        how = ""
        if child is not None and child.get("alive") and not child.get("pids"):
            how = f" ({children.stop_child(int(child['pid']))})"  # the interrupt did not end it: it would grow on
        return (f"kernel-sentinel: memory reached {used} of {budget}, so the cell was interrupted; it stopped {who}{how}. "
                "The kernel and its variables are intact; give the command less data at once.")


def note_flight(kind: str | None, data: dict[str, Any] | None = None) -> None:
    """Leave evidence in the flight record's ``guard`` region: a refusal or a risky native call, near a death.

    The autopsy reads it to tell a death that memory caused (polars aborting on a refused malloc) from
    a crash (``memory_exhausted``); the server reads its ``status`` (the guard's state; it counts
    MemoryBudgetErrors from the store's rows, ``fleet.kernel_side``). ``kind`` None writes the status alone (at load).
    Best effort: no recorder, no region, or a failed write changes nothing.
    """
    try:
        import time

        from ..autopsy import recorder

        rec = getattr(recorder, "_recorder", None)
        if rec is None:
            return
        if kind is not None:
            data = data or {}
            item = {k: data.get(k) for k in _FLIGHT_KEYS if data.get(k) is not None}
            if isinstance(item.get("code"), str):
                item["code"] = item["code"][:300]
            item["kind"], item["t"] = kind, round(time.time(), 3)
            _FLIGHT_ITEMS.append(item)
            del _FLIGHT_ITEMS[:-6]
        if rec.writer.write("guard", {"pid": os.getpid(), "items": _FLIGHT_ITEMS, "status": _flight_status()}):
            _PUBLISHED[0] = _budget_key(get_guard())
    except Exception:
        pass


_PUBLISHED: list[tuple[Any, ...] | None] = [None]  # the budget state last written to the flight record


def _budget_key(guard: Any) -> tuple[Any, ...] | None:
    """Return what the published status says about the budget, cheaply (the guard's cached state), to tell
    when it must be written again; None without a guard."""
    if guard is None:
        return None
    try:
        if not guard.enabled:
            return (False,)
        return (True, guard.budget_bytes, guard.budget_source)
    except Exception:  # a guard mid-close: nothing to publish
        return None


def _flight_status() -> dict[str, Any]:
    """Return the guard's state for the flight record (a subset of ``Guard.status()``)."""
    guard = get_guard()
    status = guard.status() if guard is not None else {}
    keys = ("enabled", "budget_bytes", "budget_source", "interrupt_at_bytes")
    return {k: status.get(k) for k in keys}


_FLIGHT_KEYS = ("trigger", "cell", "library", "libraries", "call", "requested_bytes", "headroom_bytes", "budget_bytes",
                "usage_bytes", "fence_bytes", "duckdb_memory_limit", "code", "thread", "child")
_FLIGHT_ITEMS: list[dict[str, Any]] = []


NEAR_BUDGET = 0.75  # a library's own out-of-memory error with this share of the budget in use is the budget's


def library_oom(value: BaseException, guard: Any = None) -> str | None:
    """Return the library whose own out-of-memory exception ``value`` is (duckdb's is no MemoryError), else None.

    Such an error at the budget is the guard's to explain: left to IPython, formatting its traceback needs
    memory the kernel does not have ("Unexpected exception formatting exception", a second traceback).
    duckdb's error is the budget's when malloc refused ("bad allocation": the fence) or when the kernel is
    near its budget (duckdb hit the memory_limit the guard gave it); otherwise duckdb hit a limit of the
    user's own and its error is left to IPython.
    """
    kind = type(value)
    if _is_duckdb_interrupt(value) and getattr(guard, "_pending", None) is not None:
        return "duckdb"  # the watchdog's SIGINT stopped the query: duckdb says only "Query interrupted"
    if kind.__name__ == "OutOfMemoryException" and kind.__module__.lstrip("_").startswith("duckdb"):
        if "bad allocation" in str(value):
            return "duckdb"
        try:
            status = guard.status() if guard is not None else {}
            budget, usage = status.get("budget_bytes"), status.get("usage_bytes")
            near = bool(budget and usage is not None and usage >= NEAR_BUDGET * budget)
        except Exception:
            near = False
        return "duckdb" if near else None
    if isinstance(value, MemoryError):
        module = kind.__module__.lstrip("_").split(".")[0]
        return module if module in ("pyarrow", "polars") else None
    return None


def release_duckdb(shell: Any, code: str) -> None:
    """Free what a failed duckdb query still holds: its connection keeps the partial result until its next statement.

    Measured: after a `fetchnumpy()` refused at the fence, 550 MiB stayed in use: duckdb keeps freed blocks
    in its buffer pool up to ``memory_limit``; lowering the limit for a moment makes it give them back.
    Only the default connection and connections the failed cell names are touched.
    """
    if "duckdb" not in sys.modules:
        return
    import gc

    gc.collect()  # the failed cell's frames and traceback form a cycle that holds the failed relation
    for conn in prerun.duckdb_connections(getattr(shell, "user_ns", {}), named_in=code):
        try:
            conn.execute("SELECT 1").fetchall()  # ends the failed result that the connection still holds
        except Exception:
            pass
        prerun.shrink_duckdb_pool(conn)
    try:
        from .reclaim import malloc_trim

        malloc_trim()  # duckdb's worker threads freed into their own malloc arenas
    except Exception:
        pass


SETTLE_SECONDS = 1.5  # a new duckdb database's threads touch their thread-local data 1.00-1.07 s after it starts


def start_duckdb() -> bool:
    """Start duckdb's default database now, at the end of the cell that imported duckdb; return True once it runs.

    Its threads then have their first second (``YoungThreads``) while the user reads the output, not at the start
    of the first cell that names duckdb, where the pre-run check started it before. The cost is that check's, one
    cell earlier: 60 ms and ~6 MiB private memory once (measured).
    """
    return bool(prerun.duckdb_connections({}))  # the pre-run check's own way to the default connection


class YoungThreads:
    """Makes a cell wait until the threads that appeared before it have run SETTLE_SECONDS, with duckdb loaded.

    A duckdb database's threads first touch duckdb's thread-local data (27 KiB each, which glibc's loader
    allocates on first use) about one second after it starts, idle or not (perf: 1.00-1.07 s, all nine threads).
    When that second fell inside a query filling the budget, the loader could not allocate at the fence and ended
    the kernel (exit code 127): 5 runs in 30 of the arrow-scipy-sklearn-duckdb killers on a loaded 2-core machine,
    0 in 29 once the database had run before the query. A database started by the cell before (``connect()``,
    the import cell's ``start_duckdb``) or by the pre-run check is seen as threads appearing; only a cell that
    starts within SETTLE_SECONDS of them waits (notebooks run by a program; a person is slower). Two listings of
    /proc/self/task per cell, only with duckdb loaded: at its end, so the wait counts from when threads appeared,
    and at the next one's start, after the pre-run check, which may start a database itself. Main thread only.
    """

    def __init__(self) -> None:
        self.started = False  # duckdb's default database was started by start_duckdb
        self._count = 0  # the threads counted at the last look
        self._appeared = 0.0  # when (monotonic) the count last went up

    def look(self) -> None:
        """Count the process's threads; note the moment when there are more than at the last look."""
        try:
            count = len(os.listdir("/proc/self/task"))
        except OSError:
            return
        if count > self._count:
            self._appeared = time.monotonic()
        self._count = count

    def settle(self) -> None:
        """Look again, then wait until the threads seen appearing have run SETTLE_SECONDS."""
        self.look()
        left = self._appeared + SETTLE_SECONDS - time.monotonic()
        if left > 0:
            time.sleep(left)


def interrupt_duckdb(shell: Any, code: str | None) -> None:
    """Ask every duckdb connection the kernel holds to stop its query: the guard's ``native_stop``.

    Runs on the watchdog thread right after its SIGINT: duckdb's result conversion never looks at SIGINT,
    its ``interrupt()`` only flags the query (harmless on an idle connection: the flag is reset when the
    next query starts).
    """
    duckdb = sys.modules.get("duckdb")
    if duckdb is None:
        return
    conns = prerun.duckdb_connections(getattr(shell, "user_ns", {}), default=False)
    if prerun.uses_duckdb(code):
        # Only a cell that names duckdb may run on its default connection; asking for it elsewhere would
        # create a database (worker threads, buffers) in the middle of a memory emergency.
        try:
            conns.append(duckdb.default_connection())
        except Exception:
            pass
    for conn in conns:
        try:
            conn.interrupt()
        except Exception:
            pass


def _library_stopped(value: BaseException, guard: Any) -> bool:
    """Return True for a library's own KeyboardInterrupt raised because the guard interrupted the cell.

    polars turns SIGINT into a bare ``KeyboardInterrupt`` of its own (its query stops: the guard's stop worked),
    before the guard's signal handler can raise ``GuardInterrupt``; shown as it came, the user saw a
    KeyboardInterrupt they never sent, with no word of memory.
    """
    if not isinstance(value, KeyboardInterrupt) or isinstance(value, GuardInterrupt) or guard is None:
        return False
    try:
        return bool(guard.enabled and guard.stopped_a_library())
    except Exception:
        return False


def _raised_inside(tb: Any, library: str) -> bool:
    """Return True when the guard's interrupt was raised inside a call into ``library`` (polars runs Python's
    signal handlers while its query runs, and stops with the handler's exception): the remedy is that library's."""
    inner = ""  # the innermost frame's module that is not the guard's (its signal handler raised the interrupt)
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and not name.startswith("kernel_sentinel"):
            inner = name
        tb = tb.tb_next
    return inner.split(".")[0] == library


def _stopped_library_name(guard: Any) -> str | None:
    """Return the library the running cell calls that turns SIGINT into its own KeyboardInterrupt (polars), or None."""
    cell = getattr(guard, "_cell", None)
    code = getattr(cell, "code", None) or ""
    return "polars" if "polars" in prerun.native_libraries(code) else None


def _is_duckdb_interrupt(value: BaseException) -> bool:
    """Return True for duckdb's answer to an interrupt: "Query interrupted" (SIGINT) or InterruptException."""
    duckdb = sys.modules.get("duckdb")
    interrupt = getattr(duckdb, "InterruptException", None) if duckdb is not None else None
    if isinstance(interrupt, type) and isinstance(value, interrupt):
        return True  # "INTERRUPT Error: Interrupted!" after interrupt_duckdb
    return isinstance(value, RuntimeError) and str(value).startswith("Query interrupted")


def _library_loaded(ip: Any, name: str) -> None:
    """Take duckdb's exceptions into the guard's handler once duckdb's extension module is loaded.

    At its load (the import hook), so that ``import duckdb`` and a query filling the budget in one cell end
    with the guard's one error too: a cell later, duckdb's own "Out of Memory Error" had been shown as it came.
    """
    if not ("_duckdb" in sys.modules or "duckdb" in sys.modules) or name.lstrip("_").split(".")[0] != "duckdb":
        return  # (the cheap test first: this runs before every cell)
    if RuntimeError not in tuple(getattr(ip, "custom_exceptions", ())):
        ip.set_custom_exc(_custom_exceptions(), _custom_exc)  # duckdb's OOM error is no MemoryError


def _custom_exceptions() -> tuple[type, ...]:
    """Return the exception classes the guard's handler takes: memory errors, interrupts, duckdb's OOM.

    SystemError is the guard's only when ``recursion.refused_frame`` says so. With duckdb loaded, RuntimeError
    too: duckdb answers the watchdog's SIGINT with "Query interrupted" (a RuntimeError). Any other one is
    shown exactly as IPython would (``_standard``).
    """
    kinds: list[type] = [MemoryError, KeyboardInterrupt, SystemError]  # SystemError: see recursion.refused_frame
    duckdb = sys.modules.get("_duckdb") or sys.modules.get("duckdb")  # the classes live in _duckdb, loaded first
    if duckdb is not None:
        for name in ("OutOfMemoryException", "InterruptException"):
            kind = getattr(duckdb, name, None)
            if isinstance(kind, type) and not issubclass(kind, (MemoryError, RuntimeError)):
                kinds.append(kind)
        kinds.append(RuntimeError)
    return tuple(kinds)


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


def _note_recursion(evidence: dict[str, Any], recursion: Any) -> None:
    """Add a recursion counted on the traceback to the evidence: a lower bound of its depth.

    The traceback loses the entries that could not be allocated while a recursion unwound at the fence.
    """
    if recursion is not None:
        evidence["recursion_depth"] = recursion.depth
        evidence["recursion_function"] = recursion.function
        evidence["recursion_depth_at_least"] = True


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
    """Return the explained record (``GuardEvidence``) and its text/plain + text/html bundle (None, None without it)."""
    try:
        from ..records import GuardEvidence
        from ..report.memory_error import render
        from .explain import explain_memory_error
        from .namespace import namespace_report
    except ImportError:
        return None, None
    try:
        from ..autopsy.group_budget import room_evidence

        evidence = {**evidence, **room_evidence()}  # room above the kernel's own group, if it has one
        explanation = explain_memory_error(evidence, namespace_report(shell))
        record = GuardEvidence.explained(evidence, explanation.to_dict())  # all the renderers read
    except Exception as exc:
        _say(f"kernel-sentinel: could not explain the memory error: {type(exc).__name__}: {exc}")
        return None, None
    try:
        return record, render(record)
    except Exception as exc:
        _say(f"kernel-sentinel: could not render the memory error: {type(exc).__name__}: {exc}")
        return record, None


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
