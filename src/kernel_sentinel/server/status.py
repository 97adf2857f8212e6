"""A running kernel seen from outside: which process is the kernel, its memory and budget, its guard's state.

Read by the server in a worker thread (``/proc`` and flight-record reads), for ``GET kernels/ID``, the
gauges on ``/metrics`` and the evidence of a stock kernel's death. Nothing here talks to the kernel: a
kernel that is busy, stuck or out of memory is measured all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stock import memory_record



@dataclass(frozen=True)
class KernelLook:
    """One look at a running kernel (plain data, handed from a worker thread to the event loop)."""

    kernel_pid: int | None  # the ipykernel process (the launcher's child for a sentinel kernel)
    guard: str  # "on" | "off" | "absent"
    memory: dict[str, Any]  # the REST shape: used_bytes, used_source, rss_bytes, budget_bytes, source (+ interrupt_bytes)
    record: dict[str, Any] | None  # the flight record's "memory" shape, the evidence if the kernel dies
    cgroup: tuple[str, int] | None  # (directory, version) of its memory cgroup, for the OOM-kill counter
    memory_errors: int | None  # its MemoryBudgetErrors in the store (None: the store could not be read)


def look(kernel_id: str, pid: int | None, home: Path, *, sentinel: bool) -> KernelLook:
    """Return what can be seen of kernel ``kernel_id`` whose process jupyter_client started is ``pid``."""
    from ..memory import snapshot

    errors = memory_errors(home, kernel_id)
    if pid is None:
        return KernelLook(None, "on" if sentinel else "absent", {}, None, None, errors)
    kernel_pid, flight = _kernel_process(kernel_id, pid, home, launcher=sentinel)
    published = _published(flight)
    settings = guard_settings(_environ(kernel_pid), _cmdline(kernel_pid))
    guard = guard_state(flight, published, settings, sentinel=sentinel)
    try:
        # A guarded kernel's RLIMIT_DATA is the guard's own fence, not a limit on it (as the recorder reads it).
        snap = snapshot(kernel_pid, rlimits=guard != "on")
    except Exception:  # the process just ended, or /proc is unreadable: no reading this time
        snap = None
    if snap is not None and dying(kernel_pid):
        snap = None  # an exiting process has left its cgroup already (/proc says "/"): not its memory any more
    memory: dict[str, Any] = {}
    record = cgroup = None
    if snap is not None:
        record = memory_record(snap)
        used, counted = in_use(snap)
        memory = {"used_bytes": used, "used_source": counted, "rss_bytes": snap.process.rss_bytes,
                  "budget_bytes": snap.budget_bytes, "source": snap.source}
        if snap.cgroup is not None:
            cgroup = (snap.cgroup.directory, snap.cgroup.version)
    if guard == "on" and memory:
        memory.update(guard_budget(memory, published, settings))
    return KernelLook(kernel_pid, guard, memory, record, cgroup, errors)


def memory_errors(home: Path, kernel_id: str) -> int | None:
    """Return how many MemoryBudgetErrors of this kernel the store holds: the one count (None when unreadable).

    The kernel writes one row per MemoryBudgetError (``fleet.kernel_side``, from the cell's own error) and
    ``kernel-sentinel fleet`` counts the same rows; the server's REST answer and its metric read them here
    rather than keep a count of their own. No store yet: none.
    """
    from ..store import STORE_NAME, Store, StoreError

    path = home / STORE_NAME
    if not path.exists():
        return 0
    try:
        with Store(path, create=False) as store:
            rows = store.rows("SELECT count(*) AS n FROM memory_errors WHERE kernel_id = ?", (kernel_id,))
    except StoreError:
        return None
    return int(rows[0]["n"]) if rows else 0


def in_use(snap: Any) -> tuple[int | None, str]:
    """Return (bytes, what they are): the kernel's memory as its guard counts it against the budget.

    The guard's rule (``guard.policy.candidates_from``): under a memory cgroup's limit, the group's usage less
    the page cache the kernel drops before an OOM kill (the kernel's own group when it has one; a group it
    shares counts everyone in it, as the OOM killer does); under the machine's RAM alone, the process's RSS.
    A configured budget is measured the same way as the limit it tightens. Read from outside the kernel, so
    the status bar turns amber and red where the guard sees its room go, not where the process's RSS does.
    """
    from ..autopsy.kernel_group import is_kernel_group

    budget = snap.budget
    if budget is not None and budget.kind.startswith("cgroup"):
        path = budget.source.split(" ", 2)[-1]
        whose = "this kernel's own memory group" if is_kernel_group(path) else f"its memory group {path} (shared)"
        return budget.limit_bytes - budget.available_bytes, f"in use in {whose}: usage less page cache"
    return snap.process.rss_bytes, "the kernel process's resident memory (RSS)"


def guard_settings(env: dict[str, str], cmdline: bytes = b"") -> Any:
    """Return the guard's settings as the kernel will resolve them: its environment and its argv's
    ``--SentinelGuard.*`` options, through the guard's own rules (``guard.config.resolve_settings``)."""
    from traitlets.config.loader import KVArgParseConfigLoader

    from ..guard.config import SentinelGuard, resolve_settings

    args = [a for a in cmdline.decode("utf-8", "replace").split("\0") if a.startswith("--SentinelGuard.")]
    try:
        config = SentinelGuard(config=KVArgParseConfigLoader(args).load_config()) if args else SentinelGuard()
    except Exception:  # a malformed option: the kernel says so itself; judge by the environment alone
        config = SentinelGuard()
    return resolve_settings(config, env)


def guard_state(flight: dict[str, Any] | None, published: dict[str, Any] | None, settings: Any, *, sentinel: bool) -> str:
    """Return "on" | "off" | "absent": the guard's word first, then the flight record's, then its settings."""
    if published is not None:
        return "on" if published.get("enabled", True) else "off"
    meta = (flight or {}).get("meta")
    if meta:
        return "on" if meta.get("guard", True) else "off"
    if sentinel:
        return "on" if settings.enabled else "off"
    return "absent"


def guard_budget(memory: dict[str, Any], published: dict[str, Any] | None, settings: Any) -> dict[str, Any]:
    """Return the guard's budget, its source and its interrupt line: as the guard published them, else as its
    settings imply (the tightest of the measured budget and the configured limits; the interrupt fraction)."""
    from ..sizes import SizeError

    if published is not None:
        out: dict[str, Any] = {}
        if published.get("budget_bytes"):
            out["budget_bytes"] = int(published["budget_bytes"])
            out["source"] = str(published.get("budget_source") or memory.get("source"))
        if published.get("interrupt_at_bytes"):
            out["interrupt_bytes"] = int(published["interrupt_at_bytes"])
        return out
    measured = budget = memory.get("budget_bytes")
    source = memory.get("source")
    for limit in settings.memory_limits:
        try:
            own = limit.resolve(measured)
        except (SizeError, ValueError, TypeError):
            continue
        if own and (budget is None or own < budget):
            budget, source = own, limit.source
    if not budget:
        return {}
    return {"budget_bytes": budget, "source": source, "interrupt_bytes": int(budget * settings.interrupt_fraction)}


def _published(flight: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the state the guard publishes in its flight-record region, when it publishes one."""
    region = (flight or {}).get("guard")
    status = region.get("status") if isinstance(region, dict) else None
    return status if isinstance(status, dict) else None


def _kernel_process(kernel_id: str, pid: int, home: Path, *, launcher: bool) -> tuple[int, dict[str, Any] | None]:
    """Return (the kernel's own pid, its flight record or None).

    jupyter_client started ``pid``; for a sentinel kernel that is the launcher, whose child is the kernel.
    The flight record names the kernel's pid; without one the child running the kernel's command is taken.
    """
    from ..autopsy.flight import flight_dir
    from .autopsy_io import read_flight

    family = [pid, *_children(pid)] if launcher else [pid]
    folder = flight_dir(home, kernel_id)
    for candidate in family:
        if (folder / f"{candidate}.rec").exists():
            return candidate, read_flight(home, kernel_id, candidate)
    if len(family) > 1:
        own = _cmdline(pid)
        for child in family[1:]:
            if _cmdline(child) != own:  # the supervisor's witness is a fork of it; the kernel was exec'd
                return child, None
    return pid, None


def _children(pid: int) -> list[int]:
    """Return the pids of ``pid``'s children (psutil's way scans every process on the machine: too dear here)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children()]
    except Exception:
        return []


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    """Return the kernel's environment variables that shape its guard (empty when unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"KERNEL_SENTINEL_"):
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


PF_EXITING = 0x4  # include/linux/sched.h: the task is in do_exit
SIGKILL_BIT = 1 << 8  # signal 9 in /proc/PID/status's pending-signal masks


def dying(pid: int) -> bool:
    """Return True when ``pid`` has a SIGKILL pending or is exiting: alive to waitpid, but already ending.

    Two small /proc reads (~20 us); False when they cannot be read.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return False
    try:
        flags = int(stat[stat.rindex(b")") + 2 :].split()[6])  # fields after "(comm)": state ppid ... flags
        if flags & PF_EXITING:
            return True
        for line in status.splitlines():
            if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & SIGKILL_BIT:
                return True
    except (ValueError, IndexError):
        return False
    return False


def process_start(pid: int) -> float | None:
    """Return when process ``pid`` started (seconds since the epoch), or None when it is gone."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def is_sentinel(argv: list[str] | None, provisioner: Any) -> bool:
    """Return True when the kernel explains its own deaths (sentinel launcher or sentinel provisioner)."""
    if any("kernel_sentinel.launch" in str(a) for a in argv or []):
        return True
    return type(provisioner).__name__ == "SentinelProvisioner"


