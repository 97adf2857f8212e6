"""Per-kernel memory groups without a kernel: where one can be made, its limit moved, leftovers swept.

Real cgroups: every group here is a child of a <= 1 GiB group the test made (``memory_cgroup``), holding
real processes; the pure decisions (``decide_limit``, ``more_room_fact``, ``describe_source``) are checked
on plain numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import GiB, MiB

from kernel_sentinel.autopsy.kernel_group import (
    GroupError,
    KernelGroup,
    decide_limit,
    describe_source,
    group_name,
    more_room_fact,
    move_limit,
    nice_size,
    owner_pid,
    plan_group,
    start_for_kernel,
    sweep_groups,
)
from kernel_sentinel.confine import confined_command

HOLD = (
    "import sys\n"
    "b = bytearray(b'x') * int(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
)


def holder(directory: str, nbytes: int = 0) -> subprocess.Popen:
    """Start a process in the cgroup ``directory`` that touches ``nbytes`` and waits for a line on stdin."""
    argv = confined_command([sys.executable, "-c", HOLD, str(nbytes)], cgroup=SimpleNamespace(directory=directory))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


@pytest.fixture
def parent(memory_cgroup):
    """A 1 GiB group made by the test, with a process in it standing for the supervisor."""
    group = memory_cgroup(GiB)
    if group.version != 1:
        pytest.skip("the real per-kernel group tests need a cgroup v1 memory controller")
    proc = holder(group.directory)
    yield SimpleNamespace(group=group, pid=proc.pid)
    release(proc)


def make(parent, name: str, limit: int, home: Path | None = None) -> KernelGroup:
    plan = plan_group(parent.pid)
    assert plan.mechanism == "cgroup v1" and plan.parent == parent.group.directory, plan
    return KernelGroup.create(plan, name, limit, home)


def test_a_kernel_group_is_a_child_of_the_supervisors_group_with_its_limit(parent, tmp_path: Path) -> None:
    group = make(parent, group_name(parent.pid, "k1"), 300 * MiB, tmp_path)
    try:
        assert os.path.dirname(group.directory) == parent.group.directory
        assert group.limit_bytes() == 300 * MiB
        with open(os.path.join(group.directory, "memory.limit_in_bytes")) as f:
            assert int(f.read()) == 300 * MiB
        assert (tmp_path / "kernel-groups" / group.name).read_text().strip() == group.directory
        assert oct((tmp_path / "kernel-groups").stat().st_mode & 0o777) == "0o700"
        assert oct((tmp_path / "kernel-groups" / group.name).stat().st_mode & 0o777) == "0o600"
        proc = holder(group.directory, 50 * MiB)
        assert group.pids() == [proc.pid]
        assert not group.remove(tmp_path)  # never removed (nor killed) while a process is in it
        assert os.path.isdir(group.directory)
        release(proc)
    finally:
        assert group.remove(tmp_path)
    assert not os.path.exists(group.directory)
    assert not (tmp_path / "kernel-groups" / group.name).exists()


def test_the_limit_moves_up_and_down_but_never_below_what_the_kernel_holds(parent) -> None:
    group = make(parent, group_name(parent.pid, "k2"), 300 * MiB)
    proc = holder(group.directory, 150 * MiB)
    try:
        move_limit(group, 400 * MiB, proc.pid)
        assert group.limit_bytes() == 400 * MiB
        move_limit(group, 200 * MiB, proc.pid)
        assert group.limit_bytes() == 200 * MiB
        with pytest.raises(GroupError) as below:
            move_limit(group, 100 * MiB, proc.pid)
        assert "already holds" in str(below.value) and "\n" not in str(below.value)
        assert group.limit_bytes() == 200 * MiB
        with pytest.raises(GroupError) as above:
            move_limit(group, 2 * GiB, proc.pid)  # the test's parent group has 1 GiB in all
        assert "is free above it: at most" in str(above.value) and "\n" not in str(above.value)
        assert group.limit_bytes() == 200 * MiB
    finally:
        release(proc)
        group.remove()


def test_leftovers_of_a_dead_supervisor_are_swept_only_when_empty(parent, tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    empty = make(parent, group_name(dead, "left-empty"), 200 * MiB, tmp_path)
    busy = make(parent, group_name(dead, "left-busy"), 200 * MiB, tmp_path)
    alive = make(parent, group_name(parent.pid, "owner-alive"), 200 * MiB, tmp_path)  # its owner is no supervisor
    proc = holder(busy.directory)
    try:
        removed = sweep_groups(tmp_path)
        assert empty.directory in removed and not os.path.exists(empty.directory)
        assert os.path.isdir(busy.directory)  # a process is still in it: kept, and that process untouched
        assert proc.poll() is None
        assert alive.directory in removed  # pid of a process that is not a kernel-sentinel supervisor
        release(proc)
        assert sweep_groups(tmp_path) == [busy.directory]
        assert not list((tmp_path / "kernel-groups").iterdir())
    finally:
        if proc.poll() is None:
            release(proc)
        for g in (empty, busy, alive):
            g.remove()


def test_sweep_finds_leftovers_beside_its_own_group_made_with_another_home(parent, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = make(parent, group_name(int(dead.stdout), "other-home"), 200 * MiB, None)
    stranger = os.path.join(parent.group.directory, "not-ours-1")
    os.mkdir(stranger)
    try:
        assert sweep_groups(tmp_path / "empty-home", also_under=parent.group.directory) == [left.directory]
        assert os.path.isdir(stranger)  # a name that is not ours is never touched
    finally:
        os.rmdir(stranger)
        left.remove()


def test_start_for_kernel_resolves_the_limit_and_says_when_it_cannot(tmp_path: Path) -> None:
    assert start_for_kernel("k", tmp_path, {}).group is None
    bad = start_for_kernel("k", tmp_path, {"KERNEL_SENTINEL_GROUP_LIMIT": "lots"})
    assert bad.group is None and "KERNEL_SENTINEL_GROUP_LIMIT='lots'" in bad.message and "\n" not in bad.message


def test_decisions_on_plain_numbers() -> None:
    assert decide_limit(400 * MiB, 300 * MiB, 100 * MiB, 500 * MiB) is None
    assert "already holds" in decide_limit(90 * MiB, 300 * MiB, 100 * MiB, 500 * MiB)
    assert "at most 600 MiB" in decide_limit(GiB, 300 * MiB, 100 * MiB, 500 * MiB)  # what it holds + what is free
    assert decide_limit(250 * MiB, 300 * MiB, 100 * MiB, 0) is None  # down needs no room
    assert owner_pid("ks-kernel-123-abc") == 123 and owner_pid("ks-kernel-9-x.scope") == 9
    assert owner_pid("ks-test-123-0-5") is None and owner_pid("ks-kernel-x-1") is None
    src = "cgroup v1 /process_api/abc/ks-test-1-0-2/ks-kernel-77-abc"
    assert describe_source(src) == "this kernel's own memory group (cgroup v1 .../ks-kernel-77-abc)"
    assert describe_source("cgroup v1 /process_api/abc") is None and describe_source("system RAM") is None
    assert nice_size(700 * MiB) == "768M" and nice_size(GiB + 1) == "2G"


def test_more_room_fact_offers_the_exact_command_only_when_the_parent_has_room() -> None:
    ev = {
        "requested_bytes": 400 * MiB,
        "group_limit_bytes": 300 * MiB,
        "group_room_bytes": 800 * MiB,
        "machine_available_bytes": 9 * GiB + 100 * MiB,
    }
    assert more_room_fact(ev) == "`%sentinel budget 768M` gives this kernel 468 MiB more; the machine has 9.1 GiB available."
    assert more_room_fact({**ev, "group_room_bytes": 200 * MiB}) is None
    assert more_room_fact({"requested_bytes": 400 * MiB}) is None  # no group of its own: nothing to offer
    big = {**ev, "group_limit_bytes": 2 * GiB, "requested_bytes": GiB, "group_room_bytes": 4 * GiB}
    assert more_room_fact(big).startswith("`%sentinel budget 3G` gives this kernel 1.0 GiB more")


def fake_v2(tmp_path: Path, leaf: str, delegated: dict[str, str]) -> Path:
    """Build a cgroup v2 tree as a machine would show it (files only: the decision reads files).

    ``delegated`` maps a group's path to its ``cgroup.subtree_control``; returns the fake /proc.
    """
    mount = tmp_path / "cgroup2"
    parts = [p for p in leaf.split("/") if p]
    for depth in range(len(parts) + 1):
        group = mount.joinpath(*parts[:depth])
        group.mkdir(parents=True, exist_ok=True)
        (group / "memory.current").write_text("1000\n")
        (group / "cgroup.subtree_control").write_text(delegated.get("/" + "/".join(parts[:depth]), "") + "\n")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(f"0::{leaf}\n")
    (proc / "self" / "mountinfo").write_text(f"30 25 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n")
    return proc


def test_cgroup_v2_uses_the_nearest_ancestor_that_delegates_memory(tmp_path: Path, monkeypatch) -> None:
    proc = fake_v2(
        tmp_path,
        "/user.slice/user-1000.slice/user@1000.service/app.slice/jupyter.service",
        {"/user.slice/user-1000.slice/user@1000.service/app.slice": "cpu memory pids", "/user.slice": "memory"},
    )
    plan = plan_group(proc=str(proc))
    assert plan.mechanism == "cgroup v2" and plan.version == 2
    assert plan.parent == str(tmp_path / "cgroup2/user.slice/user-1000.slice/user@1000.service/app.slice")
    assert plan.parent_path == "/user.slice/user-1000.slice/user@1000.service/app.slice"


def test_cgroup_v2_without_delegation_falls_back_to_a_systemd_scope_or_the_guard(tmp_path: Path, monkeypatch) -> None:
    proc = fake_v2(tmp_path, "/docker/abc", {})
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "no-runtime"))
    plan = plan_group(proc=str(proc))
    assert plan.mechanism == "none" and "without a delegated subtree" in plan.reason
    started = start_for_kernel("k", tmp_path, {"KERNEL_SENTINEL_GROUP_LIMIT": "300M"}, plan=plan)
    assert started.group is None and started.env["KERNEL_SENTINEL_MEMORY_LIMIT"] == str(300 * MiB)
    assert "the guard's budget of 300 MiB alone holds kernel k" in started.message
    from kernel_sentinel.autopsy.group_budget import group_line

    assert group_line(started.env).startswith("Memory group: none of its own (cgroup v2 without a delegated subtree above")
    # Where no supervisor runs (macOS, Windows), the kernelspec's request alone: the guard holds the kernel.
    assert "no kernel-sentinel supervisor started this kernel" in group_line({"KERNEL_SENTINEL_GROUP_LIMIT": "4G"})
    assert group_line({}) is None

    (tmp_path / "runtime" / "systemd").mkdir(parents=True)
    (tmp_path / "runtime" / "systemd" / "private").write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    if plan_group(proc=str(proc)).mechanism != "systemd scope":
        pytest.skip("no systemd-run on this machine")
    scope = start_for_kernel("k", tmp_path, {"KERNEL_SENTINEL_GROUP_LIMIT": "300M"}, plan=plan_group(proc=str(proc)))
    argv = scope.command(["python", "-m", "ipykernel_launcher"])
    assert argv[:4] == ["systemd-run", "--user", "--scope", "--quiet"] and f"MemoryMax={300 * MiB}" in argv
    assert argv[-3:] == ["python", "-m", "ipykernel_launcher"] and scope.env["KERNEL_SENTINEL_KERNEL_GROUP"].startswith(f"systemd scope|{300 * MiB}|ks-kernel-")


def test_a_kernel_that_cannot_enter_its_group_gets_the_guards_budget_in_bytes(parent, tmp_path: Path) -> None:
    started = start_for_kernel("k", tmp_path, {"KERNEL_SENTINEL_GROUP_LIMIT": "300M"}, plan=plan_group(parent.pid))
    env = dict(started.env)
    assert env["KERNEL_SENTINEL_MEMORY_LIMIT"] == "100%"  # in its group: the guard follows the group's limit
    assert started.group.remove() and not os.path.exists(started.group.directory)  # gone before the kernel entered
    started.enter(env)
    assert env["KERNEL_SENTINEL_MEMORY_LIMIT"] == str(300 * MiB) and env["KERNEL_SENTINEL_KERNEL_GROUP"].startswith("none|")
