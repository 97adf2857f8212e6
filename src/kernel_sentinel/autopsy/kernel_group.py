"""Each kernel's own memory group: where one can be made, making it, moving its limit, and sweeping leftovers.

``kernel-sentinel install --memory-limit SIZE`` writes ``KERNEL_SENTINEL_GROUP_LIMIT=SIZE`` into the
kernelspec; the supervisor then asks ``plan_group()`` where this machine lets it make a group of its own for
the kernel, in this order:

- cgroup v1 (a writable memory hierarchy): a child of the supervisor's own memory group;
- cgroup v2, delegated subtree: a sibling of the supervisor's leaf under the nearest ancestor that is
  writable and has ``memory`` in its ``cgroup.subtree_control`` (v2 forbids processes in inner groups, so a
  child of our own leaf is not possible);
- cgroup v2 with a systemd user manager: a transient scope, ``systemd-run --user --scope -p MemoryMax=N``,
  which the kernel's command line is prefixed with (systemd removes the scope when the kernel is gone);
- otherwise none: the guard's budget alone holds the kernel, which the supervisor says once.

Groups are named ``ks-kernel-<supervisor pid>-<kernel id>`` so that a sweep recognises them as ours; the
supervisor removes its group when the kernel has ended, and ``sweep_groups()`` (every supervisor start,
``kernel-sentinel budget``) removes leftovers of a SIGKILLed supervisor: only groups with that name, with no
process left in them, whose supervisor is gone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..confine import ConfineError, MemoryCgroup
from ..memory import locate_cgroup
from ..memory.parse import parse_inactive_file
from ..sizes import format_bytes, parse_size

PREFIX = "ks-kernel-"
ENV_LIMIT = "KERNEL_SENTINEL_GROUP_LIMIT"  # kernelspec -> supervisor: give each kernel a group of this SIZE
ENV_GROUP = "KERNEL_SENTINEL_KERNEL_GROUP"  # supervisor -> kernel: "<mechanism>|<limit>|<directory>" or "none|<limit>|<why>"
_MiB = 1 << 20
_GiB = 1 << 30
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[A-Za-z0-9_.-]*$")


class GroupError(RuntimeError):
    """A group could not be made or changed; the message is one line for the user."""


class GroupPlan(NamedTuple):
    """Where a kernel's own group can be made: the mechanism and the parent folder, or why none can.

    (A NamedTuple, not a dataclass: the supervisor imports this module before it forks the kernel.)
    """

    mechanism: str  # "cgroup v1" | "cgroup v2" | "systemd scope" | "none"
    parent: str | None  # the parent group's directory (None for a scope: systemd places it)
    version: int | None
    parent_path: str | None = None  # the parent's path inside the hierarchy, as /proc/PID/cgroup names it
    reason: str = ""


def group_name(supervisor_pid: int, kernel_id: str) -> str:
    """Return the group's name: recognisably ours, with the pid of the supervisor that owns it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", kernel_id)[:36] or "kernel"
    return f"{PREFIX}{supervisor_pid}-{safe}"


def owner_pid(name: str) -> int | None:
    """Return the supervisor pid a group name carries, or None when the name is not one of ours."""
    match = _NAME.match(name.removesuffix(".scope"))
    return int(match.group(1)) if match else None


def is_kernel_group(path: str | None) -> bool:
    """Return True when a cgroup path (or a budget source naming one) ends in a group this module makes."""
    if not path:
        return False
    return owner_pid(path.rstrip("/").rsplit("/", 1)[-1]) is not None


def describe_source(source: str | None) -> str | None:
    """Return "this kernel's own memory group (...)" for a budget source that is one, else None."""
    if not source or not source.startswith("cgroup") or not is_kernel_group(source):
        return None
    head = source.split(" /", 1)[0]
    return f"this kernel's own memory group ({head} .../{source.rstrip('/').rsplit('/', 1)[-1]})"


# -- where ------------------------------------------------------------------------------------------------


def plan_group(pid: int | str = "self", proc: str = "/proc") -> GroupPlan:
    """Return where a group for a child of ``pid`` can be made on this machine (measure, then decide)."""
    location, notes = locate_cgroup(pid, proc)
    if location is None:
        return GroupPlan("none", None, None, reason="; ".join(notes) or "no memory cgroup")
    leaf = location.leaf
    if location.version == 1:
        if os.access(os.path.join(leaf.directory, "cgroup.procs"), os.W_OK) and os.access(leaf.directory, os.W_OK):
            return GroupPlan("cgroup v1", leaf.directory, 1, leaf.path)
        return GroupPlan("none", None, 1, reason=f"the memory group {leaf.path} is not writable")
    for group in location.groups[1:]:  # v2: an ancestor that delegates memory to its children, and is ours
        control = os.path.join(group.directory, "cgroup.subtree_control")
        try:
            with open(control) as f:
                delegated = "memory" in f.read().split()
        except OSError:
            continue
        if delegated and os.access(group.directory, os.W_OK):
            return GroupPlan("cgroup v2", group.directory, 2, group.path)
    if systemd_user_available():
        return GroupPlan("systemd scope", None, 2)
    return GroupPlan(
        "none",
        None,
        2,
        reason=f"cgroup v2 without a delegated subtree above {leaf.path} and without a systemd user manager",
    )


def systemd_user_available() -> bool:
    """Return True when ``systemd-run --user`` can reach a user manager (its private socket exists)."""
    import shutil

    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return shutil.which("systemd-run") is not None and os.path.exists(os.path.join(runtime, "systemd", "private"))


# -- what a MemoryBudgetError can offer (pure) ----------------------------------------------------------


def nice_size(nbytes: int) -> str:
    """Return a SIZE a user would type for at least ``nbytes``: whole GiB from 1 GiB up, else 256 MiB steps."""
    if nbytes >= _GiB:
        return f"{-(-nbytes // _GiB)}G"
    return f"{-(-nbytes // (256 * _MiB)) * 256}M"


def more_room_fact(ev: dict[str, Any]) -> str | None:
    """Return "`%sentinel budget 3G` gives this kernel 2 GiB more; the machine has 9.1 GiB available", or None.

    Pure. Offered only when the kernel has its own group and there is room above it for at least what the
    cell asked for (or a quarter more, when the request is not known).
    """
    limit, room = ev.get("group_limit_bytes"), ev.get("group_room_bytes")
    if not isinstance(limit, int) or not isinstance(room, int) or room < 64 * _MiB:
        return None
    requested = ev.get("requested_bytes")
    need = requested if isinstance(requested, int) and requested > 0 else limit // 4
    target = nice_size(limit + max(need, 64 * _MiB))
    new = parse_size(target)
    usage = ev.get("usage_bytes")
    if new - (usage if isinstance(usage, int) else limit) > room:
        return None  # the parent has not that much free for this kernel to grow into
    machine = ev.get("machine_available_bytes")
    tail = f"; the machine has {format_bytes(machine)} available" if isinstance(machine, int) else ""
    return f"`%sentinel budget {target}` gives this kernel {format_bytes(new - limit)} more{tail}."


# -- the group ------------------------------------------------------------------------------------------


class KernelGroup(MemoryCgroup):
    """One kernel's memory group. The supervisor's main thread makes and removes it; the kernel moves its limit.

    A ``MemoryCgroup`` that is never emptied by force: ``remove`` leaves a group that still holds processes.
    """

    def __init__(self, mechanism: str, directory: str | None, version: int, name: str, path: str | None) -> None:
        super().__init__(directory or "", version, path or "")
        self.mechanism = mechanism
        self.directory = directory  # type: ignore[assignment]  # None for a scope until ``locate`` finds it
        self.name = name

    # making and removing (the supervisor)

    @classmethod
    def create(cls, plan: GroupPlan, name: str, limit_bytes: int, home: Path | None = None) -> KernelGroup:
        """Return a new group with ``limit_bytes`` where ``plan`` says; raises ``GroupError`` in one line."""
        if plan.mechanism == "systemd scope":
            return cls("systemd scope", None, 2, name + ".scope", None)
        if plan.parent is None or plan.version is None:
            raise GroupError(f"no memory group of its own: {plan.reason}")
        try:
            made = MemoryCgroup.make(plan.parent, plan.parent_path or "", name, plan.version, limit_bytes)
        except ConfineError as exc:
            raise GroupError(str(exc)) from exc
        group = cls(plan.mechanism, made.directory, plan.version, name, made.path)
        if home is not None:
            _remember(home, group)
        return group

    def command(self, argv: list[str], limit_bytes: int) -> list[str]:
        """Return the kernel's command line: prefixed by ``systemd-run`` for a scope, else unchanged."""
        if self.mechanism != "systemd scope":
            return argv
        return [
            "systemd-run", "--user", "--scope", "--quiet", "--collect", f"--unit={self.name}",
            "-p", f"MemoryMax={limit_bytes}", "-p", "MemorySwapMax=0", "--", *argv,
        ]  # fmt: skip

    def enter(self) -> None:
        """Move the calling process into the group (the forked kernel, before it execs)."""
        if self.directory is not None and self.mechanism != "systemd scope":
            self.add(os.getpid())

    def locate(self, pid: int, wait: float = 2.0) -> None:
        """Find a scope's directory once ``pid`` is in it (systemd-run moves the kernel before it execs)."""
        deadline = time.monotonic() + wait
        while self.directory is None:
            location, _ = locate_cgroup(pid)
            if location is not None and location.leaf.path.endswith("/" + self.name):
                self.directory, self.path = location.leaf.directory, location.leaf.path
                return
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """Return the processes in the group now (empty when it is gone)."""
        return super().pids() if self.directory is not None else []

    def remove(self, home: Path | None = None) -> bool:  # type: ignore[override]
        """Remove the group if no process is left in it; return True when it is gone.

        Never kills: a process the kernel started and left behind keeps the group (and its limit) until a
        later sweep finds it empty. A scope is systemd's to remove (``--collect``).
        """
        if self.mechanism == "systemd scope" or self.directory is None:
            return True
        if self.pids():
            return False
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        if home is not None:
            _forget(home, self.name)
        return True

    # reading and moving the limit (the kernel, or ``kernel-sentinel``)

    def held_bytes(self) -> int | None:
        """Return what the kernel holds: the group's usage minus the page cache the OS reclaims first."""
        try:
            usage = self.usage_bytes()
            with open(os.path.join(self.directory or "", "memory.stat")) as f:
                return max(0, usage - parse_inactive_file(f.read()))
        except (OSError, ValueError):
            return None

    def set_limit(self, limit_bytes: int) -> None:
        """Write the limit; a scope whose files are systemd's is moved through ``systemctl``."""
        if self.directory is None:
            raise OSError("the group's directory is not known yet")
        try:
            super().set_limit(limit_bytes)
        except PermissionError:
            if self.mechanism != "systemd scope":
                raise
            scope_set_limit(self.name, limit_bytes)

    def describe(self) -> str:
        return f"cgroup v{self.version} {self.path or self.directory}"


def own_group(pid: int | str = "self", proc: str = "/proc") -> KernelGroup | None:
    """Return the group kernel-sentinel made for process ``pid``, or None when it is not in one."""
    location, _ = locate_cgroup(pid, proc)
    if location is None or not is_kernel_group(location.leaf.path):
        return None
    leaf = location.leaf
    name = leaf.path.rstrip("/").rsplit("/", 1)[-1]
    mechanism = "systemd scope" if name.endswith(".scope") else f"cgroup v{location.version}"
    return KernelGroup(mechanism, leaf.directory, location.version, name, leaf.path)


def parent_room_bytes(pid: int | str = "self") -> tuple[int | None, str]:
    """Return how much more memory the kernel's group could take from above it, and who says so.

    The least of: every limited ancestor's limit minus its working set, and the machine's MemAvailable.
    """
    from ..memory import snapshot

    snap = snapshot(None if pid == "self" else int(pid), rlimits=False)
    best: tuple[int | None, str] = (None, "")
    for lim in snap.limits:
        if lim.kind.startswith("cgroup") and is_kernel_group(lim.source):
            continue  # the kernel's own group: its room is what we are about to change
        if best[0] is None or lim.available_bytes < best[0]:
            best = (lim.available_bytes, lim.source)
    return best


def decide_limit(requested: int, current: int | None, usage: int | None, room: int | None) -> str | None:
    """Return why ``requested`` cannot be the group's new limit (one line), or None when it can.

    Pure: down never below what the kernel holds; up only as far as the parent and the machine have free
    memory for (a limit below the current one is always room enough).
    """
    if usage is not None and requested <= usage:
        return (
            f"{format_bytes(requested)} is less than the {format_bytes(usage)} this kernel already holds; "
            "free memory first (`%sentinel free`, `del` a big variable)"
        )
    # Up to the new limit the kernel may take (limit - what it holds) more from above: that must be free.
    held = usage if usage is not None else current
    if held is not None and room is not None and requested > (current or 0) and requested - held > room:
        return (
            f"{format_bytes(requested)} would let this kernel take {format_bytes(requested - held)} more, but only "
            f"{format_bytes(room)} is free above it: at most {format_bytes(held + room)}"
        )
    return None


def refusal(group: KernelGroup, requested: int, pid: int | str = "self") -> str | None:
    """Return why the group's limit must not become ``requested`` now (one line), or None: measured, then decided."""
    room, _ = parent_room_bytes(pid)
    return decide_limit(requested, group.limit_bytes(), group.held_bytes(), room)


def move_limit(group: KernelGroup, requested: int, pid: int | str = "self") -> int:
    """Set the group's limit to ``requested`` if ``decide_limit`` allows it; return the old limit.

    ``pid`` is a process in the group (the kernel itself by default), whose view of the limits above says
    how much room there is.
    Raises ``GroupError`` with one line when it must not or the OS refuses (v1 answers EBUSY when the kernel
    cannot reclaim down to the new limit).
    """
    current = group.limit_bytes()
    problem = refusal(group, requested, pid)
    if problem:
        raise GroupError(problem)
    try:
        group.set_limit(requested)
    except OSError as exc:
        if current is not None:
            try:
                group.set_limit(current)
            except OSError:
                pass
        raise GroupError(f"the system refused a limit of {format_bytes(requested)}: {exc.strerror or exc}") from exc
    return current or 0


def scope_set_limit(name: str, limit_bytes: int) -> None:
    """Move a systemd scope's limit through systemd (where its memory.max is not writable directly)."""
    import subprocess

    try:
        subprocess.run(
            ["systemctl", "--user", "set-property", "--runtime", name, f"MemoryMax={limit_bytes}"],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        raise OSError(f"systemctl --user set-property {name} failed: {exc}") from exc


# -- the supervisor's part ------------------------------------------------------------------------------


class KernelLimit:
    """What the supervisor does about a per-kernel limit: the group (or None), the kernel's env, what to say.

    Made and used by the supervisor's main thread (and, after fork, by the kernel child and the witness).
    """

    def __init__(
        self, limit_bytes: int | None = None, env: dict[str, str] | None = None, message: str | None = None
    ) -> None:
        self.group: KernelGroup | None = None
        self.limit_bytes = limit_bytes
        self.env: dict[str, str] = env or {}
        self.message = message  # one line for the log when the guard's budget alone holds the kernel

    def command(self, argv: list[str]) -> list[str]:
        """Return the kernel's command line (prefixed by ``systemd-run`` for a scope)."""
        return self.group.command(argv, self.limit_bytes or 0) if self.group else argv

    def enter(self, env: dict[str, str] | None = None) -> None:
        """Move the calling process (the forked kernel, before exec) into the group; never raises.

        When it cannot, the kernel's ``env`` goes back to the guard's budget alone, in bytes (a "100%" of
        the parent's limit would not be the limit asked for).
        """
        if self.group is None:
            return
        try:
            self.group.enter()
        except OSError as exc:
            os.write(2, f"kernel-sentinel: the kernel could not enter its memory group: {exc}\n".encode())
            if env is not None:
                env["KERNEL_SENTINEL_MEMORY_LIMIT"] = str(self.limit_bytes)
                env[ENV_GROUP] = f"none|{self.limit_bytes}|could not enter {self.group.directory}: {exc}"

    def cgroup(self, pid: int | None = None) -> tuple[str, int, str] | None:
        """Return (directory, version, path) of the group, for the OOM-kill counter (v1's is not hierarchical).

        ``pid``, the kernel: a scope's directory is known once systemd-run has put it there.
        """
        g = self.group
        if g is not None and g.directory is None and pid:
            g.locate(pid)
        if g is None or not g.directory:
            return None
        if g.mechanism == "systemd scope":
            # systemd removes an empty scope at once, its memory.events (and the OOM-kill counter) with it, so the
            # counter a death is judged by would be gone: the parent slice's counts the scope's kills too (v2's
            # memory.events is hierarchical), read before the kernel starts and after it ends.
            return (os.path.dirname(g.directory.rstrip("/")), g.version, g.path or g.directory)
        return (g.directory, g.version, g.path or g.directory)

    def finish(self, home: Path, wait: float = 0.0) -> None:
        """Remove the group now that the kernel has ended (kept, for a later sweep, while processes remain).

        ``wait``: seconds to let processes leave first. The witness's kernel is an orphan that init reaps on its
        own time, and until then it still counts in the group (a witness quick to record found it there and
        left the group behind, 1 run in 2); the supervisor has reaped its own kernel already.
        """
        deadline = time.monotonic() + wait
        while self.group is not None and self.group.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.group is not None and not self.group.remove(home):
            os.write(2, f"kernel-sentinel: {self.group.directory} still holds processes; a later start removes it\n".encode())


def start_for_kernel(
    kernel_id: str, home: Path, env: Mapping[str, str] | None = None, plan: GroupPlan | None = None
) -> KernelLimit:
    """Return the kernel's own group with the limit the kernelspec asks for (``KERNEL_SENTINEL_GROUP_LIMIT``).

    A percentage is of what the machine allows the supervisor now. The guard's budget is the group's limit
    (``KERNEL_SENTINEL_MEMORY_LIMIT=100%`` of what the kernel is allowed, so it follows the group, and the
    guard does not take 80% of the 80% again). Where no group can be made the guard's budget alone holds
    the kernel (``KERNEL_SENTINEL_MEMORY_LIMIT`` in bytes), and ``message`` says so. ``plan``: where
    (``plan_group()`` of this process by default).
    """
    from ..memory import snapshot
    from ..sizes import SizeError

    env = os.environ if env is None else env
    text = (env.get(ENV_LIMIT) or "").strip()
    plan = plan_group() if plan is None else plan
    try:
        sweep_groups(home, also_under=plan.parent)
    except OSError:
        pass
    if not text:
        return KernelLimit()
    try:
        limit = parse_size(text, of=snapshot(rlimits=False).budget_bytes if text.endswith("%") else None)
    except SizeError as exc:
        return KernelLimit(message=f"{ENV_LIMIT}={text!r}: {exc}; no memory group for this kernel")
    out = KernelLimit(limit_bytes=limit, env={"KERNEL_SENTINEL_MEMORY_LIMIT": str(limit)})
    try:
        out.group = KernelGroup.create(plan, group_name(os.getpid(), kernel_id), limit, home)
    except GroupError as exc:
        out.message = f"{exc}; the guard's budget of {format_bytes(limit)} alone holds kernel {kernel_id}"
        out.env[ENV_GROUP] = f"none|{limit}|{exc}"
        return out
    # In a group of its own the guard's budget is the group's limit, read from the cgroup at every refresh:
    # "100%" of what the machine allows follows the group when its limit moves (a fixed number would not).
    out.env["KERNEL_SENTINEL_MEMORY_LIMIT"] = "100%"
    out.env[ENV_GROUP] = f"{out.group.mechanism}|{limit}|{out.group.directory or out.group.name}"
    return out


# -- leftovers ------------------------------------------------------------------------------------------


def sweep_groups(home: Path, also_under: str | None = None) -> list[str]:
    """Remove groups we made whose supervisor is gone and which hold no process; return their directories.

    Looks at the groups remembered under ``home`` and at ``also_under`` (the caller's own memory group,
    where a supervisor with another home may have left one).
    """
    candidates: set[str] = set()
    folder = home / "kernel-groups"
    if folder.is_dir():
        for entry in folder.iterdir():
            try:
                candidates.add(entry.read_text().strip())
            except OSError:
                continue
    if also_under and os.path.isdir(also_under):
        try:
            candidates.update(os.path.join(also_under, n) for n in os.listdir(also_under) if owner_pid(n) is not None)
        except OSError:
            pass
    removed = []
    for directory in sorted(candidates):
        name = os.path.basename(directory)
        owner = owner_pid(name)
        if owner is None:
            continue
        if not os.path.isdir(directory):
            _forget(home, name)
            continue
        if _supervisor_alive(owner):
            continue
        version = 1 if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")) else 2
        group = KernelGroup("leftover", directory, version, name, None)
        if group.remove(home):
            removed.append(directory)
    return removed


def _supervisor_alive(pid: int) -> bool:
    """Return True while ``pid`` runs a kernel-sentinel supervisor (a reused pid running anything else is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"kernel_sentinel" in f.read()
    except OSError:
        return False


def _remember(home: Path, group: KernelGroup) -> None:
    folder = home / "kernel-groups"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / group.name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{group.directory}\n")
    except OSError:
        pass  # the sweep still finds it beside the next supervisor's own group


def _forget(home: Path, name: str) -> None:
    try:
        (home / "kernel-groups" / name).unlink()
    except OSError:
        pass


def sweep_now() -> list[str]:
    """Sweep leftovers for ``kernel-sentinel budget``: those remembered in the store's home and beside our group."""
    from ..store import home_dir

    try:
        return sweep_groups(home_dir(), also_under=plan_group().parent)
    except OSError:
        return []
