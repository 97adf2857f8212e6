"""Per-cell memory under ``kernel-sentinel run --memory-limit 1G``, checked against an independent measurement.

The independent measurement is the kernel process's own VmHWM, reset at the start of each cell through
``/proc/self/clear_refs`` ("5") and printed by the cell itself with the RSS it started from: the kernel's
accounting of its peak RSS, read from inside. The runner's ``peak_bytes`` comes from outside: the kernel's
cgroup usage sampled every 25 ms, folded with the cgroup v1 watermark it resets per cell. Everything runs
in a 1 GiB cgroup.

The two are compared as growth within the cell (peak minus where the cell started), not as totals: RSS
counts the numpy and pandas libraries' file pages, which the cgroup charges only to whoever read them
from disk first. When an earlier process already had them in the page cache (a warm CI run), the group
is 80 MiB below RSS for the whole run, and that says nothing about the cell.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from conftest import GiB, MiB
from runner_support import HWM_SETUP, read_json, run_cli, stdout_of, write_notebook

GUARD = importlib.util.find_spec("kernel_sentinel.guard.core") is not None
pytestmark = pytest.mark.cgroup


def _hwm(cell) -> tuple[int, int]:
    """Return the cell's own (VmHWM, RSS when the watermark was reset), as the cell printed them."""
    lines = [line for line in stdout_of(cell).splitlines() if line.startswith("HWM ")]
    assert lines, cell.outputs
    _, hwm, base = lines[-1].split()
    return int(hwm), int(base)


def _check_peaks(cells, report, indexes) -> list[tuple[int, int, int]]:
    """Assert the report's growth to its peak is within 10% of the cell's own; return (index, report, own).

    The report's starting point is the previous cell's ``after_bytes``; the cell's own is its RSS at reset.
    """
    seen = []
    by_index = {c["index"]: c for c in report["cells"]}
    for i in indexes:
        hwm, base = _hwm(cells[i])
        own = hwm - base
        reported = by_index[i]["peak_bytes"] - by_index[i - 1]["after_bytes"]
        assert own > 150 * MiB  # big enough that a 10% band is about the cell, not the interpreter
        assert abs(reported - own) <= 0.10 * own, (i, reported, own, by_index[i]["peak_bytes"], hwm)
        seen.append((i, reported, own))
    return seen


# Cells of real data work, each reporting its own peak: an array kept, a transient spike freed in the
# same cell (only a watermark or luck catches it), and a pandas groupby.
CELLS = [
    HWM_SETUP + "import pandas as pd\n_reset_hwm()\nprint('HWM', _hwm())",
    "_reset_hwm()\nprices = np.random.rand(40 * 2**20)  # 320 MiB kept\nprint('HWM', _hwm())",
    "_reset_hwm()\ntmp = np.ones(50 * 2**20); total = float(tmp.sum()); del tmp  # 400 MiB spike, freed\n"
    "print('HWM', _hwm())",
    "_reset_hwm()\ndf = pd.DataFrame({'k': np.arange(8 * 10**6) % 1000, 'v': prices[: 8 * 10**6]})\n"
    "g = df.groupby('k').v.sum()\nprint('HWM', _hwm())",
]


def test_peak_memory_per_cell_agrees_with_the_cells_own_vmhwm(tmp_path: Path, memory_cgroup):
    memory_cgroup(64 * MiB)  # skip with a reason where no cgroup can be made
    nb = write_notebook(tmp_path / "peaks.ipynb", CELLS)
    out, report_path = tmp_path / "peaks-out.ipynb", tmp_path / "peaks.json"
    proc = run_cli(str(nb), "-o", str(out), "--json", str(report_path), "--memory-limit", "1G")
    assert proc.returncode == 0, proc.stderr
    report = read_json(report_path)
    assert report["confinement"]["kind"].startswith("cgroup") and report["budget"]["bytes"] == GiB
    cells = nbformat.read(str(out), as_version=4).cells
    _check_peaks(cells, report, [1, 2, 3])
    spike = report["cells"][2]
    assert spike["after_bytes"] < spike["peak_bytes"] - 300 * MiB  # freed: "after" tells it apart from "peak"
    kept = report["cells"][1]
    assert kept["after_bytes"] > report["cells"][0]["after_bytes"] + 300 * MiB


@pytest.mark.skipif(not GUARD, reason="needs the guard (kernel_sentinel.guard.core), not merged yet")
def test_fourth_of_six_cells_blows_1_gib_and_only_it_is_marked_failed(tmp_path: Path, memory_cgroup):
    memory_cgroup(64 * MiB)
    cells_in = [
        *CELLS[:3],
        "orders = np.ones((20000, 20000))  # 3.2 GB in a 1 GiB budget",
        "print('cell 5 must not run')",
        "print('cell 6 must not run')",
    ]
    nb = write_notebook(tmp_path / "blow.ipynb", cells_in)
    out, report_path = tmp_path / "blow-out.ipynb", tmp_path / "blow.json"
    proc = run_cli(str(nb), "-o", str(out), "--json", str(report_path), "--memory-limit", "1G")
    assert proc.returncode == 1, proc.stderr
    report = read_json(report_path)
    cells = nbformat.read(str(out), as_version=4).cells
    assert [c.metadata["kernel_sentinel"]["status"] for c in cells] == ["ok", "ok", "ok", "error", "not_run", "not_run"]
    _check_peaks(cells, report, [1, 2])  # outputs of cells 1-3 kept, and their peaks agree
    assert "HWM" in stdout_of(cells[0])
    errors = [o for o in cells[3].outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "MemoryBudgetError"
    assert report["cells"][3]["error"]["ename"] == "MemoryBudgetError"
    assert report["cells"][3]["peak_bytes"] <= GiB
    for cell in cells[4:]:
        assert cell.outputs == [] and cell.execution_count is None
    assert report["death"] is None and report["exit_code"] == 1
