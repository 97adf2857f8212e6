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


def enable(adj: int, original_rlimit: tuple[int, int] | None) -> None:
    """Make every child forked from now on a volunteer (``adj``) without the kernel's fence."""
    _state["enabled"] = adj > 0
    _state["adj"] = adj
    _state["rlimit"] = original_rlimit
    if not _state["registered"] and hasattr(os, "register_at_fork"):
        # Hooks cannot be unregistered: the hook checks ``enabled`` instead.
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _state["registered"] = True


def disable() -> None:
    _state["enabled"] = False


class ChildAdjuster:
    """Finds the kernel's descendants (psutil) and raises their oom_score_adj once each."""

    def __init__(self, adj: int) -> None:
        self.adj = adj
        self._done: set[tuple[int, float]] = set()  # (pid, create_time): pids get reused

    def adjust_existing(self) -> int:
        """Return how many children were newly made volunteers."""
        if self.adj <= 0:
            return 0
        pids = descendants()
        if pids is None:
            return 0
        newly = 0
        alive: set[tuple[int, float]] = set()
        for pid in pids:
            key = (pid, _start_time(pid))
            alive.add(key)
            if key in self._done:
                continue
            if raise_oom_score_adj(pid, self.adj):
                newly += 1
            self._done.add(key)
        self._done &= alive
        return newly


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
