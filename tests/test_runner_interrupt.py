"""``kernel-sentinel run`` stopped from outside: Ctrl-C (SIGINT) or a scheduler's SIGTERM, and --timeout.

Whatever stops the run, the kernel it started is gone and its memory cgroup removed afterwards; a cell
that outlives --timeout is interrupted and marked failed, and the rest are not run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import MiB
from runner_support import read_json, run_cli, write_notebook

from kernel_sentinel.memory import locate_cgroup


def _groups_of(pid: int) -> set[str]:
    """Return the memory cgroups the runner with this pid made (MemoryCgroup names carry the creator's pid)."""
    location, _ = locate_cgroup()
    if location is None:
        return set()
    return {name for name in os.listdir(location.leaf.directory) if name.startswith(f"ks-run-{pid}-")}


def _clean_up_after(runner_pid: int, started: Path) -> None:
    """Kill the kernel (and its launcher) a runner we had to kill left behind, and remove the run's groups."""
    try:
        kernel = psutil.Process(int(started.read_text()))
        for p in (kernel, *kernel.parents()[:1]):
            if "kernel_sentinel" in " ".join(p.cmdline()) or "ipykernel" in " ".join(p.cmdline()):
                p.kill()
        psutil.wait_procs([kernel], timeout=10)
    except (OSError, ValueError, psutil.Error):
        pass
    location, _ = locate_cgroup()
    for name in _groups_of(runner_pid):
        try:
            os.rmdir(os.path.join(location.leaf.directory, name))
        except OSError:
            pass


def _wait_for(predicate, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit  # a generous ceiling against hangs, not an assertion on speed
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.cgroup
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_run_removes_the_kernel_and_its_cgroup(tmp_path: Path, memory_cgroup, signum):
    memory_cgroup(64 * MiB)  # skip with a reason where no cgroup can be made
    started = tmp_path / "started"
    nb = write_notebook(
        tmp_path / "long.ipynb",
        ["x = 1", f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)", "x"],
    )
    out = tmp_path / "long-out.ipynb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_sentinel", "run", str(nb), "-o", str(out), "--memory-limit", "256M"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a command started in the background of a non-interactive shell inherits SIGINT
        # ignored (POSIX), and Python then keeps it ignored, as a CLI should; pytest may have been started so.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for(lambda: started.exists() and started.read_text().strip(), "the second cell to start")
        kernel_pid = int(started.read_text())
        groups = _groups_of(proc.pid)
        assert len(groups) == 1  # the run's own cgroup exists while it runs
        proc.send_signal(signum)  # only to the runner we started, as a terminal's Ctrl-C or a scheduler would
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            _clean_up_after(proc.pid, started)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not _groups_of(proc.pid), "the run's cgroup was left behind"
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    cells = nbformat.read(str(out), as_version=4).cells  # what ran is still written out
    assert [c.metadata["kernel_sentinel"]["status"] for c in cells] == ["ok", "error", "not_run"]
    assert cells[1].metadata["kernel_sentinel"]["error"]["ename"] == "KeyboardInterrupt"


def test_a_cell_over_the_timeout_is_interrupted_and_marked_failed(tmp_path: Path):
    nb = write_notebook(tmp_path / "slow.ipynb", ["x = 1", "import time\ntime.sleep(600)", "print('not run')"])
    report = tmp_path / "slow.json"
    proc = run_cli(str(nb), "--timeout", "2", "--json", str(report))
    assert proc.returncode == 1, proc.stderr
    data = read_json(report)
    assert [c["status"] for c in data["cells"]] == ["ok", "error", "not_run"]
    assert data["cells"][1]["error"]["ename"] == "CellTimeoutError"
    assert "--timeout 2 s" in data["cells"][1]["error"]["evalue"]
