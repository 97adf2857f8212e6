"""Evidence -> cause: a pure function, tested on evidence captured from real deaths.

The causes are DESIGN.md's: ``oom_kill`` (scope cgroup|system), ``external_kill`` (signal), ``segfault``,
``abort``, ``bus_error`` (disk_full), ``illegal_instruction``, ``fpe``, ``exit`` (code), ``unknown``.
An OOM kill needs proof: the cgroup's OOM-kill counter moved, or the kernel log names this pid in this
memcg. SIGKILL alone is never called OOM.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from typing import Any

from .evidence import Evidence, signal_name

_FATAL = {
    signal.SIGSEGV: "segfault",
    signal.SIGABRT: "abort",
    signal.SIGBUS: "bus_error",
    signal.SIGILL: "illegal_instruction",
    signal.SIGFPE: "fpe",
}
DISK_FULL_BYTES = 1 << 20  # less than this free (or under 1%) is a full filesystem for a memmap


@dataclass
class Verdict:
    """The classification: the cause, its qualifiers, and where in the user's code it happened."""

    cause: str
    scope: str | None = None  # oom_kill: "cgroup" | "system"
    signal: str | None = None  # external_kill (and every signal death): "SIGKILL", ...
    exit_code: int | None = None
    disk_full: dict[str, Any] | None = None
    line: int | None = None
    line_source: str | None = None  # "faulthandler" | "sampled"
    native_module: str | None = None
    native_library: str | None = None  # from the kernel log's fault line (e.g. "libc.so.6"), when there is one
    fault: dict[str, Any] | None = None
    proof: list[str] = field(default_factory=list)  # what the verdict rests on, for the report
    memory_exhausted: bool = False  # memory ran out, whatever signal ended the process (DESIGN.md)
    memory_library: str | None = None  # the library that died of it (polars, pandas, zmq), when known
    memory_proof: list[str] = field(default_factory=list)


def classify(ev: Evidence) -> Verdict:
    """Return the cause of death that the evidence supports (``unknown`` when it supports none)."""
    fault = parse_fault(ev.fault_text, _cell_file(ev)) if ev.fault_text else None
    sig = ev.signal if ev.signal is not None else ev.inferred_signal
    oom_proof = _oom_proof(ev)
    verdict: Verdict
    if oom_proof and sig in (signal.SIGKILL, None):
        verdict = Verdict("oom_kill", scope=_oom_scope(ev), signal="SIGKILL", proof=oom_proof)
    elif sig in _FATAL:
        verdict = Verdict(_FATAL[sig], signal=signal_name(sig), proof=[f"exit status: killed by {signal_name(sig)}"])
        if sig == signal.SIGBUS:
            verdict.disk_full = _disk_full(ev)
            if verdict.disk_full:
                verdict.proof.append(f"filesystem {verdict.disk_full['mount']} full at death")
    elif sig is not None:
        how = "exit status" if ev.signal is not None else "inferred"
        verdict = Verdict("external_kill", signal=signal_name(sig), proof=[f"{how}: killed by {signal_name(sig)}"])
        if sig == signal.SIGKILL:
            verdict.proof.append(_no_oom_note(ev))
    elif ev.exit_code is not None:
        verdict = Verdict("exit", exit_code=ev.exit_code, proof=[f"exit status: code {ev.exit_code}"])
    else:
        verdict = Verdict("unknown", proof=["no exit status was seen"])
    if fault:
        verdict.fault = fault
        verdict.native_module = fault.get("native_module")
        if fault.get("line") is not None:
            verdict.line, verdict.line_source = fault["line"], "faulthandler"
    log_fault = (ev.kernel_log or {}).get("fault")
    if log_fault and verdict.cause in _FATAL.values():
        verdict.native_library = log_fault.get("library")
    if verdict.line is None:
        verdict.line = _sampled_line(ev)
        verdict.line_source = "sampled" if verdict.line is not None else None
    verdict.memory_exhausted, verdict.memory_library, verdict.memory_proof = memory_exhausted(ev, verdict)
    return verdict


# Libraries that die instead of raising when malloc returns NULL at the guard's fence (FACTS.md, "Native
# code that gets NULL from malloc"): the signal they die of, and how they do it, in words.
DIES_ON_REFUSED_MALLOC = {
    "polars": "polars aborts the process when an allocation fails (\"memory allocation of N bytes failed\")",
    "pandas": "pandas' C parser may crash when an allocation fails",
    "zmq": "libzmq, the kernel's messaging library, aborts when it cannot allocate",
}
# glibc's loader ends the process with this code ("cannot allocate memory for thread-local data: ABORT") when
# a thread first touching a library's thread-local variables cannot get the memory for them: duckdb's idle
# worker threads did, at the fence, 5 times in 30 loaded runs of a refused fetch (perf: tls_get_addr_tail).
LOADER_OOM_EXIT = 127
REFUSAL_WINDOW_SECONDS = 30.0  # a native death this soon after the guard refused memory is memory's doing
NEAR_BUDGET = 0.9  # the last sample this close to the budget: memory was running out


def memory_exhausted(ev: Evidence, v: Verdict) -> tuple[bool, str | None, list[str]]:
    """Return (did memory run out, the library that died of it, why we think so) for a classified death.

    True for an OOM kill, and for an abort or segfault of a kernel whose guard fence was set (RLIMIT_DATA)
    when the guard had just refused memory, when the running cell called a library that dies on a refused
    allocation, or when memory was near the budget at the last sample. Exit code 127 of a fenced kernel in a
    running cell likewise (glibc's loader: a thread's thread-local data could not be allocated), on the same
    proof but not on the library alone. A bus error is a file's, not memory's.
    """
    guard_items = [i for i in ((ev.flight.get("guard") or {}).get("items") or []) if isinstance(i, dict)]
    cell = ev.flight.get("cell") or {}
    count = cell.get("execution_count")
    risks = [lib for i in guard_items if i.get("kind") == "risk" and i.get("cell") == count
             for lib in (i.get("libraries") or [])]
    if not risks and cell.get("code"):
        from ..guard.prerun import native_libraries  # the same patterns the guard notes at the cell's start

        risks = native_libraries(cell["code"], loaded=None)
    if v.cause == "oom_kill":
        library = next((lib for lib in risks if lib in DIES_ON_REFUSED_MALLOC or lib == "duckdb"), None)
        return True, library, ["the OOM killer ended it"]
    loader = v.cause == "exit" and v.exit_code == LOADER_OOM_EXIT
    if v.cause not in ("abort", "segfault") and not loader:
        return False, None, []
    fenced = bool((ev.flight.get("meta") or {}).get("guard"))
    if not fenced:
        return False, None, []
    module = (v.native_module or "").split(".")[0] or None
    if module not in DIES_ON_REFUSED_MALLOC and (v.native_library or "").startswith("libzmq"):
        module = "zmq"
    proof: list[str] = []
    library: str | None = None
    refusals = [
        i for i in guard_items
        if i.get("kind") == "refusal" and i.get("trigger") != "prerun" and ev.died_at is not None
        and isinstance(i.get("t"), (int, float)) and 0 <= ev.died_at - i["t"] <= REFUSAL_WINDOW_SECONDS
    ]
    if refusals:
        last = refusals[-1]
        ago = ev.died_at - last["t"]
        if last.get("cell") in (None, count):
            library = last.get("library") or module
            proof.append(f"the guard refused an allocation {ago:.1f} s before the death")
        else:
            # An earlier cell's refusal says memory was short, not which library the death was (pyarrow's
            # refusal two cells before a duckdb death was named as its library).
            library = module
            proof.append(f"the guard refused an allocation of cell [{last['cell']}] {ago:.1f} s before the death")
    running = cell.get("finished") is None
    if loader:
        # No library exits 127 by itself on a refused allocation: only the refusal or the last sample prove it,
        # and only while a cell ran (between cells an exit is the kernel's own).
        if not running:
            return False, None, []
    elif running and module in DIES_ON_REFUSED_MALLOC:
        library = library or module
        proof.append(f"it died in {module}: {DIES_ON_REFUSED_MALLOC[module]}, and the guard's fence (RLIMIT_DATA) "
                     "refuses allocations beyond the budget")
    elif running and not proof:
        dying = [lib for lib in risks if lib in DIES_ON_REFUSED_MALLOC]
        if dying and module in (None, *dying):
            library = dying[0]
            proof.append(f"the running cell calls {library}: {DIES_ON_REFUSED_MALLOC[library]}, and the guard's "
                         "fence (RLIMIT_DATA) refuses allocations beyond the budget")
    memory = ev.flight.get("memory") or {}
    budget = memory.get("budget_bytes")
    samples = memory.get("samples") or []
    last_rss = samples[-1][1] if samples and len(samples[-1]) > 1 else memory.get("rss_bytes")
    if isinstance(budget, int) and isinstance(last_rss, int) and budget > 0 and last_rss >= NEAR_BUDGET * budget:
        # RSS, not the group's in-use memory the budget is measured against: with library pages charged to other
        # groups it can pass 100% while the group still has room ("used 104-113%" read as impossible).
        proof.append(f"the kernel's resident memory (RSS, shared library pages included) was {last_rss * 100 // budget}% "
                     "of its memory budget at the last sample")
        library = library or (module if module in DIES_ON_REFUSED_MALLOC else None)
    if loader and proof:
        library = library or next(iter(risks), None)  # whose threads the running cell had started
    return bool(proof), library if proof else None, proof


def _oom_proof(ev: Evidence) -> list[str]:
    proof = []
    if ev.oom_kills_before is not None and ev.oom_kills_after is not None and ev.oom_kills_after > ev.oom_kills_before:
        proof.append(f"the memory cgroup's OOM-kill counter went {ev.oom_kills_before} -> {ev.oom_kills_after}")
    if ev.kernel_log and ev.kernel_log.get("oom"):
        proof.append(f"the kernel log names pid {ev.pid} in memcg {ev.kernel_log['oom'].get('task_memcg')}")
    return proof


def _oom_scope(ev: Evidence) -> str:
    if ev.kernel_log and ev.kernel_log.get("oom"):
        return str(ev.kernel_log["oom"]["scope"])
    memory = ev.flight.get("memory") or {}
    cg = memory.get("cgroup") or {}
    if cg.get("limit_bytes") or str(memory.get("source", "")).startswith("cgroup"):
        return "cgroup"
    return "system"


def _no_oom_note(ev: Evidence) -> str:
    if ev.oom_kills_before is not None and ev.oom_kills_after is not None:
        return f"not the OOM killer: the cgroup's OOM-kill counter stayed at {ev.oom_kills_after}"
    return "not shown to be the OOM killer: no OOM counter or kernel-log line for this process"


def _disk_full(ev: Evidence) -> dict[str, Any] | None:
    for fs in ev.disk:
        free, total = fs.get("free_bytes"), fs.get("total_bytes")
        if free is None or total is None:
            continue
        if free < DISK_FULL_BYTES or (total and free < total // 100):
            return fs
    return None


def _cell_file(ev: Evidence) -> str | None:
    return (ev.flight.get("cell") or {}).get("file")


def _sampled_line(ev: Evidence) -> int | None:
    cell = ev.flight.get("cell") or {}
    memory = ev.flight.get("memory") or {}
    if cell.get("finished") is not None:
        return cell.get("line")
    if memory.get("line") is not None and memory.get("execution_count") == cell.get("execution_count"):
        return int(memory["line"])
    return None


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<func>\S+)')
_CELL_FILE = re.compile(r"(ipykernel_\d+[/\\]\d+\.py$)|(^<ipython-input-\d+-)")


def parse_fault(text: str, cell_file: str | None = None) -> dict[str, Any] | None:
    """Return what a faulthandler dump says: the error, the crashing thread's frames, the cell line, the module.

    The line is the one in the running cell (the outermost frame of the cell's file); the native module is
    the package of the innermost Python frame when that is not the cell itself (e.g. ``ctypes``, ``numpy``).
    """
    if not text or "Fatal Python error" not in text:
        return None
    # The newest dump wins: a file may hold several if faulthandler ran more than once.
    text = text[text.rfind("Fatal Python error") :]
    error = text.split("\n", 1)[0].split(":", 1)[-1].strip()
    frames: list[dict[str, Any]] = []
    block: list[dict[str, Any]] = []
    current = False
    for line in text.splitlines():
        if line.startswith(("Current thread", "Thread ")):
            if current and block:
                break
            current = line.startswith("Current thread")
            block = []
            continue
        m = _FRAME.match(line)
        if m:
            block.append({"file": m.group("file"), "line": int(m.group("line")), "function": m.group("func")})
        elif current and block and not line.strip():
            break
    frames = block if current else []
    if not frames:
        return {"error": error, "frames": [], "line": None, "native_module": None}

    def is_cell(path: str) -> bool:
        return path == cell_file if cell_file else bool(_CELL_FILE.search(path))

    cell_frames = [f for f in frames if is_cell(f["file"])]
    line = cell_frames[-1]["line"] if cell_frames else None
    innermost = frames[0]
    native = None if is_cell(innermost["file"]) else module_of(innermost["file"])
    return {
        "error": error,
        "frames": frames[:30],
        "line": line,
        "native_module": native,
        "innermost": f'{innermost["file"]}:{innermost["line"]} in {innermost["function"]}',
    }


def module_of(path: str) -> str:
    """Return the top-level package a source file belongs to ("numpy", "ctypes"), or its file name."""
    norm = path.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in norm:
            rest = norm.split(marker, 1)[1]
            return rest.split("/", 1)[0].removesuffix(".py")
    m = re.search(r"/lib/python\d+\.\d+/(?P<rest>.+)$", norm)
    if m:
        return m.group("rest").split("/", 1)[0].removesuffix(".py")
    return norm.rsplit("/", 1)[-1].removesuffix(".py")
