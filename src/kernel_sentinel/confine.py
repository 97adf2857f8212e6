"""How to hold a process to a memory size: a fresh memory cgroup of its own, or RLIMIT_DATA where none can be made.

``MemoryCgroup`` creates a child of this process's own memory cgroup (v1 here; v2 where the group is
delegated), so it needs no privileges beyond write access to our own group. ``confined_command`` prefixes
a command line so that the started process enters the group (or takes the rlimit) and then execs: the pid
that jupyter_client watches is the confined program itself.

Run as ``python -m kernel_sentinel.confine (--cgroup DIR | --rlimit-data BYTES) -- CMD...``.
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence

from .memory import locate_cgroup, oom_kill_counter

_counter = itertools.count()


class ConfineError(RuntimeError):
    """No memory cgroup can be made here; the message says why, in one line."""


class MemoryCgroup:
    """A child memory cgroup with a limit, removed by ``remove()`` (also as a context manager)."""

    def __init__(self, directory: str, version: int, path: str) -> None:
        self.directory = directory
        self.version = version
        self.path = path

    @classmethod
    def create(cls, limit_bytes: int, prefix: str = "kernel-sentinel") -> MemoryCgroup:
        """Return a new child group of our own memory cgroup limited to ``limit_bytes``."""
        location, notes = locate_cgroup()
        if location is None:
            raise ConfineError("no memory cgroup to create a child in: " + ("; ".join(notes) or "none found"))
        parent = location.leaf
        name = f"{prefix}-{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 100000}"
        if location.version == 2:
            try:
                _enable_v2_memory(parent.directory)
            except OSError as exc:
                raise ConfineError(f"cannot delegate memory under {parent.directory}: {exc.strerror or exc}") from exc
        return cls.make(parent.directory, parent.path, name, location.version, limit_bytes)

    @classmethod
    def make(cls, parent_directory: str, parent_path: str, name: str, version: int, limit_bytes: int) -> MemoryCgroup:
        """Return the new group ``name`` under ``parent_directory`` with ``limit_bytes``; ``ConfineError`` if not."""
        directory = os.path.join(parent_directory, name)
        try:
            os.mkdir(directory)
        except OSError as exc:
            raise ConfineError(f"cannot create a memory cgroup under {parent_directory}: {exc.strerror or exc}") from exc
        group = cls(directory, version, parent_path.rstrip("/") + "/" + name)
        try:
            group.set_limit(limit_bytes)
        except OSError as exc:
            os.rmdir(directory)  # just made, nothing in it yet
            raise ConfineError(f"cannot set a memory limit in {directory}: {exc.strerror or exc}") from exc
        return group

    def limit_bytes(self) -> int | None:
        """Return the group's own limit (None: unlimited, or unreadable)."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        try:
            with open(os.path.join(self.directory, name)) as f:
                text = f.read().strip()
            return None if text == "max" else int(text)
        except (OSError, ValueError, TypeError):
            return None

    def set_limit(self, limit_bytes: int) -> None:
        """Write the limit; v1 also caps memory+swap (where accounted), so the group cannot spill into swap."""
        if self.version == 1:
            memsw = os.path.join(self.directory, "memory.memsw.limit_in_bytes")
            has_memsw = os.path.exists(memsw)
            current = self.limit_bytes() or 0
            # memsw must stay >= the memory limit: raise it first when going up, lower it last going down.
            if has_memsw and limit_bytes > current:
                _write(memsw, str(limit_bytes))
            _write(os.path.join(self.directory, "memory.limit_in_bytes"), str(limit_bytes))
            if has_memsw and limit_bytes <= current:
                _write(memsw, str(limit_bytes))
        else:
            _write(os.path.join(self.directory, "memory.max"), str(limit_bytes))
            # Without swap accounting a v2 group could otherwise spill into swap instead of OOMing.
            swap = os.path.join(self.directory, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")

    def add(self, pid: int) -> None:
        """Move ``pid`` into the group. Memory it already charged stays where it was (FACTS.md)."""
        _write(os.path.join(self.directory, "cgroup.procs"), str(pid))

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.directory, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        """Return the group's OOM-kill counter; raises when it cannot be read (a test must not see 0)."""
        count = oom_kill_counter(self.directory, self.version)
        if count is None:
            raise OSError(f"cannot read the OOM-kill counter of {self.directory}")
        return count

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        with open(os.path.join(self.directory, name)) as f:
            return int(f.read())

    def peak_bytes(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            with open(os.path.join(self.directory, name)) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def remove(self, timeout: float = 10.0) -> None:
        """Kill what is left in the group and in groups made inside it (only processes we put there), remove all.

        A sentinel kernel's supervisor makes the kernel's own group inside the group it was started in; a
        forced shutdown (SIGKILL of the process group) leaves that child group behind, empty.
        """
        if not os.path.isdir(self.directory):
            return
        deadline = time.monotonic() + timeout
        for child in sorted(_child_groups(self.directory), key=len, reverse=True):  # deepest first
            MemoryCgroup(child, self.version, self.path.rstrip("/") + child[len(self.directory) :]).remove(
                max(0.1, deadline - time.monotonic())
            )
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.directory)
                return
            except FileNotFoundError:
                return  # removed meanwhile by its maker (a kernel's supervisor or witness)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _child_groups(directory: str) -> list[str]:
    """Return every group below ``directory`` (cgroup folders are the only sub-folders a group has)."""
    found = []
    for root, dirs, _ in os.walk(directory):
        found.extend(os.path.join(root, d) for d in dirs)
    return found


def _enable_v2_memory(parent: str) -> None:
    control = os.path.join(parent, "cgroup.subtree_control")
    with open(control) as f:
        if "memory" in f.read().split():
            return
    _write(control, "+memory")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value + "\n")


def confined_command(
    argv: Sequence[str], *, cgroup: MemoryCgroup | None = None, rlimit_data: int | None = None
) -> list[str]:
    """Return ``argv`` prefixed so that it runs inside ``cgroup`` or under ``rlimit_data``."""
    prefix = [sys.executable, "-m", "kernel_sentinel.confine"]
    if cgroup is not None:
        prefix += ["--cgroup", cgroup.directory]
    if rlimit_data is not None:
        prefix += ["--rlimit-data", str(rlimit_data)]
    return [*prefix, "--", *argv]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse  # here: the supervisor imports this module before it forks the kernel

    parser = argparse.ArgumentParser(prog="python -m kernel_sentinel.confine")
    parser.add_argument("--cgroup", help="memory cgroup directory to enter")
    parser.add_argument("--rlimit-data", type=int, help="RLIMIT_DATA soft limit in bytes")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    try:
        if args.cgroup:
            _write(os.path.join(args.cgroup, "cgroup.procs"), str(os.getpid()))
        if args.rlimit_data:
            hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
            resource.setrlimit(resource.RLIMIT_DATA, (args.rlimit_data, hard))
    except OSError as exc:
        print(f"kernel-sentinel confine: {exc}", file=sys.stderr)
        raise SystemExit(70) from exc
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
