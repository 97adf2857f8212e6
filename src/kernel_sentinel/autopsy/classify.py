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
    return verdict


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
