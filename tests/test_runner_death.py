"""A kernel that dies under ``kernel-sentinel run``: exit 2, the dying cell explained, the rest not run.

Real deaths in real kernels: a segfault (``ctypes.string_at(0)``) and an OOM kill inside a 1 GiB cgroup
with the guard switched off (``KERNEL_SENTINEL_GUARD=0``), i.e. what a stock kernel suffers.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import GiB, MiB
from runner_support import read_json, run_cli, stdout_of, write_notebook


def _death_text(cell) -> str:
    outputs = [o for o in cell.outputs if o.get("metadata", {}).get("kernel_sentinel", {}).get("death")]
    assert len(outputs) == 1, cell.outputs
    assert "text/html" in outputs[0]["data"]
    return outputs[0]["data"]["text/plain"]


def test_segfault_in_cell_2_exits_2_and_cell_2_carries_the_explanation(tmp_path: Path):
    nb = write_notebook(
        tmp_path / "seg.ipynb",
        ["print('loaded')", "import ctypes\nprint('about to crash', flush=True)\nctypes.string_at(0)", "print('after')"],
    )
    out, report = tmp_path / "seg-out.ipynb", tmp_path / "seg.json"
    proc = run_cli(str(nb), "-o", str(out), "--json", str(report))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    cells = nbformat.read(str(out), as_version=4).cells  # written even though the kernel died
    assert stdout_of(cells[0]) == "loaded\n"
    assert cells[1].metadata["kernel_sentinel"]["status"] == "died"
    text = _death_text(cells[1])
    data = read_json(report)
    death = data["death"]
    if death["source"] == "autopsy":  # the autopsy's classification, when it has landed
        assert death["cause"] == "segfault"
        assert death["summary"] in text
    else:  # the runner's own note: the status it saw itself
        assert death["exit"] == {"signal": "SIGSEGV"}
        assert "kernel died: SIGSEGV (exit status -11)" in text
    assert data["kernel_exit"] == -11
    assert cells[2].metadata["kernel_sentinel"] == {"status": "not_run"} and cells[2].outputs == []
    assert [c["status"] for c in data["cells"]] == ["ok", "died", "not_run"]
    assert data["exit_code"] == 2 and data["failed_cell"] == 1


@pytest.mark.cgroup
def test_oom_kill_without_the_guard_exits_2_and_names_the_oom_killer(tmp_path: Path, memory_cgroup):
    memory_cgroup(64 * MiB)  # skips with a reason where no cgroup can be made: never run this unconfined
    nb = write_notebook(
        tmp_path / "oom.ipynb",
        ["import numpy as np\nsmall = np.ones(2**20)", "big = np.ones((20000, 20000))  # 3.2 GB", "print('after')"],
    )
    out, report = tmp_path / "oom-out.ipynb", tmp_path / "oom.json"
    proc = run_cli(str(nb), "-o", str(out), "--json", str(report), "--memory-limit", "1G",
                   env={"KERNEL_SENTINEL_GUARD": "0"})
    assert proc.returncode == 2, proc.stderr
    data = read_json(report)
    assert data["confinement"]["kind"].startswith("cgroup")
    assert data["budget"]["bytes"] == GiB
    assert data["kernel_exit"] == -9
    death = data["death"]
    if death["source"] == "autopsy":
        assert death["cause"] == "oom_kill"
    else:
        assert death["oom_kills"] == 1 and "OOM killer" in death["summary"]
    cells = nbformat.read(str(out), as_version=4).cells
    assert "SIGKILL" in _death_text(cells[1]) or "oom" in _death_text(cells[1]).lower()
    died = data["cells"][1]
    assert died["status"] == "died" and died["peak_bytes"] > 0.9 * GiB  # it did reach the limit
    assert [c["status"] for c in data["cells"]] == ["ok", "died", "not_run"]


def test_a_kernel_that_cannot_start_exits_2_with_its_last_words(tmp_path: Path):
    # A broken environment: ipykernel's launcher exits at once (what a bad install or a missing module does).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ipykernel_launcher.py").write_text(
        "import sys\nprint('ipykernel is broken in this environment', file=sys.stderr)\nsys.exit(3)\n"
    )
    nb = write_notebook(tmp_path / "nb.ipynb", ["print(1)", "print(2)"])
    report = tmp_path / "r.json"
    proc = run_cli(str(nb), "--json", str(report), env={"PYTHONPATH": str(broken)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "did not start" in proc.stderr
    data = read_json(report)
    assert [c["status"] for c in data["cells"]] == ["not_run", "not_run"]
    assert data["kernel_exit"] == 3
    assert "did not start" in data["death"]["summary"]
    assert "ipykernel is broken in this environment" in "\n".join(data["death"]["kernel_log_tail"])
