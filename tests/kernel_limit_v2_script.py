"""Run inside the cgroup v2 VM (tests/cgroup2_vm.py) by tests/test_kernel_limit_v2.py; prints one ``RESULT {json}`` line.

Plays a delegating service (a systemd unit with ``Delegate=yes``: memory enabled in its
``cgroup.subtree_control``, the server in a leaf of its own), then does what a supervisor does for two
kernels: plans, makes each kernel's group, moves one's limit, lets one run away inside its 64 MiB group,
removes the group, sweeps a leftover. Every process that grows does so in a group of at most 128 MiB, in a
VM of 1 GiB. The host-side test asserts on what this prints. Run it with the argument ``kernel_sentinel``:
a sweep takes a group's owner for alive only while its command line names kernel_sentinel, as a
supervisor's does (without it, the second kernel's start would sweep the first kernel's group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = "/sys/fs/cgroup"
HOLDER = """
import sys
held = []
for line in sys.stdin:
    if line.startswith("hold"):
        held.append(bytearray(b"x") * (int(line.split()[1]) << 20))
        print("ok", flush=True)
    elif line.startswith("grow"):
        while True:
            held.append(bytearray(b"x") * (8 << 20))
"""


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def holder(limit) -> subprocess.Popen:
    """Start a process that enters the kernel's group before exec, as the supervisor's forked kernel does."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=limit.enter,
    )  # fmt: skip


def ask(proc: subprocess.Popen, line: str) -> str:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def main() -> dict:
    from kernel_sentinel.autopsy.kernel_group import (
        GroupError, KernelGroup, describe_source, group_name, move_limit, own_group, plan_group,
        start_for_kernel, sweep_groups,
    )  # fmt: skip
    from kernel_sentinel.memory import oom_kill_counter, snapshot

    out: dict = {"controllers": read(f"{ROOT}/cgroup.controllers")}
    service, server = f"{ROOT}/jupyter.service", f"{ROOT}/jupyter.service/server"
    write(f"{ROOT}/cgroup.subtree_control", "+memory")
    os.makedirs(server)
    write(f"{service}/cgroup.subtree_control", "+memory")  # Delegate=yes: memory for the service's children
    write(f"{server}/cgroup.procs", str(os.getpid()))  # the supervisor (and server) in a leaf of their own
    plan = plan_group()
    out["plan"] = {"mechanism": plan.mechanism, "parent": plan.parent, "parent_path": plan.parent_path}

    home = Path("/dev/shm/ks-home")
    first = start_for_kernel("k1", home, {"KERNEL_SENTINEL_GROUP_LIMIT": "64M"}, plan=plan)
    second = start_for_kernel("k2", home, {"KERNEL_SENTINEL_GROUP_LIMIT": "64M"}, plan=plan)
    g1 = first.group
    out["group"] = {
        "directory": g1.directory,
        "memory.max": read(f"{g1.directory}/memory.max"),
        "memory.swap.max": read(f"{g1.directory}/memory.swap.max"),
        "env": first.env,
        "remembered": read(str(home / "kernel-groups" / g1.name)),
        "message": first.message,
    }
    wild, calm = holder(first), holder(second)
    out["hold"] = [ask(wild, "hold 32"), ask(calm, "hold 32")]
    found = own_group(wild.pid)
    out["own_group"] = found.directory if found else None
    out["own_group_other"] = own_group(calm.pid).directory
    snap = snapshot(wild.pid, rlimits=False)
    out["budget"] = {"bytes": snap.budget_bytes, "source": snap.source, "described": describe_source(snap.source)}
    out["held_bytes"] = found.held_bytes()

    moves = {}
    for size in (128 << 20, 16 << 20, 2 << 30, 64 << 20):
        try:
            move_limit(found, size, wild.pid)
            moves[str(size)] = ["ok", read(f"{g1.directory}/memory.max")]
        except GroupError as exc:
            moves[str(size)] = ["refused", str(exc), read(f"{g1.directory}/memory.max")]
    out["moves"] = moves

    wild.stdin.write("grow\n")  # runs away inside its own 64 MiB group
    wild.stdin.flush()
    out["wild_returncode"] = wild.wait(timeout=300)
    out["oom_kills"] = {
        "wild": oom_kill_counter(g1.directory, 2),
        "calm": oom_kill_counter(second.group.directory, 2),
        "server_leaf": oom_kill_counter(server, 2),
    }
    out["calm_more"] = ask(calm, "hold 16")  # the other kernel still gets memory
    out["calm_alive"] = calm.poll() is None

    first.finish(home)
    out["removed"] = not os.path.exists(g1.directory) and not (home / "kernel-groups" / g1.name).exists()
    calm.stdin.close()
    calm.wait(timeout=60)
    second.finish(home)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = KernelGroup.create(plan, group_name(int(dead.stdout), "left"), 64 << 20, home)
    out["swept"] = [sweep_groups(home, also_under=plan.parent), left.directory]
    return out


def scope() -> dict:
    """Run a holder through the ``systemd-run --user --scope`` command line the supervisor uses, when a user manager runs."""
    import time

    from kernel_sentinel.autopsy.kernel_group import (
        GroupPlan, KernelGroup, KernelLimit, group_name, move_limit, own_group, systemd_user_available,
    )  # fmt: skip
    from kernel_sentinel.memory import oom_kill_counter

    if not systemd_user_available():
        return {"available": False}
    limit = KernelLimit(limit_bytes=64 << 20)
    limit.group = KernelGroup.create(GroupPlan("systemd scope", None, 2), group_name(os.getpid(), "s1"), 64 << 20)
    argv = limit.command([sys.executable, "-c", HOLDER])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out: dict = {"available": True, "argv": argv[:5], "hold": ask(proc, "hold 16")}
    counter = limit.cgroup(proc.pid)  # the same pid: systemd-run execs the kernel inside the scope
    located = (limit.group.directory,) if counter else None
    group = own_group(proc.pid)
    out["located"] = located[0] if located else None
    # What the supervisor judges a death by: the parent slice's counter (the scope's goes with the scope).
    out["counter_dir"] = counter[0] if counter else None
    counted_before = oom_kill_counter(counter[0], 2) if counter else None
    out["own"] = [group.directory, group.mechanism] if group else None
    out["memory.max"] = read(f"{located[0]}/memory.max") if located else None
    out["memory.swap.max"] = read(f"{located[0]}/memory.swap.max") if located else None
    move_limit(group, 96 << 20, proc.pid)
    out["moved"] = read(f"{located[0]}/memory.max")
    proc.stdin.write("grow\n")
    proc.stdin.flush()
    out["returncode"] = proc.wait(timeout=300)
    # systemd removes the scope as soon as it is empty: its own counter goes with it; v2's is hierarchical.
    out["oom_kills"] = [oom_kill_counter(located[0], 2), oom_kill_counter(os.path.dirname(located[0]), 2)]
    out["counted"] = [counted_before, oom_kill_counter(counter[0], 2)]
    deadline = time.monotonic() + 30
    while os.path.exists(located[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    out["removed"] = not os.path.exists(located[0])  # systemd's to remove (--collect)
    return out


if __name__ == "__main__":
    try:
        result = main()
        result["scope"] = scope()
    except Exception:
        result = {"error": traceback.format_exc()}
    print("RESULT " + json.dumps(result), flush=True)
