"""The lab extension's pure functions (labextension/src/format.ts), compiled by the project's own TypeScript and run
in Node: the notification's one line fits Lab's 140 characters, stock kernels get the hint, the status bar's level.

The death records are the server's real shapes (a sentinel kernel's why-report, a stock kernel's server-side one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "labextension"
TSC = LAB / "node_modules" / "typescript" / "bin" / "tsc"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not TSC.exists(),
    reason="needs Node.js and labextension/node_modules (make labextension installs both)",
)

SENTINEL_DEATH = {
    "kernel_id": "k1", "died_at": 1795891118.53, "cause": "segfault",
    "summary": "The kernel crashed with a segmentation fault (SIGSEGV) in native code (ctypes) while cell [2], line 2 "
               "was running.",
    "exit": {"signal": "SIGSEGV"}, "cell": {"execution_count": 2, "code": "import ctypes\nctypes.string_at(0)", "line": 2},
    "memory": {"budget_bytes": 419430400, "peak_bytes": 85000000, "source": "cgroup v1 /x"},
    "remedy": "Check what the cell passes to ctypes.", "evidence": {"source": "supervisor"},
}
STOCK_DEATH = {
    "kernel_id": "k2", "died_at": 1795891118.53, "cause": "oom_kill",
    "summary": "Out of memory: the OS's OOM killer ended the kernel (SIGKILL) (no flight record: the running cell is "
               "not known), because its memory cgroup reached its limit of 1.0 GiB. Peak memory of the kernel: 1.0 GiB.",
    "exit": {"signal": "SIGKILL"}, "cell": None, "memory": {"budget_bytes": 1 << 30},
    "evidence": {"source": "server"},
}

SCRIPT = """
const f = require(process.argv[1]);  // node -e: the arguments start at argv[1]
const [sentinel, stock] = JSON.parse(process.argv[2]);
const state = (used, line) => ({kernel_id: 'k', guard: 'on', deaths: 0, memory_errors: 0,
  memory: {used_bytes: used, budget_bytes: 400, source: 'cgroup', interrupt_bytes: line}});
console.log(JSON.stringify({
  sentinelLine: f.deathLine(sentinel, f.isStockDeath(sentinel)),
  stockLine: f.deathLine(stock, f.isStockDeath(stock)),
  stockByGuard: f.isStockDeath({...sentinel, evidence: {}}, 'absent'),
  keys: [f.deathKey(sentinel), f.deathKey({...sentinel, death_id: 7})],
  levels: [f.memoryLevel(state(100, 360), false), f.memoryLevel(state(300, 360), false),
           f.memoryLevel(state(360, 360), false), f.memoryLevel(state(100, 360), true),
           f.memoryLevel(state(100, null), false), f.memoryLevel(null, false)],
  text: f.memoryText(state(300 * 1048576, 360)),
  restore: f.restoreLine("Restored from kernel k's checkpoint after cell [1] (18:26:46): 2 variables.\\n" +
    "  restored: answer (int, 5 B), fruits (list, 31 B)", true),
  sections: f.detailSections(stock, true).map(s => s[0]),
  tooltip: f.memoryTooltip({...state(300 * 1048576, 360 * 1048576), memory: {used_bytes: 300 * 1048576,
    used_source: "in use in this kernel's own memory group: usage less page cache", budget_bytes: 400 * 1048576,
    source: 'cgroup v1 /ks-kernel-1-k', interrupt_bytes: 360 * 1048576}}, 1),
}));
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Return what format.ts computes for the records above (compiled to CommonJS in a temporary folder)."""
    out = tmp_path_factory.mktemp("format-js")
    compiled = subprocess.run(
        [NODE, str(TSC), "--module", "commonjs", "--target", "ES2019", "--lib", "ES2019,DOM", "--strict",
         "--skipLibCheck", "--outDir", str(out), str(LAB / "src" / "format.ts")],
        capture_output=True, text=True, timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = subprocess.run([NODE, "-e", SCRIPT, str(out / "format.js"), json.dumps([SENTINEL_DEATH, STOCK_DEATH])],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_the_notification_line_is_the_cause_within_140_characters(results: dict):
    assert results["sentinelLine"] == SENTINEL_DEATH["summary"]
    stock = results["stockLine"]
    assert len(stock) <= 140, stock
    assert stock.startswith("Out of memory: the OS's OOM killer ended the kernel (SIGKILL)")  # the cause survives the cut
    assert "no flight record" not in stock  # a long aside goes before the cause is cut
    assert stock.endswith("Full cause: kernel-sentinel install.")


def test_stock_kernels_are_recognised_by_the_record_or_the_guard(results: dict):
    assert results["stockByGuard"] is True
    assert results["sections"][-2:] == ["Full explanation", "Evidence"]


def test_one_key_per_death_and_status_levels(results: dict):
    assert results["keys"] == ["k1@1795891118.530", "k1#7"]
    assert results["levels"] == ["ok", "amber", "red", "red", "ok", "unknown"]  # no line: the budget (400) stands in
    assert results["text"] == "Mem: 300 MiB / 400 B"
    assert results["restore"] == "Variables back in the new kernel: answer, fruits"


def test_the_tooltip_says_which_figure_the_bar_shows(results: dict):
    lines = results["tooltip"].split("\n")
    assert lines[0] == "In use 300 MiB of a 400 MiB budget (set by cgroup v1 /ks-kernel-1-k)"
    assert lines[1] == "Counted as the guard counts it: in use in this kernel's own memory group: usage less page cache."
    assert "MemoryBudgetErrors in this kernel: 1." in lines
