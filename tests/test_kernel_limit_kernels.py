"""Each sentinel kernel in a memory group of its own, with real kernels: made, moved live, removed, isolated.

Every kernel's supervisor runs in a <= 1 GiB group the test made (the harness's, or ``memory_cgroup``'s);
the kernel's own group is a child of it. Killer cells run only there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import GiB, MiB

from kernel_sentinel.autopsy.kernel_group import own_group
from kernel_sentinel.confine import confined_command
from kernel_sentinel.identity import kernel_id_from_connection_file
from kernel_sentinel.kernelspec import kernelspec_dict

GUARD = "__import__('kernel_sentinel.guard', fromlist=['x']).get_guard()"
RUNAWAY = "x = []\nwhile True:\n    x.append(bytearray(b'x') * (8 << 20))"


def sentinel_spec(limit: str = "300M", parent: str | None = None) -> dict:
    """The kernelspec ``kernel-sentinel install --memory-limit LIMIT`` writes (its supervisor in ``parent``)."""
    spec = kernelspec_dict(memory_limit=limit)
    if parent is not None:
        spec["argv"] = confined_command(spec["argv"], cgroup=SimpleNamespace(directory=parent))
    return spec


def gone(path: str, wait: float = 30.0) -> bool:
    """Return True once ``path`` no longer exists (the supervisor removes it after the kernel ended)."""
    deadline = time.monotonic() + wait
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(path)


def ours(res) -> list[str]:
    """Return the lines ``%sentinel budget`` printed (other parts may add their own notes after a cell)."""
    return [line for line in res.stdout.splitlines() if line.startswith(("%sentinel budget", "Budget:"))]


def test_each_kernel_runs_in_its_own_group_which_goes_away_with_it(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"))
    group = own_group(k.kernel_pid)
    assert group is not None, "the kernel is not in a group of its own"
    assert os.path.dirname(group.directory) == k.cgroup.directory  # a child of the supervisor's group
    assert group.limit_bytes() == 300 * MiB
    assert k.kernel_pid in group.pids() and k.pid not in group.pids()  # the supervisor stays outside
    assert k.value(f"{GUARD}.budget_bytes") == 300 * MiB  # the guard's budget is the group's limit

    res = k.run("%sentinel budget")
    assert res.stdout.startswith("Budget: 300 MiB, set by this kernel's own memory group (cgroup v1 .../ks-kernel-"), res.text()
    res = k.run("%sentinel")
    assert "Memory group: this kernel's own (cgroup v1 " in res.stdout and "limit 300 MiB" in res.stdout, res.text()
    assert f"Budget: 300 MiB, set by this kernel's own memory group (cgroup v1 .../{group.name})" in res.text()
    cli = subprocess.run(
        [sys.executable, "-m", "kernel_sentinel", "budget", "--pid", str(k.kernel_pid)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    flat = " ".join(cli.stdout.split())  # rich wraps the headline where the group's path is long (CI's is)
    assert "this kernel's own memory group" in flat and group.name in flat, cli.stdout

    k.km.shutdown_kernel(now=False)  # what a frontend's "Shut down kernel" sends
    assert gone(group.directory), f"{group.directory} outlived its kernel"


def test_a_sigkilled_supervisors_group_is_removed_by_its_witness(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"))
    group = own_group(k.kernel_pid)
    assert group is not None
    k.signal(signal.SIGKILL, to_launcher=True)  # the supervisor alone; the kernel follows (PDEATHSIG)
    assert k.wait_for_death() is not None
    assert gone(group.directory), f"{group.directory} outlived its SIGKILLed supervisor"


def killed_with_its_process_group(k) -> str:
    """SIGKILL supervisor, witness and kernel at once (jupyter_client's forced shutdown); return the group left."""
    group = own_group(k.kernel_pid)
    assert group is not None
    os.killpg(k.pid, signal.SIGKILL)  # nobody is left to remove the group
    assert k.wait_for_death() is not None
    deadline = time.monotonic() + 30
    while group.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.isdir(group.directory) and not group.pids()
    return group.directory


def test_leftovers_of_a_killed_process_group_are_swept_by_the_next_start_and_by_budget(kernel) -> None:
    first = killed_with_its_process_group(kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M")))
    second = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"))  # the next kernel's supervisor sweeps
    assert not os.path.exists(first), "the next kernel's start did not sweep the leftover group"
    left = killed_with_its_process_group(second)
    cli = subprocess.run([sys.executable, "-m", "kernel_sentinel", "budget"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert not os.path.exists(left), "kernel-sentinel budget did not sweep the leftover group"
    assert f"removed the empty leftover memory group {left}" in cli.stderr


def test_sentinel_budget_moves_the_group_live_and_the_guard_follows(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"))
    group = own_group(k.kernel_pid)
    assert group is not None
    res = k.run("import numpy as np\na = np.ones(400 * 1024 * 1024 // 8)")
    assert res.ename == "MemoryBudgetError", res.text()
    hint = "`%sentinel budget 768M` gives this kernel 468 MiB more; the machine has "
    assert hint in res.text() + res.html().replace("<code>", "`").replace("</code>", "`"), res.text()
    # The machine's free memory as a figure ("... the machine has 9.1 GiB available."), and the group as the source.
    assert re.search(re.escape(hint) + r"\d+(\.\d)? [KMGT]iB available\.", res.text()), res.text()
    assert f"Budget: 300 MiB, set by this kernel's own memory group (cgroup v1 .../{group.name})" in res.text()

    res = k.run("%sentinel budget 768M")
    assert res.stdout.startswith("Budget: 768 MiB (768M), set by this kernel's own memory group"), res.text()
    assert group.limit_bytes() == 768 * MiB
    assert k.value(f"{GUARD}.budget_bytes") == 768 * MiB
    res = k.run("a = np.ones(400 * 1024 * 1024 // 8); int(a.sum())")
    assert res.ok, res.text()

    res = k.run("%sentinel budget 200M")  # below the 400 MiB the kernel holds: refused, nothing changes
    assert res.ok and ours(res) == [res.stdout.splitlines()[0]] and "already holds" in res.stdout, res.text()
    assert group.limit_bytes() == 768 * MiB and k.value(f"{GUARD}.budget_bytes") == 768 * MiB
    res = k.run("%sentinel budget 2G")  # more than the 1 GiB parent has: refused
    assert res.ok and len(ours(res)) == 1 and "is free above it: at most" in res.stdout, res.text()
    assert group.limit_bytes() == 768 * MiB

    k.run("del a")
    res = k.run("%sentinel budget 250M")
    assert res.stdout.startswith("Budget: 250 MiB"), res.text()
    assert group.limit_bytes() == 250 * MiB and k.value(f"{GUARD}.budget_bytes") == 250 * MiB
    res = k.run("%sentinel budget 40%")  # a share of what the parent allows (the test's 1 GiB group)
    assert group.limit_bytes() == int(0.4 * GiB) // 4096 * 4096, res.text()  # the kernel keeps whole pages
    res = k.run("%sentinel budget lots")
    assert len(ours(res)) == 1 and ours(res)[0].startswith("%sentinel budget: "), res.text()
    res = k.run("%sentinel budget reset")
    assert group.limit_bytes() == 300 * MiB and k.value(f"{GUARD}.budget_bytes") == 300 * MiB, res.text()

    group.set_limit(350 * MiB)  # moved from outside the kernel: the guard's next full re-read follows it
    deadline = time.monotonic() + 30
    while k.value(f"{GUARD}.budget_bytes") != 350 * MiB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert k.value(f"{GUARD}.budget_bytes") == 350 * MiB
    assert group.oom_kills() == 0 and k.alive


def test_one_kernels_runaway_stops_at_its_own_limit_and_nobody_else_loses_anything(kernel, memory_cgroup) -> None:
    parent = memory_cgroup(GiB)
    if parent.version != 1:
        pytest.skip("needs a cgroup v1 memory controller")
    # A server-like process in the same parent group: holds 100 MiB, and takes 100 MiB more when asked.
    server = subprocess.Popen(
        confined_command(
            [sys.executable, "-c",
             "import sys\nheld = [bytearray(b's') * (100 << 20)]\nprint('ready', flush=True)\n"
             "for line in sys.stdin:\n    held.append(bytearray(b's') * (100 << 20))\n"
             "    print(sum(len(b) for b in held), flush=True)"],
            cgroup=parent,
        ),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout.readline().strip() == "ready"
        calm = kernel(kernelspec=sentinel_spec("400M", parent.directory))  # each kernel its own limit
        wild = kernel(kernelspec=sentinel_spec("300M", parent.directory))
        calm_group, wild_group = own_group(calm.kernel_pid), own_group(wild.kernel_pid)
        assert calm_group and wild_group and calm_group.directory != wild_group.directory
        assert os.path.dirname(calm_group.directory) == os.path.dirname(wild_group.directory) == parent.directory
        res = calm.run("import numpy as np\nkeep = np.full(100 * 1024 * 1024 // 8, 7.0)")
        assert res.ok, (res.text(), calm.value(f"repr({GUARD}.status()['last_failure'])"))

        res = wild.run(RUNAWAY)
        stopped_in_its_group = res.status == "died" and wild_group.oom_kills() > 0
        assert res.ename == "MemoryBudgetError" or stopped_in_its_group, res.text()

        # The other kernel and the server lost nothing and are refused nothing.
        assert calm.alive and calm.value("float(keep.sum()) == 7.0 * keep.size")
        res = calm.run("more = np.ones(50 * 1024 * 1024 // 8); int(more.sum())")
        assert res.ok, (res.text(), calm.value(f"repr({GUARD}.status()['last_failure'])"))
        assert calm_group.oom_kills() == 0
        server.stdin.write("more\n")
        server.stdin.flush()
        assert server.stdout.readline().strip() == str(200 << 20)
        assert server.poll() is None and parent.oom_kills() == 0
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def test_control_the_runaway_cell_kills_a_stock_kernel_in_the_same_size_of_group(kernel) -> None:
    stock = kernel(limit_bytes=300 * MiB)
    res = stock.run(RUNAWAY)
    assert res.status == "died" and stock.oom_kills() > 0, res.text()


def test_without_a_supervisor_the_guards_budget_alone_holds_the_kernel_and_says_so(kernel) -> None:
    # What macOS and Windows get (the launcher execs ipykernel there): no group, the guard's budget.
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"), env={"KERNEL_SENTINEL_SUPERVISE": "0"})
    assert own_group(k.kernel_pid) is None
    assert k.value(f"{GUARD}.budget_bytes") == 300 * MiB
    res = k.run("%sentinel")
    assert "Memory group: none of its own (no kernel-sentinel supervisor started this kernel)" in res.stdout, res.text()
    res = k.run("%sentinel budget 200M")  # the guard's own budget moves, as before
    assert res.stdout.startswith("Budget: 200 MiB"), res.text()


def test_a_kernel_oom_killed_in_its_own_group_is_explained_as_such(kernel) -> None:
    # The guard off: the runaway meets the kernel's own group's limit, and only this kernel dies.
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("300M"), env={"KERNEL_SENTINEL_GUARD": "0"})
    group = own_group(k.kernel_pid)
    assert group is not None
    res = k.run(RUNAWAY)
    assert res.status == "died", res.text()
    assert k.cgroup.oom_kills() == 0  # the supervisor's group (the kernel's parent) saw no OOM kill
    from kernel_sentinel.autopsy import death_report
    from kernel_sentinel.identity import kernel_id_from_connection_file

    report = death_report(kernel_id_from_connection_file(k.km.connection_file), wait=30)
    assert report is not None and report["cause"] == "oom_kill" and report["scope"] == "cgroup", report
    # The counter read is the kernel's own group's (v1's is per group: the parent's would have said 0).
    assert any("OOM-kill counter went 0 -> 1" in line for line in report["evidence"]["proof"]), report["evidence"]
    assert gone(group.directory)  # removed once the death was recorded


def test_a_share_of_what_the_machine_allows_becomes_the_kernels_own_group(kernel) -> None:
    # `kernel-sentinel install --memory-limit 80%`: 80% of what the supervisor is allowed (the test's 1 GiB group).
    k = kernel(limit_bytes=GiB, kernelspec=sentinel_spec("80%"))
    group = own_group(k.kernel_pid)
    assert group is not None and os.path.dirname(group.directory) == k.cgroup.directory
    assert group.limit_bytes() == int(0.8 * GiB) // 4096 * 4096  # the kernel keeps whole pages
    assert k.value(f"{GUARD}.budget_bytes") == group.limit_bytes()
    res = k.run("%sentinel budget")
    assert res.stdout.startswith("Budget: 819 MiB, set by this kernel's own memory group"), res.text()


# A view of this machine as a cgroup v2 host, for the kernel's supervisor alone: a mount namespace of its own
# with every cgroup mount taken away and one cgroup2 mount at /sys/fs/cgroup (what a v2-only host or container
# shows). The processes stay where they were: the kernel is still held by the test's v1 group, out of sight.
V2_VIEW = 'umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"'


def v2_view(argv: list[str]) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", V2_VIEW, "sh", *argv]


def v2_controllers() -> str:
    """Return the memory-relevant controllers a real cgroup2 mount offers here; skip where none can be mounted."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to give the supervisor a cgroup v2 view of its own")
    probe = subprocess.run(
        v2_view(["cat", "/sys/fs/cgroup/cgroup.controllers"]), capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 in a mount namespace of its own here: {probe.stderr.strip()}")
    return probe.stdout


def test_on_a_real_cgroup2_mount_without_a_memory_controller_the_guard_alone_holds_it_said_once(kernel, capfd) -> None:
    # The "none" path on a real cgroup2 mount (not a file tree): no memory controller in cgroup v2 (here
    # it is bound to the v1 hierarchy, FACTS.md; a container whose v2 group has none delegated looks the same).
    if "memory" in v2_controllers().split():
        pytest.skip("this machine's cgroup v2 has a memory controller: the group would be made there")
    spec = sentinel_spec("300M")
    spec["argv"] = v2_view(spec["argv"])
    k = kernel(limit_bytes=GiB, kernelspec=spec)  # the test's 1 GiB v1 group still holds it, whatever it sees
    assert own_group(k.kernel_pid) is None
    assert not [n for n in os.listdir(k.cgroup.directory) if n.startswith("ks-kernel-")]  # no group was made
    why = "cgroup v2 at /sys/fs/cgroup has no memory controller for this process"
    decided = k.value("__import__('os').environ['KERNEL_SENTINEL_KERNEL_GROUP']")
    assert decided == f"none|{300 * MiB}|no memory group of its own: {why}", decided
    assert k.value(f"{GUARD}.budget_bytes") == 300 * MiB  # the guard's budget, from the kernelspec's limit

    res = k.run("%sentinel")
    line = f"Memory group: none of its own ({why}); the guard's budget alone holds this kernel."
    assert line in res.stdout.splitlines(), res.text()
    res = k.run("import numpy as np\na = np.ones(400 * 1024 * 1024 // 8)")  # 400 MiB: over the guard's budget
    assert res.ename == "MemoryBudgetError" and "Budget: 300 MiB" in res.text(), res.text()
    assert "`%sentinel budget " not in res.text()  # no group of its own: no more to offer from the machine
    assert k.alive and k.oom_kills() == 0

    said = [line for line in capfd.readouterr().err.splitlines() if "no memory group of its own" in line]
    kernel_id = kernel_id_from_connection_file(k.km.connection_file)
    alone = f"the guard's budget of 300 MiB alone holds kernel {kernel_id}"
    assert said == [f"kernel-sentinel: no memory group of its own: {why}; {alone}"], said  # once, at start (server log)
