"""Verdict + evidence -> the ``why`` report (DESIGN.md's JSON contract): summary, remedy, cell, memory. Pure.

The report is what every renderer (terminal, notebook, JSON) shows and what the store keeps; it names
the evidence it rests on and what could not be learned, so a degraded explanation says so.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..sizes import format_bytes
from .classify import Verdict
from .evidence import Evidence, signal_name
from .flight import WALK_LIMIT


def explain(ev: Evidence, verdict: Verdict) -> dict[str, Any]:
    """Return the why-report of one death: DESIGN.md's keys plus ``scope``/``signal``/``disk_full``/``evidence``."""
    cell = _cell(ev, verdict)
    memory = _memory(ev)
    where = _where(cell, verdict)
    report: dict[str, Any] = {
        "kernel_id": ev.kernel_id,
        "pid": ev.pid,
        "died_at": ev.died_at,
        "died_at_iso": _iso(ev.died_at),
        "cause": verdict.cause,
        "summary": _summary(ev, verdict, memory, where),
        "headline": _headline(verdict, memory),
        "exit": _exit(ev, verdict),
        "cell": cell,
        "memory": memory,
        "remedy": _remedy(verdict, memory, guard=(ev.flight.get("meta") or {}).get("guard")),
        "memory_exhausted": verdict.memory_exhausted,
    }
    if verdict.memory_exhausted and verdict.cause != "oom_kill":
        report["summary"] = _memory_summary(verdict, memory, where)
        report["headline"] = f"out of memory: {_library_name(verdict.memory_library) or 'native code'} {verdict.cause}"
    if verdict.memory_exhausted:
        report["remedy"] = _memory_remedy(verdict, report["remedy"])
    if verdict.scope:
        report["scope"] = verdict.scope
    if verdict.signal:
        report["signal"] = verdict.signal
    if verdict.cause == "bus_error":
        report["disk_full"] = verdict.disk_full is not None
        if verdict.disk_full:
            report["disk"] = verdict.disk_full
    if verdict.cause == "exit":
        report["code"] = verdict.exit_code
    if verdict.native_module:
        report["native_module"] = verdict.native_module
    if verdict.native_library:
        report["native_library"] = verdict.native_library
    report["evidence"] = {
        "source": ev.source,
        "proof": verdict.proof,
        "oom_kills": None
        if ev.oom_kills_after is None
        else {"before": ev.oom_kills_before, "after": ev.oom_kills_after},
        "kernel_log": (ev.kernel_log or {}).get("lines") or [],
        "faulthandler": _fault_excerpt(verdict),
        "flight_record": "ok" if ev.flight.get("cell") or ev.flight.get("memory") else "missing",
        "line_source": verdict.line_source,
        "notes": list(ev.notes),
    }
    if verdict.memory_exhausted:
        report["evidence"]["memory"] = {"library": verdict.memory_library, "proof": verdict.memory_proof}
    return report


_LIBRARY_NAMES = {"polars": "polars", "pandas": "pandas' C parser", "zmq": "libzmq (the kernel's messaging library)",
                  "duckdb": "duckdb"}
RESTORE = "`%sentinel restore` in the restarted kernel brings back the variables of the last checkpoint."


def _library_name(library: str | None) -> str | None:
    return _LIBRARY_NAMES.get(library or "", library)


def _memory_summary(v: Verdict, memory: dict[str, Any], where: str) -> str:
    """Return the summary of a native death that memory caused: memory first, then the library and the signal."""
    budget = memory.get("budget_bytes") or (memory.get("cgroup") or {}).get("limit_bytes")
    of = f" of the {format_bytes(budget)} budget" if budget else ""
    who = _library_name(v.memory_library) or (f"native code ({v.native_module})" if v.native_module else "native code")
    how = {"abort": "aborted the kernel (SIGABRT)", "segfault": "crashed the kernel (SIGSEGV)",
           "exit": f"ended the kernel (exit code {v.exit_code}: one of its threads could not get memory for its "
                   "thread-local data, and the C library's loader ends the process then)"}.get(v.cause, f"ended the kernel ({v.signal})")
    why = "; ".join(v.memory_proof)
    return (
        f"Out of memory: {who} {how} {where}, when an allocation beyond what was left{of} was refused. "
        f"Memory ran out, not a bug in the library ({why})."
    )


def _memory_remedy(v: Verdict, fallback: str) -> str:
    """Return the remedy of a death memory caused: the library's own way to use less memory, then the restore."""
    from ..guard.explain import library_remedy

    own = library_remedy(v.memory_library)
    if v.cause == "oom_kill":
        lead = own[1] if own else fallback
    else:
        lead = own[1] if own else "Work in smaller pieces (chunks, a sample first), or give the kernel more memory."
    return f"{lead} {RESTORE}"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def _exit(ev: Evidence, verdict: Verdict) -> dict[str, Any] | None:
    if ev.signal is not None:
        return {"signal": signal_name(ev.signal)}
    if ev.exit_code is not None:
        return {"code": ev.exit_code}
    if ev.inferred_signal is not None:
        return {"signal": signal_name(ev.inferred_signal), "inferred": True}
    return None


def _cell(ev: Evidence, verdict: Verdict) -> dict[str, Any] | None:
    cell = ev.flight.get("cell")
    if not cell:
        return None
    return {
        "execution_count": cell.get("execution_count"),
        "code": cell.get("code"),
        "line": verdict.line,
        "running": cell.get("finished") is None,
        "started": cell.get("started"),
    }


def _memory(ev: Evidence) -> dict[str, Any]:
    mem = ev.flight.get("memory") or {}
    cg = mem.get("cgroup") or {}
    peaks = {
        "process (wait4 ru_maxrss)": ev.ru_maxrss_bytes,
        "process (VmHWM)": mem.get("peak_rss_bytes"),
    }
    samples = mem.get("samples") or []
    peak_source, peak = None, None
    for name, value in peaks.items():
        if value is not None and (peak is None or value > peak):
            peak_source, peak = name, value
    out: dict[str, Any] = {
        "budget_bytes": mem.get("budget_bytes"),
        "peak_bytes": peak,
        "source": mem.get("source"),
        "peak_source": peak_source,
        "last_rss_bytes": samples[-1][1] if samples else mem.get("rss_bytes"),
        "last_sample_at": samples[-1][0] if samples else mem.get("t"),
    }
    if cg:
        out["cgroup"] = {k: cg.get(k) for k in ("path", "limit_bytes", "usage_bytes", "peak_bytes")}
    if mem.get("depth"):
        out["recursion_depth"] = mem["depth"]
        out["recursion_depth_at_least"] = mem["depth"] >= WALK_LIMIT  # the sampler stops counting there
    return out


def _where(cell: dict[str, Any] | None, verdict: Verdict) -> str:
    if cell is None:
        return "(no flight record: the running cell is not known)"
    count = cell.get("execution_count")
    label = f"cell [{count}]" if count is not None else "a cell"
    line = f", line {verdict.line}" if verdict.line is not None else ""
    if cell.get("running"):
        return f"while {label}{line} was running"
    return f"after {label} had finished (the kernel was idle)"


def _summary(ev: Evidence, v: Verdict, memory: dict[str, Any], where: str) -> str:
    budget = memory.get("budget_bytes")
    peak = memory.get("peak_bytes")
    if v.cause == "oom_kill":
        limit = (memory.get("cgroup") or {}).get("limit_bytes") or budget
        if v.scope == "cgroup":
            what = f"its memory cgroup reached its limit of {format_bytes(limit)}" if limit else "its memory cgroup hit its limit"
        else:
            what = "the whole machine ran out of memory"
        tail = f" Peak memory of the kernel: {format_bytes(peak)}." if peak else ""
        if memory.get("recursion_depth"):
            more = "at least " if memory.get("recursion_depth_at_least") else ""
            tail += f" The main thread was {more}{memory['recursion_depth']} calls deep: a runaway recursion."
        return f"Out of memory: the OS's OOM killer ended the kernel (SIGKILL) {where}, because {what}.{tail}"
    if v.cause == "external_kill":
        by = ""
        if ev.signal is None and ev.source == "witness":
            by = " (sent to its supervisor process, which took the kernel along)"
        elif ev.signal is None:
            by = " (inferred)"
        not_oom = " It was not the OOM killer." if v.signal == "SIGKILL" and ev.oom_kills_after is not None else ""
        return f"Something outside the kernel sent it {v.signal}{by} {where}.{not_oom}"
    native = f" ({v.native_module})" if v.native_module else ""
    if v.cause == "segfault":
        return f"The kernel crashed with a segmentation fault (SIGSEGV) in native code{native} {where}."
    if v.cause == "abort":
        return f"Native code{native} aborted the kernel (SIGABRT) {where}."
    if v.cause == "bus_error":
        if v.disk_full:
            d = v.disk_full
            return (
                f"The kernel died of a bus error (SIGBUS) {where}: it wrote to a memory-mapped file "
                f"({d['path']}) on {d['mount']}, whose filesystem is full "
                f"({format_bytes(d['free_bytes'])} free of {format_bytes(d['total_bytes'])})."
            )
        return f"The kernel died of a bus error (SIGBUS){native} {where}: a memory-mapped file was truncated or unreadable."
    if v.cause == "illegal_instruction":
        return f"The kernel executed an illegal CPU instruction (SIGILL){native} {where}."
    if v.cause == "fpe":
        return f"The kernel died of an arithmetic fault (SIGFPE, e.g. integer division by zero){native} {where}."
    if v.cause == "exit":
        return f"The kernel process exited with code {v.exit_code} {where}: something called exit (os._exit, or a library)."
    return f"The kernel died {where}, but no exit status was seen, so the cause is unknown."


def _headline(v: Verdict, memory: dict[str, Any]) -> str:
    """Return a few words for tables: the cause and its one qualifier."""
    mod = f" in {v.native_module}" if v.native_module else ""
    if v.cause == "oom_kill":
        limit = (memory.get("cgroup") or {}).get("limit_bytes") if v.scope == "cgroup" else None
        return f"OOM kill ({v.scope}{', limit ' + format_bytes(limit) if limit else ''})"
    if v.cause == "external_kill":
        return f"{v.signal} from outside"
    if v.cause == "bus_error":
        return "bus error: memmap's filesystem full" if v.disk_full else f"bus error{mod}"
    if v.cause == "exit":
        return f"exit code {v.exit_code}"
    names = {"segfault": "segfault", "abort": "abort", "illegal_instruction": "illegal instruction", "fpe": "arithmetic fault"}
    return names.get(v.cause, v.cause) + mod


def _remedy(v: Verdict, memory: dict[str, Any], guard: bool | None = None) -> str:
    budget = memory.get("budget_bytes")
    b = f" (the budget was {format_bytes(budget)}, set by {memory.get('source')})" if budget else ""
    mod = v.native_module or "the extension module"
    if v.cause == "oom_kill" and memory.get("recursion_depth_at_least"):
        return "Give the recursion a base case that is reached (or make it a loop); a raised sys.setrecursionlimit lets it eat all memory."
    if v.cause == "oom_kill" and guard:
        return (
            "The guard was on but could not stop this allocation (one large C call, or memory used outside the "
            f"kernel's own process): split the work into smaller steps or chunks{b}."
        )
    if v.cause == "oom_kill":
        return (
            "Keep the guard on (do not set KERNEL_SENTINEL_GUARD=0) so such a cell raises MemoryError instead of "
            f"killing the kernel; then process the data in chunks or with smaller dtypes{b}."
        )
    if v.cause == "external_kill":
        if v.signal == "SIGKILL":
            return "Find what sent SIGKILL (kill -9, a job scheduler, a container runtime or memory watchdog) and check its logs."
        return f"Find what sent {v.signal} (kill, a scheduler's time limit, a system shutdown) and check its logs."
    if v.cause == "segfault" and v.native_module == "ctypes":
        return "The cell passed an invalid pointer, size or signature to ctypes: check addresses, buffer sizes and argtypes/restype."
    if v.cause == "segfault":
        return f"Update {mod} and check what the cell passes to it (pointers, dtypes, shapes); rerun with the smallest input that still crashes."
    if v.cause == "abort":
        return f"A C library failed an assertion or hit a fatal error: look for its message in the server log and update {mod}."
    if v.cause == "bus_error":
        if v.disk_full:
            d = v.disk_full
            return (
                f"Free space on {d['mount']} or create the memmap on a filesystem with room for the whole file "
                f"({format_bytes(d['file_bytes'])}); `df -h {d['mount']}` shows what is free."
            )
        return "Check that no other process truncated the mapped file and that its device is healthy."
    if v.cause == "illegal_instruction":
        return f"{mod} was built for a newer CPU than this one: reinstall it built for this machine."
    if v.cause == "fpe":
        return f"Check for integer division by zero in what the cell passes to {mod}."
    if v.cause == "exit":
        return "Find the call to exit (os._exit, or a library calling exit()); in a notebook raise an exception instead."
    return "Run the kernel with the sentinel kernelspec (`kernel-sentinel install`) so the next death is seen."


def _fault_excerpt(v: Verdict) -> list[str]:
    if not v.fault:
        return []
    lines = [f"Fatal Python error: {v.fault.get('error')}"]
    lines += [f'  File "{f["file"]}", line {f["line"]} in {f["function"]}' for f in v.fault.get("frames", [])[:8]]
    return lines
