"""Degraded evidence gives a degraded explanation, never a crash: of the kernel, the supervisor or the CLI.

Real kernels: one whose flight record is cut short just before it dies, one whose KERNEL_SENTINEL_HOME is
a read-only filesystem. The CLI: no store at all, bad usage, and the table of deaths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import MiB
from test_autopsy_kernels import SENTINEL_SPEC, kid

from kernel_sentinel.autopsy import death_report


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kernel_sentinel", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_truncated_flight_record_gives_degraded_report(kernel):
    k = kernel(limit_bytes=256 * MiB, kernelspec=SENTINEL_SPEC)
    assert k.run("x = 1").ok
    res = k.run(
        "import os\nfrom kernel_sentinel.autopsy import recorder\n"
        "os.truncate(recorder._recorder.record_path, 100)\nos._exit(5)"
    )
    assert res.status == "died"
    k.wait_for_death()
    assert k.exit_status == 5
    report = death_report(kid(k))
    assert report is not None
    assert report["cause"] == "exit" and report["exit"] == {"code": 5}
    assert report["cell"] is None  # the record was gone: say so, do not guess
    assert any("truncated" in n for n in report["evidence"]["notes"])
    out = cli("why", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["cause"] == "exit"
    text = cli("why")
    assert text.returncode == 0 and "exited with code 5" in text.stdout
    table = cli("deaths")
    assert table.returncode == 0 and "exit" in table.stdout and kid(k)[:8] in table.stdout


def test_read_only_home_keeps_kernel_alive_and_mirrors_exit(kernel, tmp_path):
    home = tmp_path / "ro-home"
    home.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(home)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only filesystem here")
    try:
        k = kernel(limit_bytes=256 * MiB, kernelspec=SENTINEL_SPEC, env={"KERNEL_SENTINEL_HOME": str(home)})
        assert k.run("x = 6 * 7").ok
        assert k.value("x") == 42
        res = k.run("import os\nos._exit(4)")
        assert res.status == "died"
        k.wait_for_death()
        assert k.exit_status == 4  # still mirrored without a store
        out = cli("why", "--json", env={"KERNEL_SENTINEL_HOME": str(home)})
        assert out.returncode == 1
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    finally:
        if subprocess.run(["umount", str(home)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(home)], capture_output=True)


def test_cli_without_store_and_bad_usage(tmp_path):
    env = {"KERNEL_SENTINEL_HOME": str(tmp_path / "empty")}
    out = cli("why", env=env)
    assert out.returncode == 1 and "no death" in out.stderr and "Traceback" not in out.stderr
    out = cli("why", "somekernel", "--json", env=env)
    assert out.returncode == 1 and "somekernel" in out.stderr
    out = cli("why", "k", "--last", env=env)
    assert out.returncode == 64
    out = cli("deaths", env=env)
    assert out.returncode == 1 and "no store" in out.stderr and "Traceback" not in out.stderr
    out = cli("deaths", "--limit", "0", env=env)
    assert out.returncode == 64
    assert not (tmp_path / "empty").exists()  # reading never creates a store
