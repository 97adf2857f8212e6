"""The fixture's own proof: it starts real kernels in real cgroups and reproduces the OOM kill."""

from __future__ import annotations

import signal

import pytest
from conftest import MiB
from kernel_harness import kill_signal_name


def test_cells_run_and_report_outputs(kernel):
    k = kernel()
    ok = k.run("x = 41\nprint('hello')\nx + 1")
    assert ok.status == "ok"
    assert ok.stdout == "hello\n"
    assert ok.outputs[0]["data"]["text/plain"] == "42"
    bad = k.run("1/0")
    assert bad.status == "error" and bad.ename == "ZeroDivisionError"
    assert k.value("x") == 41  # the kernel and its variables survived the error
    assert k.alive


@pytest.mark.cgroup
def test_stock_kernel_is_oom_killed_in_a_256_mib_cgroup(kernel):
    k = kernel(limit_bytes=256 * MiB)
    assert k.confinement == "cgroup"
    before = k.oom_kills()
    k.run("import numpy as np")
    res = k.run("a = np.ones(2**28)")  # 2 GiB of float64 in a 256 MiB group
    assert res.status == "died"
    assert k.wait_for_death() == -signal.SIGKILL
    assert kill_signal_name(k.exit_status) == "SIGKILL"
    assert k.oom_kills() == before + 1


@pytest.mark.cgroup
def test_kernel_really_runs_inside_its_cgroup(kernel):
    k = kernel(limit_bytes=512 * MiB)
    assert k.pid in k.cgroup.pids()
    line = k.value("[l for l in open('/proc/self/cgroup').read().splitlines() if 'memory' in l][0]")
    assert line.endswith(k.cgroup.path)


def test_rlimit_confinement_turns_a_huge_allocation_into_memoryerror(kernel):
    # What a laptop without cgroup access gets: the same harness under RLIMIT_DATA instead.
    k = kernel(limit_bytes=1024 * MiB, confine="rlimit")
    assert k.confinement == "rlimit" and k.cgroup is None
    res = k.run("import numpy as np\na = np.ones(2**28)")
    assert res.status == "error" and res.ename == "MemoryError"
    assert k.alive
    assert k.value("__import__('resource').getrlimit(__import__('resource').RLIMIT_DATA)[0]") == 1024 * MiB
