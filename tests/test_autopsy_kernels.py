"""The autopsy end to end: real kernels through jupyter_client, real deaths, real signals, real cgroups.

Each test kills a sentinel kernel (guard off) one way and checks that the supervisor (or the sweep)
recorded the right cause and the right cell, and that the supervisor exited exactly as the kernel did.
Set ``KS_CAPTURE_SAMPLES=1`` to save each death's evidence under tests/samples/autopsy/ (how the samples
the classifier tests use were captured).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import MiB

from kernel_sentinel.autopsy import death_report
from kernel_sentinel.autopsy.supervisor import kernel_id_from_connection_file
from kernel_sentinel.store import Store

SENTINEL_SPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
    "env": {"KERNEL_SENTINEL_GUARD": "0"},
}
SAMPLES = Path(__file__).parent / "samples" / "autopsy"
LIMIT = 512 * MiB


def start(kernel, limit: int = LIMIT):
    k = kernel(limit_bytes=limit, kernelspec=SENTINEL_SPEC)
    assert k.run("x = 41 + 1").ok
    return k


def kid(k) -> str:
    return kernel_id_from_connection_file(k.km.connection_file)


def die(k, code: str) -> dict:
    """Run a cell that kills the kernel; return the death's report, which must exist once the death is seen."""
    res = k.run(code)
    assert res.status == "died", (res.status, res.text())
    k.wait_for_death()
    report = death_report(kid(k))  # no waiting: the supervisor records before it exits
    assert report is not None
    return report


def capture(name: str, k) -> None:
    if os.environ.get("KS_CAPTURE_SAMPLES") != "1":
        return
    with Store() as store:
        row = store.death(kid(k))
    assert row is not None
    SAMPLES.mkdir(parents=True, exist_ok=True)
    (SAMPLES / f"{name}.json").write_text(json.dumps({"evidence": row["evidence"], "report": row["report"]}, indent=1))


def why_json(kernel_id: str | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "kernel_sentinel", "why", *([kernel_id] if kernel_id else []), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_segfault_with_the_guard_on(kernel):
    spec = {**SENTINEL_SPEC, "env": {}}
    k = kernel(limit_bytes=LIMIT, kernelspec=spec)
    assert k.run("x = 1").ok
    report = die(k, "import ctypes\nctypes.string_at(0)")
    assert report["cause"] == "segfault" and report["cell"]["line"] == 2
    assert report["native_module"] == "ctypes"


def test_segfault_names_cell_line_and_module(kernel):
    k = start(kernel)
    report = die(k, "import ctypes\n\nctypes.string_at(0)")
    assert k.exit_status == -signal.SIGSEGV  # the supervisor mirrors the kernel's end
    assert report["cause"] == "segfault"
    assert report["exit"] == {"signal": "SIGSEGV"}
    assert report["cell"]["execution_count"] == 2
    assert report["cell"]["line"] == 3
    assert report["cell"]["code"] == "import ctypes\n\nctypes.string_at(0)"
    assert report["native_module"] == "ctypes"
    assert report["evidence"]["line_source"] == "faulthandler"
    capture("segfault", k)
    cli = why_json(kid(k))
    for key in ("kernel_id", "cause", "summary", "exit", "cell", "memory", "remedy"):
        assert key in cli
    assert cli["cause"] == "segfault" and cli["kernel_id"] == kid(k)
    assert {"budget_bytes", "peak_bytes", "source"} <= set(cli["memory"])
    assert cli["memory"]["budget_bytes"] == LIMIT


def test_abort(kernel):
    k = start(kernel)
    report = die(k, "import os\nos.abort()")
    assert k.exit_status == -signal.SIGABRT
    assert report["cause"] == "abort"
    assert report["cell"]["execution_count"] == 2 and report["cell"]["line"] == 2
    capture("abort", k)


def test_exit_code(kernel):
    k = start(kernel)
    report = die(k, "import os\nprint('bye')\nos._exit(3)")
    assert k.exit_status == 3
    assert report["cause"] == "exit"
    assert report["exit"] == {"code": 3}
    assert report["code"] == 3
    assert report["cell"]["execution_count"] == 2
    capture("exit3", k)


def test_oom_kill_with_guard_off(kernel):
    k = start(kernel, limit=512 * MiB)
    report = die(k, "import numpy as np\nkeep = []\nfor i in range(100):\n    keep.append(np.ones(16 * 2**20))")
    assert k.exit_status == -signal.SIGKILL
    assert k.oom_kills() >= 1
    assert report["cause"] == "oom_kill"
    assert report["scope"] == "cgroup"
    assert report["exit"] == {"signal": "SIGKILL"}
    assert report["cell"]["execution_count"] == 2
    assert report["memory"]["budget_bytes"] == 512 * MiB
    assert report["memory"]["peak_bytes"] > 256 * MiB
    assert any("OOM-kill counter" in p for p in report["evidence"]["proof"])
    if os.access("/dev/kmsg", os.R_OK):
        assert any(f"pid={report['pid']}" in line for line in report["evidence"]["kernel_log"])
    capture("oom_cgroup", k)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_signal_to_kernel_process_is_external_kill(kernel, signum):
    k = start(kernel)
    child = psutil.Process(k.kernel_pid)
    assert child.ppid() == k.pid  # the supervisor is the kernel's parent
    msg = k.kc.execute("import time\ntime.sleep(60)")
    _wait_until_running(k, msg)
    os.kill(child.pid, signum)
    k.wait_for_death()
    assert k.exit_status == -signum
    report = death_report(kid(k))
    assert report is not None
    assert report["cause"] == "external_kill"
    assert report["signal"] == signal.Signals(signum).name
    assert report["cell"]["execution_count"] == 2
    assert report["cell"]["line"] == 2 and report["cell"]["running"]
    assert report["evidence"]["oom_kills"] == {"before": 0, "after": 0}
    capture(f"external_{signal.Signals(signum).name.lower()}_child", k)


def test_sigterm_to_supervisor_is_forwarded_and_explained(kernel):
    k = start(kernel)
    msg = k.kc.execute("import time\ntime.sleep(60)")
    _wait_until_running(k, msg)
    k.signal(signal.SIGTERM, to_launcher=True)
    k.wait_for_death()
    assert k.exit_status == -signal.SIGTERM
    report = death_report(kid(k))
    assert report is not None and report["cause"] == "external_kill" and report["signal"] == "SIGTERM"
    assert report["cell"]["execution_count"] == 2 and report["cell"]["line"] == 2


def test_sigkill_to_supervisor_takes_kernel_along_and_is_found(kernel):
    k = start(kernel)
    child = psutil.Process(k.kernel_pid)
    msg = k.kc.execute("import time\ntime.sleep(60)")
    _wait_until_running(k, msg)
    k.signal(signal.SIGKILL, to_launcher=True)
    k.wait_for_death()
    assert k.exit_status == -signal.SIGKILL
    child.wait(timeout=10)  # PDEATHSIG: no orphan
    assert not child.is_running()
    report = death_report(kid(k), wait=10)
    assert report is not None
    assert report["cause"] == "external_kill" and report["signal"] == "SIGKILL"
    assert report["exit"] == {"signal": "SIGKILL", "inferred": True}
    assert report["evidence"]["source"] == "witness"
    assert report["cell"]["execution_count"] == 2 and report["cell"]["line"] == 2
    capture("external_sigkill_supervisor", k)


def test_memmap_past_full_tmpfs_is_bus_error_disk_full(kernel, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        k = start(kernel)
        path = mnt / "big.dat"
        report = die(
            k,
            f"import numpy as np\nm = np.memmap({str(path)!r}, dtype='uint8', mode='w+', shape=(64 * 2**20,))\nm[:] = 1",
        )
        assert k.exit_status == -signal.SIGBUS
        assert report["cause"] == "bus_error"
        assert report["disk_full"] is True
        assert report["disk"]["mount"] == str(mnt)
        assert report["cell"]["execution_count"] == 2 and report["cell"]["line"] == 3
        capture("bus_error_disk_full", k)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_requested_restart_and_shutdown_record_no_death(kernel):
    k = start(kernel)
    k.km.restart_kernel()
    k.kc.wait_for_ready(timeout=60)
    assert k.run("y = 2").ok
    k.km.restart_kernel(now=True)  # jupyter_client interrupts, then SIGKILLs the whole process group
    k.kc.wait_for_ready(timeout=60)
    assert k.run("z = 3").ok
    k.km.shutdown_kernel()
    assert death_report(kid(k)) is None
    assert death_report() is None


def test_harness_kill_after_the_test_is_not_a_death(kernel):
    k = start(kernel)
    msg = k.kc.execute("import time\ntime.sleep(60)")
    _wait_until_running(k, msg)
    k.close()  # shutdown_kernel(now=True): kill the process group, remove the connection file
    assert death_report() is None


def test_interrupt_keeps_supervisor_and_kernel(kernel):
    k = start(kernel)
    msg = k.kc.execute("import time\ntime.sleep(60)")
    _wait_until_running(k, msg)
    k.km.interrupt_kernel()
    reply = k.kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    _wait_until_idle(k, msg)
    assert k.alive
    assert k.run("print(x)").stdout.strip() == "42"
    assert death_report(kid(k)) is None


@pytest.mark.parametrize("now", [False, True], ids=["restart", "restarter-style-now"])
def test_explanation_shown_once_in_next_cell_after_restart(kernel, now):
    k = start(kernel)
    die(k, "import os\nos._exit(3)")
    k.km.restart_kernel(now=now)  # now=True is what jupyter_client's restarter does after a death
    k._returncode = None  # the harness caches the old process's status
    k.kc.wait_for_ready(timeout=60)
    first = k.run("1 + 1")
    assert first.ok
    assert "the previous kernel died" in first.text()
    assert "exited with code 3" in first.text()
    assert "kernel-sentinel-death" in first.html() and "os._exit(3)" in first.html()
    second = k.run("2 + 2")
    assert "previous kernel died" not in second.text()
    report = death_report(kid(k))
    assert report is not None and report["shown"] is True


def _wait_until_idle(k, msg_id: str) -> None:
    """Return once the kernel is idle after ``msg_id``: ipykernel aborts requests that arrive while it is still
    aborting the queue after an error (stop_on_error), and with checkpoints on one sent the moment the error's
    reply came was aborted 3 times in 8 (stock: 0 in 10; README, known gaps)."""
    k.wait_for_iopub(msg_id, "status", "idle")


def _wait_until_running(k, msg_id: str) -> None:
    """Return once the kernel has started the cell (its flight record shows it and it is busy)."""
    k.wait_for_iopub(msg_id, "execute_input")
    time.sleep(0.6)  # let the sampler record the line the cell is on (it samples every 250 ms)


def test_recorder_without_supervisor_still_explains_an_oom_kill(kernel):
    """``%load_ext kernel_sentinel`` in a stock kernel: no exit status, but the record and the OOM counter."""
    k = kernel(limit_bytes=256 * MiB, env={"KERNEL_SENTINEL_GUARD": "0"})
    assert k.run("%load_ext kernel_sentinel").ok
    assert k.run("x = 1").ok
    res = k.run("import numpy as np\nblocks = [np.ones(2**24) for _ in range(40)]")
    assert res.status == "died"
    k.wait_for_death()
    assert k.exit_status == -signal.SIGKILL and k.oom_kills() == 1
    report = death_report(kid(k), wait=10)  # found by the sweep: nobody saw the exit status
    assert report is not None
    assert report["cause"] == "oom_kill" and report["scope"] == "cgroup"
    assert report["exit"] is None  # not seen, not invented
    assert report["evidence"]["source"] == "sweep"
    assert report["cell"]["execution_count"] == 3
    capture("oom_cgroup_no_supervisor", k)


def test_crash_of_a_forked_child_is_not_the_kernels(kernel):
    k = start(kernel)
    res = k.run(
        "import os, ctypes\npid = os.fork()\nif pid == 0:\n    ctypes.string_at(0)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))"
    )
    assert res.ok and res.stdout.strip() == str(-signal.SIGSEGV)
    report = die(k, "import os\nos._exit(2)")
    assert report["cause"] == "exit" and report["exit"] == {"code": 2}
    assert report["evidence"]["faulthandler"] == []  # the child's crash did not land in the kernel's record
    assert report["cell"]["execution_count"] == 3


PROVISIONED_SPEC = {
    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--ext=kernel_sentinel"],
    "display_name": "provisioned",
    "language": "python",
    "env": {"KERNEL_SENTINEL_GUARD": "0"},
    "metadata": {"kernel_provisioner": {"provisioner_name": "sentinel-provisioner"}},
}


def test_provisioner_records_death_from_the_return_code(kernel):
    k = kernel(limit_bytes=LIMIT, kernelspec=PROVISIONED_SPEC)
    assert type(k.km.provisioner).__name__ == "SentinelProvisioner"
    assert k.run("x = 1").ok
    res = k.run("import os\nos.abort()")
    assert res.status == "died"
    k.wait_for_death()
    assert k.exit_status == -signal.SIGABRT
    assert not k.km.is_alive()  # what jupyter_client's restarter asks: the provisioner's poll sees the code
    report = death_report(kid(k))
    assert report is not None
    assert report["cause"] == "abort" and report["exit"] == {"signal": "SIGABRT"}
    assert report["evidence"]["source"] == "provisioner"
    assert report["cell"]["execution_count"] == 2 and report["cell"]["line"] == 2


def test_provisioner_requested_shutdown_is_not_a_death(kernel):
    k = kernel(limit_bytes=LIMIT, kernelspec=PROVISIONED_SPEC)
    assert k.run("x = 1").ok
    k.km.restart_kernel()
    k.kc.wait_for_ready(timeout=60)
    assert k.run("y = 1").ok
    k.km.shutdown_kernel()
    assert death_report() is None


def test_runaway_recursion_reports_its_depth(kernel):
    k = start(kernel, limit=256 * MiB)
    # The descent pauses now and then so that it lasts seconds, not a fraction of one sampler tick
    # (250 ms): on a loaded machine a bare recursion can reach the limit before the first sample.
    code = (
        "import sys, time\nsys.setrecursionlimit(10**8)\ndef down(n):\n"
        "    if n % 2000 == 0:\n        time.sleep(0.01)\n    return down(n + 1)\ndown(0)"
    )
    report = die(k, code)
    assert report["cause"] == "oom_kill"
    assert report["memory"]["recursion_depth"] >= 200  # the sampler saw the stack grow
    assert report["cell"]["execution_count"] == 2
    assert report["cell"]["line"] in (5, 6, 7)  # the recursive call (or its pause), or the call that started it
    assert "recursion" in report["summary"] and "base case" in report["remedy"]
    capture("oom_recursion", k)
