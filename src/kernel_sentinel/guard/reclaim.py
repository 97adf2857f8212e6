"""Give back the memory a failed cell, or old outputs, still hold: the references users cannot see.

After a cell fails, its frames stay alive through the traceback, and with them every local variable of
every function it was in. Measured in a real ipykernel (IPython 9, Python 3.11): a function-local 350 MB
list survived ``gc.collect()``, clearing ``sys.last_*`` and ``traceback.clear_frames``, because
IPython's ``AutoFormattedTB`` keeps the last traceback in ``ip.InteractiveTB.tb`` (only its debugger
hook deletes it). ``clear_frames`` alone is not enough on 3.11 either: once a traceback formatter has
read ``frame.f_locals``, that snapshot dict holds the locals and ``frame.clear()`` leaves it (CPython
gh-113939). And memory that was freed stays in the process until glibc is asked to return it
(``malloc_trim(0)``): without it, RSS did not move at all.

``malloc_trim`` does not return the free top of glibc's other arenas (the threads' ones), and glibc's dynamic
thresholds let those tops grow: after a deleted list of 8 MB arrays, arrays below 8 MiB come from the arenas
and an arena keeps up to 16 MiB free on top. The soak's first 40 cells (seed 6) left 200 MiB free in them,
resident, with every variable deleted (RSS 288 -> 538 MiB; 434 MiB with the thresholds below). So after the
first memory error the thresholds are fixed low for the rest of the kernel.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

from ..memory.linux import libc_function

_CO_OPTIMIZED = 0x1


@dataclass(frozen=True)
class FreedReport:
    """What ``free_hidden`` dropped and what the process's RSS did: before, after, freed."""

    rss_before: int | None
    rss_after: int | None
    dropped: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int | None:
        if self.rss_before is None or self.rss_after is None:
            return None
        return self.rss_before - self.rss_after

    def text(self) -> str:
        """Return the one-paragraph summary ``%sentinel free`` prints."""
        from ..sizes import format_bytes

        what = "; ".join(self.dropped) if self.dropped else "nothing hidden was holding memory"
        freed = self.freed_bytes
        change = (
            f"RSS {format_bytes(self.rss_before)} -> {format_bytes(self.rss_after)} "
            f"({'freed ' + format_bytes(freed) if freed is not None and freed > 0 else 'nothing returned to the OS'})"
        )
        return f"Dropped: {what}.\n{change}."


def rss_bytes() -> int | None:
    """Return this process's resident set size from /proc/self/statm (psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:
            return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


# Loaded once at import: the guard's watchdog calls them from its tick, where a library lookup does not belong.
_LINUX = sys.platform.startswith("linux")
_malloc_trim = libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int) if _LINUX else None
# mallinfo2 takes ~25 us in a kernel; with the GIL given up, a cell's start waited a mean ~450 us for it back.
# It never waits on Python: a thread holding an arena's lock is inside malloc, which does not take the GIL.
_mallinfo2 = libc_function("mallinfo2", [], _MallInfo2, keep_gil=True) if _LINUX else None
_mallopt = libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int) if _LINUX else None
_open_memstream = (
    libc_function("open_memstream", [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p, keep_gil=True) if _LINUX else None
)
_malloc_info = libc_function("malloc_info", [ctypes.c_int, ctypes.c_void_p], ctypes.c_int, keep_gil=True) if _LINUX else None
_fclose = libc_function("fclose", [ctypes.c_void_p], ctypes.c_int, keep_gil=True) if _LINUX else None
_free = libc_function("free", [ctypes.c_void_p], None, keep_gil=True) if _LINUX else None
_ASPACE = re.compile(rb'<aspace type="(total|mprotect)" size="(\d+)"/>')
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
# After a memory error: blocks from 4 MiB are mapped on their own, so freeing one unmaps it (RSS and VmData
# both down, which the fence sees), and an arena's free top over 8 MiB is given back when something is freed
# into it. glibc's defaults start at 128 KiB for both, then rise up to 32 and 64 MiB as big blocks are freed.
# 1 and 4 MiB gave the soak's first 40 cells the same RSS (437 vs 434 MiB) but made a loop of 1.5 MB
# temporaries ~7x slower (each one mapped and faulted in afresh); with 4 and 8 MiB it ran as fast as before.
MMAP_THRESHOLD_AFTER_ERROR = 4 << 20
TRIM_THRESHOLD_AFTER_ERROR = 8 << 20
_USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# The same three as tunables (the launcher's own ``arena_max`` is not the user's say on thresholds).
_USER_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad")
_thresholds_fixed = False


def malloc_free_bytes() -> int | None:
    """Return the bytes glibc's arenas hold free (resident or handed back), None where it cannot say.

    malloc hands these out again without the address space (VmData) growing, so a cell reusing them is
    unseen by the fence (~25 us in a kernel: it walks every arena's bins, so it is asked once per cell at most).
    """
    if _mallinfo2 is None:
        return None
    try:
        return int(_mallinfo2().fordblks)
    except Exception:
        return None


def heap_slack_bytes() -> int | None:
    """Return the bytes the threads' arenas' heaps shrank by and keep writable, None where glibc cannot say.

    A heap of a thread's arena (64 MiB of address space each) that shrinks gives its pages back with
    MADV_DONTNEED and stays writable: it leaves malloc's counts (mallinfo2 says nothing of it) but not VmData,
    and growing again into it moves no VmData either, so the fence cannot see it. The main thread lands in such
    an arena once the fence refuses it one allocation (glibc retries in another arena and stays there): after a
    loop of 1.6 MB arrays stopped at the fence and deleted, 62 MiB of a 384 MiB group were such space, malloc
    said 1 MiB was free, and the next loop took it back before the watchdog's first tick and reached the OOM
    killer (4 of 12 kernels with the watchdog at 0.1 s). ``malloc_info``'s totals say it: the heaps' writable
    size (``aspace mprotect``) less their size now (``aspace total``); ~40 us warm, asked when mallinfo2 is.
    Nothing a trim could give back: those pages are no longer resident.
    """
    if _malloc_info is None or _open_memstream is None:
        return None
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    try:
        stream = _open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not stream:
            return None
        try:
            _malloc_info(0, stream)
        finally:
            _fclose(stream)
        try:
            text = ctypes.string_at(buf.value, size.value) if buf.value else b""
        finally:
            _free(buf)
        totals = text[text.rfind(b"</heap>") :]
        sizes = dict(_ASPACE.findall(totals))
        return max(0, int(sizes[b"mprotect"]) - int(sizes[b"total"]))
    except Exception:
        return None


_trim_window: tuple[float, float] = (0.0, 0.0)  # (start, end) of the last malloc_trim(); end is inf while it runs


def trim_window() -> tuple[float, float]:
    """Return when the last ``malloc_trim()`` ran (monotonic start and end; end is infinite while it runs).

    The meters forgive pages handed back (RSS down, VmData not) at once only when this process's own trim
    handed them back: the same figures come from an array unmapped and a fresh one mapped between two
    readings (pandas building DataFrames from arrays), and that fresh array, forgiven as "handed back", was
    filled unseen by the fence: 03.12's four DataFrames reached the OOM killer (3 of 6 kernels beside two
    CPU burners; the CI runs of 2026-11-30).
    """
    return _trim_window


def malloc_trim() -> bool:
    """Ask glibc (and Arrow's allocator, when loaded) to return freed memory to the OS; return whether glibc
    could be asked.

    pandas 3 keeps text in Arrow buffers, which Arrow's own pool (mimalloc or jemalloc) keeps after they are
    freed: a deleted 3 M-row string column left 250 MiB resident that glibc's trim does not see, and the
    guard counted it as in use. ``release_unused`` gives it back (measured 353 -> 107 MiB).
    """
    global _trim_window
    started = time.monotonic()
    _trim_window = (started, float("inf"))
    try:
        return _trim()
    finally:
        _trim_window = (started, time.monotonic())


def _trim() -> bool:
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        try:
            arrow.default_memory_pool().release_unused()
        except Exception:
            pass
    if _malloc_trim is None:
        return False
    try:
        _malloc_trim(0)
        return True
    except Exception:
        return False


def fix_malloc_thresholds() -> bool:
    """Return whether glibc's mmap and trim thresholds are now fixed low, so freed memory leaves the arenas.

    Done once a kernel, after a memory error (or ``%sentinel free``), never on a normal cell's path. Left alone
    when the user set their own (``MALLOC_*_`` or a threshold tunable) and off glibc. Cost: each
    block from 4 MiB is an ``mmap`` of its own, faulted in afresh instead of reusing freed heap: a loop of
    ``np.ones(n); a += 1`` took 1.1-1.5 -> 2.3-3.2 ms for 8 MB and 3.9 -> 9.4-10 ms for 31 MB (glibc reuses
    freed heap up to 32 MiB once its thresholds rose); 1.5 MB ones as before. From 32 MiB nothing changes.
    """
    global _thresholds_fixed
    if _thresholds_fixed or _mallopt is None:
        return _thresholds_fixed
    try:
        tunables = os.environ.get("GLIBC_TUNABLES", "")
        if any(os.environ.get(name) for name in _USER_MALLOC_ENV) or any(t in tunables for t in _USER_MALLOC_TUNABLES):
            return False
        # The trim threshold first: mallopt turns glibc's dynamic thresholds off, and the mmap threshold
        # can no longer rise past the arenas' new trim line.
        _thresholds_fixed = bool(_mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_AFTER_ERROR)) and bool(
            _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_AFTER_ERROR)
        )
    except Exception:
        return False
    return _thresholds_fixed


def _exception_chain(value: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while value is not None and len(chain) < 20 and all(value is not c for c in chain):
        chain.append(value)
        value = value.__cause__ or value.__context__
    return chain


def clear_traceback(tb: types.TracebackType | None) -> int:
    """Drop the locals of every finished frame in ``tb``; return how many frames were cleared.

    ``traceback.clear_frames`` plus the ``f_locals`` snapshot it misses on 3.11. Frames still executing
    (the kernel's own, above the cell) raise RuntimeError on ``clear()`` and are left alone; module-level
    frames keep their ``f_locals``, which is the user namespace itself.
    """
    cleared = 0
    seen = 0
    while tb is not None and seen < 1000:
        seen += 1
        frame = tb.tb_frame
        optimized = bool(frame.f_code.co_flags & _CO_OPTIMIZED)
        snapshot = None
        if optimized:
            try:
                snapshot = frame.f_locals  # the dict a formatter may have made; cheap for a finished frame
            except Exception:
                snapshot = None
        try:
            frame.clear()
        except RuntimeError:  # still executing
            tb = tb.tb_next
            continue
        if optimized and isinstance(snapshot, dict) and snapshot is not frame.f_globals:
            snapshot.clear()
        cleared += 1
        tb = tb.tb_next
    return cleared


def _post_execute_once(ip: Any) -> None:
    """Collect and trim again once the failed cell has unwound (its caller still held the traceback), and trim
    once more after the next cell: that is where users delete what the failed cell left (a trim only, no gc:
    30-50 us measured in a plain process).
    """
    left = [2]

    def again() -> None:
        try:
            left[0] -= 1
            if left[0] <= 0:
                ip.events.unregister("post_execute", again)
            else:
                gc.collect()
            malloc_trim()
        except Exception:  # never into the cell's output; the next memory error trims again
            pass

    try:
        ip.events.register("post_execute", again)
    except Exception:  # no events (a plain Python caller): the immediate collect has to do
        pass


def release_after_failure(ip: Any, etype: type | None, value: BaseException | None, tb: Any) -> None:
    """Release what keeps a failed cell's memory alive: frame locals, ``sys.last_*``, IPython's traceback.

    Call it after the error has been formatted (the traceback's frames lose their locals here), from the
    guard's exception handler. Never raises: this runs when memory is short.
    """
    try:
        tracebacks = [tb]
        for exc in _exception_chain(value):
            tracebacks.append(exc.__traceback__)
        for holder in (getattr(ip, "InteractiveTB", None), getattr(ip, "SyntaxTB", None)):
            tracebacks.append(getattr(holder, "tb", None))
        tracebacks.append(getattr(sys, "last_traceback", None))
        last = getattr(ip, "last_execution_result", None)
        if last is not None and getattr(last, "error_in_exec", None) is not None:
            tracebacks.append(last.error_in_exec.__traceback__)
        seen: list[Any] = []
        for t in tracebacks:
            if t is not None and all(t is not s for s in seen):
                seen.append(t)
                clear_traceback(t)
        del tracebacks, seen
        _drop_last_exception(ip)
        gc.collect()
        fix_malloc_thresholds()
        malloc_trim()
        _post_execute_once(ip)
    except Exception:  # the failure path must not fail; worst case some memory stays until the next cell
        pass


def _drop_last_exception(ip: Any) -> list[str]:
    dropped = []
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if getattr(sys, name, None) is not None:
            setattr(sys, name, None)
            dropped.append(f"sys.{name}")
    for holder_name in ("InteractiveTB", "SyntaxTB"):
        holder = getattr(ip, holder_name, None)
        if getattr(holder, "tb", None) is not None:
            holder.tb = None
            dropped.append(f"IPython's {holder_name}.tb")
    return dropped


def free_hidden(ip: Any) -> FreedReport:
    """Drop every hidden reference (output cache, ``_``/``__``/``___``, last tracebacks), collect, trim.

    What ``%sentinel free`` does; returns RSS before and after and a line per thing dropped, sized from a
    namespace report taken first.
    """
    from ..sizes import format_bytes
    from .namespace import namespace_report

    before = rss_bytes()
    dropped: list[str] = []
    try:
        report = namespace_report(ip, n=0)
        sizes = {h.name: h for h in report.hidden}
    except Exception:
        sizes = {}

    def label(name: str, text: str) -> str:
        h = sizes.get(name)
        return f"{text} ({format_bytes(h.exclusive_bytes)} only there)" if h and h.exclusive_bytes else text

    user_ns = getattr(ip, "user_ns", {}) or {}
    oh = user_ns.get("_oh")
    n_out = len(oh) if isinstance(oh, dict) else 0
    displayhook = getattr(ip, "displayhook", None)
    flushed = False
    if displayhook is not None and getattr(displayhook, "do_full_cache", False):
        try:
            displayhook.flush()  # what %reset out does: Out/_oh, _N, _, __, ___
            flushed = True
        except Exception:
            flushed = False
    if not flushed and isinstance(oh, dict):
        oh.clear()
    # Also after flush(): it leaves user_ns's _, __, ___ alone whenever builtins has a ``_`` (gettext,
    # ipykernel), and that is where the last three displayed DataFrames stayed alive.
    hidden_ns = getattr(ip, "user_ns_hidden", {}) or {}
    for ns in (user_ns, hidden_ns):
        for key in [k for k in ns if k[:1] == "_" and k[1:].isdigit()]:
            ns.pop(key, None)
        for name in ("_", "__", "___"):
            if name in ns and not (isinstance(ns[name], str) and ns[name] == ""):
                ns[name] = ""
    if displayhook is not None:
        for attr in ("_", "__", "___"):
            if getattr(displayhook, attr, "") is not None:
                try:
                    setattr(displayhook, attr, "")
                except Exception:
                    pass
    if n_out:
        dropped.append(label("Out", f"Out ({n_out} result{'s' if n_out != 1 else ''})"))
    if "_ / __ / ___" in sizes:
        dropped.append(label("_ / __ / ___", "_, __, ___"))
    # The previous cell's ExecutionResult holds its displayed value too.
    last = getattr(ip, "last_execution_result", None)
    if last is not None and getattr(last, "result", None) is not None:
        try:
            last.result = None
        except Exception:
            pass
    had_tb = "last traceback" in sizes
    for t in (
        getattr(sys, "last_traceback", None),
        getattr(getattr(ip, "InteractiveTB", None), "tb", None),
    ):
        if t is not None:
            clear_traceback(t)
    tb_dropped = _drop_last_exception(ip)
    if had_tb or tb_dropped:
        dropped.append(label("last traceback", "the last traceback and its frames"))
    gc.collect()
    fix_malloc_thresholds()
    malloc_trim()
    return FreedReport(rss_before=before, rss_after=rss_bytes(), dropped=dropped)
