"""`kernel-sentinel budget`: the real command, in a real 300 MB cgroup and outside one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import MiB

from kernel_sentinel.confine import confined_command
from kernel_sentinel.memory import parse, snapshot

CLI = [sys.executable, "-m", "kernel_sentinel"]


def _budget(*args: str, prefix=None) -> subprocess.CompletedProcess:
    argv = [*CLI, "budget", *args]
    return subprocess.run(prefix(argv) if prefix else argv, capture_output=True, text=True, timeout=60)


@pytest.mark.cgroup
def test_inside_a_300_mb_cgroup_the_cgroup_is_the_budget(memory_cgroup):
    group = memory_cgroup(300 * MiB)
    out = _budget("--json", prefix=lambda argv: confined_command(argv, cgroup=group))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["budget_bytes"] == 314572800
    assert data["source"] == f"cgroup v{group.version} {group.path}"
    assert data["cgroup"]["path"] == group.path
    assert 0 < data["available_bytes"] < 314572800
    assert data["notes"] == []


def test_outside_a_limited_cgroup_the_budget_is_available_ram():
    own = snapshot()
    if own.cgroup is not None and own.cgroup.limit_bytes is not None:
        pytest.skip(f"this machine runs us inside a limited cgroup ({own.cgroup.limit_path})")
    out = _budget("--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["source"] == "system RAM"
    with open("/proc/meminfo") as f:
        available = parse.parse_meminfo(f.read())["MemAvailable"]
    # Same quantity read a moment apart on a shared machine: agree within 256 MiB.
    assert abs(data["available_bytes"] - available) < 256 * MiB
    assert data["budget_bytes"] == data["available_bytes"] + data["process"]["rss_bytes"]


def test_table_for_another_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = _budget("--pid", str(child.pid))
        assert out.returncode == 0, out.stderr
        assert f"PID {child.pid} may use" in out.stdout
        assert "Limits" in out.stdout and "process RSS" in out.stdout
    finally:
        child.kill()
        child.wait()


def test_a_pid_that_does_not_exist_is_a_one_line_error():
    out = _budget("--pid", "99999999")
    assert out.returncode == 64
    assert out.stderr.strip() == "kernel-sentinel budget: no process 99999999"
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_64():
    out = subprocess.run([*CLI, "budget", "--pid", "abc"], capture_output=True, text=True)
    assert out.returncode == 64 and "invalid int value" in out.stderr
    out = subprocess.run(CLI, capture_output=True, text=True)
    assert out.returncode == 64


def test_json_from_the_installed_console_script():
    script = os.path.join(os.path.dirname(sys.executable), "kernel-sentinel")
    if not os.path.exists(script):
        pytest.skip("package not installed with its console script in this environment")
    out = subprocess.run([script, "budget", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["budget_bytes"] > 0
