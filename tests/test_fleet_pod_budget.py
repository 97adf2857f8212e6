"""Inside a Kubernetes pod with memory.oom.group=1, the budget every kernel sees is the pod's, shared with the
server and the other kernels: kernel_sentinel.memory read on captured cgroup v2 files of such a pod (one Jupyter
server and two kernels in one container group; samples/k8s_pod/README); and the guard's fence in a real memory
group shared with another process (cgroup v1 here: the sharing is the same, memory.oom.group is v2's alone),
beside a stock kernel in the same group doing the same."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_sentinel.memory import MemoryReader, parse

POD = Path(__file__).parent / "samples" / "k8s_pod"
SERVER, KERNEL_A, KERNEL_B = 7, 41, 57
MiB = 1 << 20


@pytest.fixture
def pod(tmp_path: Path) -> Path:
    """Return a /proc whose mountinfo puts the pod's cgroup files at a temporary /sys/fs/cgroup."""
    cgroup = tmp_path / "sys" / "fs" / "cgroup"
    shutil.copytree(POD / "cgroup", cgroup)
    proc = tmp_path / "proc"
    mountinfo = (POD / "proc" / "mountinfo").read_text().replace(" /sys/fs/cgroup ", f" {cgroup} ")
    limits = (Path(__file__).parent / "samples" / "memory" / "v1" / "proc_limits").read_text()
    for pid in (SERVER, KERNEL_A, KERNEL_B):
        for key in (str(pid), "self") if pid == KERNEL_A else (str(pid),):
            (proc / key).mkdir(parents=True, exist_ok=True)
            shutil.copy(POD / "proc" / str(pid) / "status", proc / key / "status")
            shutil.copy(POD / "proc" / str(pid) / "cgroup", proc / key / "cgroup")
            (proc / key / "mountinfo").write_text(mountinfo)
            (proc / key / "limits").write_text(limits)
    shutil.copy(Path(__file__).parent / "samples" / "memory" / "v1" / "meminfo", proc / "meminfo")
    (proc / "pressure").mkdir()
    shutil.copy(Path(__file__).parent / "samples" / "memory" / "v1" / "pressure_memory", proc / "pressure" / "memory")
    return proc


def _rss(pid: int, key: str = "VmRSS") -> int:
    return parse.parse_proc_status((POD / "proc" / str(pid) / "status").read_text())[key]


def test_each_kernel_gets_the_pods_budget_and_shares_its_headroom(pod: Path):
    a = MemoryReader(KERNEL_A, proc=str(pod)).snapshot()
    b = MemoryReader(KERNEL_B, proc=str(pod)).snapshot()
    pod_max = int((POD / "cgroup" / "memory.max").read_text())
    current = int((POD / "cgroup" / "memory.current").read_text())
    assert pod_max == 2 << 30 and (POD / "cgroup" / "memory.oom.group").read_text().strip() == "1"
    # the budget of each kernel is the whole pod's, read from the container's own (namespaced) group
    assert a.budget_bytes == b.budget_bytes == pod_max
    assert a.source.startswith("cgroup v2") and a.cgroup.limit_bytes == pod_max
    # ...and what is left of it is the same for both: the server's and the other kernel's memory count
    assert a.available_bytes == b.available_bytes
    anon_of_all = sum(_rss(p, "RssAnon") for p in (SERVER, KERNEL_A, KERNEL_B))
    assert pod_max - current <= a.available_bytes <= pod_max - anon_of_all
    alone = pod_max - _rss(KERNEL_A)  # what kernel A would think it had if it counted only itself
    assert a.available_bytes < alone - 500 * MiB  # kernel B's 520 MiB and the server's 160 MiB are not A's
    # the process's own figures are its own
    assert a.process.rss_bytes == _rss(KERNEL_A) and b.process.rss_bytes == _rss(KERNEL_B)
    # one earlier OOM kill took the whole group (memory.oom.group): it is seen by every kernel in the pod
    assert a.cgroup.oom_kills == b.cgroup.oom_kills == 1


def test_an_allocation_that_fits_the_kernel_but_not_the_pod(pod: Path):
    """The guard's question for kernel A asking 1 GiB: the pod has ~430 MiB left although kernel A uses only
    ~950 MiB of 2 GiB; answering from the pod's headroom is what keeps the other kernel and the server alive
    (an OOM kill would take all three, memory.oom.group=1)."""
    a = MemoryReader(KERNEL_A, proc=str(pod)).snapshot()
    request = 1 << 30
    assert request < a.budget_bytes - _rss(KERNEL_A)  # fits what the kernel alone uses
    assert request > a.available_bytes  # but not what the pod has left: the guard refuses it


# What else the pod holds (the server and the other kernel): a process in the kernel's own memory group that
# touches HOLD bytes once it is inside and keeps them until it is told to end.
HOLD = 200 * MiB
HOLDER = (
    "import sys\n"
    "sys.stdin.readline()\n"
    f"held = b'x' * {HOLD}\n"
    "print('holding', flush=True)\n"
    "sys.stdin.readline()\n"
)
# 300 MiB at once: fits a 512 MiB group with the kernel alone in it (~100-150 MiB), not beside the holder.
CELL = "big = b'y' * (300 << 20)"
LAUNCH = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
SENTINEL = {"argv": LAUNCH, "display_name": "sentinel", "language": "python"}


def _share_group_with_a_holder(k) -> subprocess.Popen:
    """Start the holder, move it into the kernel's group, then have it take its memory there (charged there)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    k.cgroup.add(holder.pid)
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _end(holder: subprocess.Popen) -> int | None:
    """End the holder we started; return its exit status (negative: the signal that ended it first)."""
    status = holder.poll()
    if status is None:
        holder.send_signal(signal.SIGTERM)
        holder.wait(30)
    return status


@pytest.mark.cgroup
def test_the_guard_refuses_what_the_shared_group_cannot_take_and_everyone_lives(kernel):
    k = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    holder = _share_group_with_a_holder(k)
    try:
        oom_before = k.oom_kills()
        res = k.run(CELL)
        assert res.ename == "MemoryBudgetError", res.text()
        assert k.alive and holder.poll() is None  # the kernel, and what shares its group, both live
        assert k.oom_kills() == oom_before
        assert k.value("1 + 1") == 2
    finally:
        assert _end(holder) is None
    # the same cell once the holder is gone: it was refused for what shares the group, not for itself
    assert k.run(CELL).status == "ok" and k.oom_kills() == oom_before


@pytest.mark.cgroup
def test_control_a_stock_kernel_beside_the_same_holder_meets_the_oom_killer(kernel):
    k = kernel(limit_bytes=512 * MiB)
    holder = _share_group_with_a_holder(k)
    try:
        res = k.run(CELL)
        holder_status = holder.poll()
        if res.status != "died" and holder_status is None:  # the OOM killer may have taken the holder instead
            try:
                holder_status = holder.wait(30)
            except subprocess.TimeoutExpired:
                pass
        assert k.oom_kills() >= 1, res.text()  # in a pod with memory.oom.group=1 this takes everyone
        assert res.status == "died" or holder_status == -signal.SIGKILL
    finally:
        _end(holder)
