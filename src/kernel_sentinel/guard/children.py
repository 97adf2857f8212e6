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
        try:
            import psutil

            children = psutil.Process().children(recursive=True)
        except Exception:
            return 0
        newly = 0
        alive: set[tuple[int, float]] = set()
        for child in children:
            try:
                key = (child.pid, child.create_time())
            except Exception:
                continue
            alive.add(key)
            if key in self._done:
                continue
            if raise_oom_score_adj(child.pid, self.adj):
                newly += 1
            self._done.add(key)
        self._done &= alive
        return newly
