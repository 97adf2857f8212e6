"""The kernel's child processes volunteer to die first: their oom_score_adj is raised.

When a cgroup runs out of memory the OOM killer picks the process with the highest badness
(resident memory plus ``oom_score_adj`` thousandths of the memory available). Raising a child's
``oom_score_adj`` makes multiprocessing/joblib workers and shell commands die before the kernel that
started them. An unprivileged process may raise the value, never lower it (FACTS.md), so this is
one-way: a child stays a volunteer.

Two paths: ``os.register_at_fork(after_in_child=...)`` catches ``os.fork()`` children (multiprocessing's
fork and forkserver start methods, joblib's loky workers forked from the kernel) the moment they exist;
``adjust_existing()``, called by the watchdog every second, catches children started by
``subprocess`` (its fork+exec runs no Python at-fork hooks) and spawned workers.
A forked child also gets the user's original RLIMIT_DATA back: the fence belongs to the kernel, not to
copies of it that have no watchdog to keep it current.
"""

from __future__ import annotations

import os
import resource
import time

_state: dict[str, object] = {"enabled": False, "adj": 1000, "rlimit": None, "registered": False}


def read_oom_score_adj(pid: int | str = "self") -> int | None:
    """Return the oom_score_adj of ``pid``, or None where /proc does not have it."""
    try:
        with open(f"/proc/{pid}/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def raise_oom_score_adj(pid: int | str, adj: int) -> bool:
    """Raise (never lower) the oom_score_adj of ``pid`` to ``adj``; return True when it is now at least that."""
    current = read_oom_score_adj(pid)
    if current is None:
        return False
    if current >= adj:
        return True
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(adj))
        return True
    except OSError:
        return False


def _after_fork_in_child() -> None:
    """In a freshly forked child: volunteer to die first, and drop the kernel's fence."""
    if not _state["enabled"]:
        return
    try:
        raise_oom_score_adj("self", int(_state["adj"]))  # type: ignore[arg-type]
        original = _state["rlimit"]
        if original is not None:
            resource.setrlimit(resource.RLIMIT_DATA, original)  # type: ignore[arg-type]
    except Exception:  # a child must never fail because of the guard
        pass


def _after_fork_in_parent() -> None:
    """In the kernel, right after a fork: note the new child (a pool worker may be gone before anyone asks)."""
    if not _state["enabled"]:
        return
    try:
        for pid in descendants() or []:
            if not any(key[0] == pid for key in list(_SEEN)):
                note_child(pid)
    except Exception:
        pass


def enable(adj: int, original_rlimit: tuple[int, int] | None) -> None:
    """Make every child forked from now on a volunteer (``adj``) without the kernel's fence."""
    _state["enabled"] = adj > 0
    _state["adj"] = adj
    _state["rlimit"] = original_rlimit
    if not _state["registered"] and hasattr(os, "register_at_fork"):
        # Hooks cannot be unregistered: the hook checks ``enabled`` instead.
        os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
        _state["registered"] = True


def disable() -> None:
    _state["enabled"] = False


class ChildAdjuster:
    """Finds the kernel's descendants (psutil) and raises their oom_score_adj once each."""

    def __init__(self, adj: int) -> None:
        self.adj = adj
        self._done: set[tuple[int, float]] = set()  # (pid, create_time): pids get reused

    def adjust_existing(self) -> int:
        """Return how many children were newly made volunteers (and note every child's size, see ``seen``)."""
        pids = descendants()
        if pids is None:
            return 0
        newly = 0
        alive: set[tuple[int, float]] = set()
        for pid in pids:
            key = (pid, _start_time(pid))
            alive.add(key)
            note_child(pid, key[1])
            if key in self._done or self.adj <= 0:
                continue
            if raise_oom_score_adj(pid, self.adj):
                newly += 1
            self._done.add(key)
        self._done &= alive
        return newly


# -- which child ate the memory: sizes noted at each scan (watchdog thread) and read on demand (main) -----

SEEN_SECONDS = 30.0  # a child seen this recently may be the one that grew (it may be gone by the time we explain)
_SEEN: dict[tuple[int, float], dict[str, object]] = {}  # written by the watchdog's scans and by child_report()


def note_child(pid: int, start: float | None = None) -> dict[str, object] | None:
    """Read one child's command and RSS now, keep its peak in ``_SEEN``; return its record (None when gone)."""
    rss = _rss(pid)
    if rss is None:
        return None
    key = (pid, _start_time(pid) if start is None else start)
    record = _SEEN.get(key)
    if record is None:
        record = {"pid": pid, "command": command_of(pid), "rss_bytes": rss, "peak_bytes": rss}
        _SEEN[key] = record
        if len(_SEEN) > 64:  # bounded: the oldest go first
            for old in sorted(_SEEN, key=lambda k: float(_SEEN[k].get("t", 0.0)))[:16]:  # type: ignore[arg-type]
                _SEEN.pop(old, None)
    elif str(record["command"]).startswith(FORKED) or record["command"] == "?":
        record["command"] = command_of(pid)  # noted right after fork(): it may have exec'd since (pexpect, `!cmd`)
    record["rss_bytes"] = rss
    record["peak_bytes"] = max(int(record["peak_bytes"]), rss)  # type: ignore[call-overload]
    record["t"] = time.time()
    return record


def forget_seen() -> None:
    """Forget the children seen so far (at a cell's start: the next report is about this cell's children)."""
    _SEEN.clear()


def child_report(now: float | None = None) -> dict[str, object] | None:
    """Return the child that held the most memory lately: live descendants read now, or recently seen ones.

    ``{"pid", "command", "peak_bytes", "rss_bytes", "alive"}``; None when no child was seen.
    """
    now = time.time() if now is None else now
    live = set()
    for pid in descendants() or []:
        if note_child(pid) is not None:
            live.add(pid)
    recent = [dict(r) for r in list(_SEEN.values()) if now - float(r.get("t", 0.0)) <= SEEN_SECONDS]  # type: ignore[arg-type]
    if not recent:
        return None
    best = max(recent, key=lambda r: int(r["peak_bytes"]))  # type: ignore[call-overload]
    best["alive"] = best["pid"] in live
    if int(best["peak_bytes"]) < UNSEEN_GROWTH:  # type: ignore[call-overload]
        # None was seen big (they grew between scans): name every child of the same command.
        best["pids"] = sorted(int(r["pid"]) for r in recent if r["command"] == best["command"])  # type: ignore[call-overload]
    return best


UNSEEN_GROWTH = 64 << 20  # a child never seen above this grew (and maybe died) between two scans


def command_of(pid: int) -> str:
    """Return a child's command line for a message (a forked copy of the kernel is named as such)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        with open("/proc/self/cmdline", "rb") as f:
            own = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if argv == own:
        return f"{FORKED}: a multiprocessing or joblib worker"
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."


def stop_child(pid: int, grace: float = 1.0) -> str:
    """Stop a descendant that outlived the interrupt meant for it (SIGTERM, then SIGKILL); return what it took.

    Used only for a child that ate the memory and is still running after the cell ended: left alone it
    would grow on while the kernel is idle, until the OOM killer took it.
    """
    import signal

    if pid not in (descendants() or []):
        return "it had already ended"
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return "it had already ended"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if pid not in (descendants() or []):
            return "SIGTERM"
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return "SIGTERM"
    return "SIGKILL after SIGTERM"


def child_words(child: dict[str, object]) -> str:
    """Return "the child process PID (`command`)" for messages (a forked worker named as such, unquoted)."""
    command = str(child.get("command") or "?")
    shown = command if command.startswith(FORKED) else f"`{command}`"
    pids = child.get("pids") or [child.get("pid")]
    if len(pids) > 1:  # type: ignore[arg-type]
        return f"one of the child processes {', '.join(str(p) for p in pids)} ({shown})"  # type: ignore[union-attr]
    return f"the child process {child.get('pid')} ({shown})"


FORKED = "a forked copy of the kernel"


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int | None = None) -> list[int] | None:
    """Return the pids of all descendants of ``pid`` (this process by default); None when unknown.

    Reads /proc/PID/task/TID/children (a few small files) instead of scanning every process on the
    machine as psutil does (milliseconds per call on a busy desktop, once a second).
    """
    root = os.getpid() if pid is None else pid
    if os.path.exists(f"/proc/{root}/task/{root}/children"):
        out: list[int] = []
        todo = [root]
        while todo:
            parent = todo.pop()
            try:
                tids = os.listdir(f"/proc/{parent}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{parent}/task/{tid}/children") as f:
                        kids = [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    continue
                out.extend(kids)
                todo.extend(kids)
        return out
    try:
        import psutil

        return [c.pid for c in psutil.Process(root).children(recursive=True)]
    except Exception:
        return None


def _start_time(pid: int) -> float:
    """Return the process's start time in clock ticks (pids are reused; the pair is unique)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return float(data[data.rfind(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0.0
