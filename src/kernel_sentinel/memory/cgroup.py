"""Which memory cgroup a process is in, and how many OOM kills it has seen: found and read with nothing heavy imported.

The supervisor asks while the kernel it has just forked is starting, on the same two CPUs: reaching these
through ``reader`` imported the whole package (dataclasses, ctypes: ~45 ms of CPU) for two small reads.
``find_group`` holds the rules (cgroup v1's memory controller first, then v2's unified tree; a path
outside the mount read as the mount's root); ``reader.locate_cgroup`` builds the ancestors' chain on it.
Imports ``os`` and ``parse`` only.
"""

from __future__ import annotations

import os

from . import parse


def oom_kill_file(directory: str, version: int | None) -> str:
    """Return the file holding a memory cgroup's OOM-kill counter: v1 ``memory.oom_control`` (this group
    only), v2 ``memory.events`` (descendants included)."""
    return os.path.join(directory, "memory.oom_control" if version == 1 else "memory.events")


def oom_kill_counter(directory: str | None, version: int | None) -> int | None:
    """Return a memory cgroup's OOM-kill counter, or None when it cannot be read.

    v1 keeps it in ``memory.oom_control`` (this group only), v2 in ``memory.events`` (with descendants).
    """
    if not directory:
        return None
    try:
        return parse.parse_keyed(_read_text(oom_kill_file(directory, version))).get("oom_kill")
    except (OSError, ValueError):
        return None


def find_group(
    entries: list[parse.CgroupEntry], mounts: list[parse.CgroupMount], notes: list[str]
) -> tuple[int, str, parse.CgroupMount, list[str]] | None:
    """Return (version, path, mount, the path's parts below the mount) of the memory cgroup that
    /proc/PID/cgroup's ``entries`` name, or None; why not (and a namespace's narrowing) goes to ``notes``."""
    v1_entry = next((e for e in entries if "memory" in e.controllers), None)
    v1_mount = next((m for m in mounts if m.version == 1 and "memory" in m.options), None)
    if v1_entry and v1_mount:
        parts = _parts_below(v1_entry.path, v1_mount, notes)
        leaf = _directory(v1_mount, parts)
        if os.path.exists(os.path.join(leaf, "memory.limit_in_bytes")):
            return 1, v1_entry.path, v1_mount, parts
        notes.append(f"cgroup v1 memory files missing at {leaf}")
    v2_entry = next((e for e in entries if e.hierarchy == 0), None)
    v2_mount = next((m for m in mounts if m.version == 2), None)
    if v2_entry and v2_mount:
        parts = _parts_below(v2_entry.path, v2_mount, notes)
        if os.path.exists(os.path.join(_directory(v2_mount, parts), "memory.current")):
            return 2, v2_entry.path, v2_mount, parts
        if not notes:
            notes.append(f"cgroup v2 at {v2_mount.mountpoint} has no memory controller for this process")
    elif not v1_entry:
        notes.append("no memory cgroup found")
    return None


def memory_group(pid: int | str = "self", proc: str = "/proc") -> tuple[str, int, str] | None:
    """Return (directory, version, path) of the memory cgroup of ``pid``, or None: what its OOM-kill counter
    and the kernel log's lines about it need, without ``reader``'s chain of ancestors and their limits."""
    try:
        entries = parse.parse_proc_cgroup(_read_text(f"{proc}/{pid}/cgroup"))
        mounts = parse.parse_mountinfo(_read_text(f"{proc}/self/mountinfo"))
    except (OSError, ValueError):
        return None
    found = find_group(entries, mounts, [])
    if found is None:
        return None
    version, path, mount, parts = found
    return _directory(mount, parts), version, path


def _parts_below(path: str, mount: parse.CgroupMount, notes: list[str]) -> list[str]:
    root = mount.root.rstrip("/")
    if path == mount.root or path.startswith(root + "/"):
        return [p for p in path[len(root) :].split("/") if p]
    # Another cgroup namespace or a bind mount of a subtree: the mount itself is the best we can see.
    notes.append(f"cgroup path {path} is outside the mount {mount.mountpoint}; reading the mount's root")
    return []


def _directory(mount: parse.CgroupMount, parts: list[str]) -> str:
    return os.path.join(mount.mountpoint, "/".join(parts)) if parts else mount.mountpoint


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
