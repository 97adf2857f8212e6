"""kernel-sentinel install / uninstall: a kernelspec on disk, then a real kernel started from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MiB

from kernel_sentinel.autopsy.kernel_group import own_group
from kernel_sentinel.cli import main
from kernel_sentinel.launch import one_arena_env, rust_backtrace_env

CLI = [sys.executable, "-m", "kernel_sentinel"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def spec_dir(prefix: Path, name: str = "python3-sentinel") -> Path:
    return prefix / "share" / "jupyter" / "kernels" / name


def test_install_into_a_prefix_writes_a_guarded_kernelspec(tmp_path: Path) -> None:
    res = run_cli("install", "--prefix", str(tmp_path), "--memory-limit", "300M")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Installed kernelspec python3-sentinel in ")
    spec = json.loads((spec_dir(tmp_path) / "kernel.json").read_text())
    assert spec["argv"] == [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
    assert spec["display_name"] == "Python 3 (sentinel)"
    assert spec["language"] == "python"
    # The guard's budget, and the kernel's own memory group's limit (the supervisor makes the group).
    assert spec["env"] == {"KERNEL_SENTINEL_MEMORY_LIMIT": "300M", "KERNEL_SENTINEL_GROUP_LIMIT": "300M"}
    assert spec["metadata"]["kernel_sentinel"]["memory_limit"] == "300M"
    assert {"logo-32x32.png", "logo-64x64.png"} <= {p.name for p in spec_dir(tmp_path).iterdir()}


def test_jupyter_finds_it_and_a_kernel_started_from_it_has_the_guard(tmp_path: Path, kernel) -> None:
    assert main(["install", "--prefix", str(tmp_path), "--name", "guarded", "--display-name", "Guarded"]) == 0
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "share" / "jupyter" / "kernels")])
    found = ksm.get_kernel_spec("guarded")
    assert found.display_name == "Guarded"
    spec = json.loads((spec_dir(tmp_path, "guarded") / "kernel.json").read_text())
    assert "env" not in spec  # no --memory-limit: the machine's budget
    k = kernel(limit_bytes=512 * MiB, kernelspec=spec)
    assert k.value("'kernel_sentinel' in get_ipython().extension_manager.loaded")
    assert k.value("__import__('kernel_sentinel.guard', fromlist=['x']).get_guard().enabled")
    res = k.run("%sentinel budget")
    assert res.ok and res.stdout.startswith("Budget: 512 MiB"), res.text()
    # The launcher gives the guarded kernel one malloc arena (no thread heap's slack for the fence to miss)
    expected = one_arena_env(os.environ).get("GLIBC_TUNABLES", os.environ.get("GLIBC_TUNABLES"))
    assert k.value("__import__('os').environ.get('GLIBC_TUNABLES')") == expected
    # ... and no Rust panic backtraces (RUST_BACKTRACE=1 is set on the machine this was found on)
    assert k.value("__import__('os').environ.get('RUST_BACKTRACE', '0')") == "0"


def test_the_launcher_gives_one_malloc_arena_unless_the_user_chose() -> None:
    assert one_arena_env({}) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    assert one_arena_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == {
        "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"
    }
    assert one_arena_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) == {}
    assert one_arena_env({"MALLOC_ARENA_MAX": "2"}) == {}
    assert one_arena_env({"KERNEL_SENTINEL_GUARD": "0"}) == {}  # no guard, no reason to change glibc's arenas
    assert one_arena_env({"KERNEL_SENTINEL_GUARD": "1"}) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}


def test_the_launcher_turns_rust_panic_backtraces_off_unless_asked() -> None:
    assert rust_backtrace_env({}) == {}
    assert rust_backtrace_env({"RUST_BACKTRACE": "0"}) == {}
    assert rust_backtrace_env({"RUST_BACKTRACE": "1"}) == {"RUST_BACKTRACE": "0"}
    assert rust_backtrace_env({"RUST_BACKTRACE": "full"}) == {"RUST_BACKTRACE": "0"}
    assert rust_backtrace_env({"RUST_BACKTRACE": "1", "KERNEL_SENTINEL_RUST_BACKTRACE": "1"}) == {"RUST_BACKTRACE": "1"}
    assert rust_backtrace_env({"KERNEL_SENTINEL_RUST_BACKTRACE": "full"}) == {"RUST_BACKTRACE": "full"}
    assert rust_backtrace_env({"RUST_BACKTRACE": "1", "KERNEL_SENTINEL_GUARD": "0"}) == {}  # no fence, no reason


def test_memory_limit_reaches_the_kernel_and_becomes_the_budget(tmp_path: Path, kernel) -> None:
    assert main(["install", "--prefix", str(tmp_path), "--memory-limit", "200M"]) == 0
    spec = json.loads((spec_dir(tmp_path) / "kernel.json").read_text())
    k = kernel(limit_bytes=1024 * MiB, kernelspec=spec)
    # The supervisor gave the kernel a memory group of its own with that limit, and the guard the same budget.
    group = own_group(k.kernel_pid)
    assert group is not None and group.limit_bytes() == 200 * MiB
    assert k.value("__import__('os').environ['KERNEL_SENTINEL_MEMORY_LIMIT']") == "100%"  # of the group: follows it
    res = k.run("%sentinel budget")
    assert res.stdout.startswith("Budget: 200 MiB, set by "), res.text()
    assert group.name in res.stdout, res.text()
    res = k.run("import numpy as np\na = np.ones(300 * 1024 * 1024 // 8)")
    assert res.ename == "MemoryBudgetError", res.text()
    assert k.alive and k.oom_kills() == 0 and group.oom_kills() == 0


def test_replace_installs_as_python3_and_uninstall_removes_it(tmp_path: Path) -> None:
    res = run_cli("install", "--prefix", str(tmp_path), "--replace")
    assert res.returncode == 0, res.stderr
    spec = json.loads((spec_dir(tmp_path, "python3") / "kernel.json").read_text())
    assert "kernel_sentinel.launch" in spec["argv"]
    res = run_cli("uninstall", "--prefix", str(tmp_path), "--name", "python3")
    assert res.returncode == 0 and res.stdout.startswith("Removed kernelspec python3"), res.stderr
    assert not spec_dir(tmp_path, "python3").exists()


def test_uninstall_leaves_a_kernelspec_it_did_not_write(tmp_path: Path) -> None:
    other = spec_dir(tmp_path, "python3")
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(json.dumps({"argv": ["python", "-m", "ipykernel_launcher"], "language": "python"}))
    res = run_cli("uninstall", "--prefix", str(tmp_path), "--name", "python3")
    assert res.returncode == 1
    assert "not written by kernel-sentinel" in res.stderr and res.stderr.count("\n") == 1
    assert other.exists()


def test_bad_input_is_one_line_and_exit_64(tmp_path: Path) -> None:
    for args in (
        ["install", "--prefix", str(tmp_path), "--memory-limit", "lots"],
        ["install", "--prefix", str(tmp_path), "--memory-limit", "150%"],
        ["install", "--prefix", str(tmp_path), "--replace", "--name", "mine"],
        ["install", "--prefix", str(tmp_path), "--name", "../evil"],
        ["install", "--user", "--prefix", str(tmp_path)],
    ):
        res = run_cli(*args)
        assert res.returncode == 64, (args, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("kernel-sentinel"), res.stderr
    assert not (tmp_path / "share").exists()  # nothing written on bad input


def test_uninstall_of_a_missing_kernelspec_is_one_line(tmp_path: Path) -> None:
    res = run_cli("uninstall", "--prefix", str(tmp_path))
    assert res.returncode == 1
    assert res.stderr == f"kernel-sentinel uninstall: no kernelspec named 'python3-sentinel' in {spec_dir(tmp_path).parent}\n"


def test_user_install_goes_to_the_jupyter_data_dir(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    for where in (["--user"], []):  # --user is also where install goes without a location
        res = subprocess.run([*CLI, "install", *where], capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "data" / "kernels" / "python3-sentinel" / "kernel.json").exists()
    res = subprocess.run([*CLI, "uninstall", "--user"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "data" / "kernels" / "python3-sentinel").exists()
