"""duckdb's fetch does not always look at SIGINT: the guard asks duckdb itself to stop.

Measured in a stock kernel in a 1 GiB group: SIGINT sent while ``fetchnumpy()`` grew past 300-850 MiB stopped
the query ("Query interrupted") 4 times in 8; the other 4 reached the OOM killer. Control: the same cells
OOM-kill a stock kernel in the same group. In a sentinel kernel the fetch, repeated with a 300 MiB array
held (after a first fetch duckdb's allocator keeps its address space: the next fetch grows without VmData
growing, unseen by the fence, and used to reach the OOM killer), ends each time with a MemoryBudgetError,
and what the failed query held is given back by the next cell.
"""

from __future__ import annotations

import pytest
from conftest import GiB, MiB
from kernel_harness import assert_oom_killed
from test_guard_lib_cases import SENTINEL_SPEC, SETUP, by_name, cleanup_code, files_code, make_files

pytestmark = pytest.mark.cgroup

FETCH = by_name("duckdb_fetch")
TIDS = "import os\ntids0 = set(os.listdir('/proc/self/task'))"
NEW_THREAD_AGES = (  # seconds since each thread started that was not there before the import cell
    "[float(open('/proc/uptime').read().split()[0]) - int(open(f'/proc/self/task/{t}/stat').read().rsplit(')', 1)[1]"
    ".split()[19]) / os.sysconf('SC_CLK_TCK') for t in set(os.listdir('/proc/self/task')) - tids0]"
)
RSS = "__import__('psutil').Process().memory_info().rss"


def group_state(k) -> dict[str, str]:
    """Return the memory group's usage, OOM state and reclaim counters: what a stalled stock control looked like."""
    state = {}
    for name in ("memory.usage_in_bytes", "memory.oom_control", "memory.stat"):
        try:
            with open(f"{k.cgroup.directory}/{name}") as f:
                text = f.read()
        except OSError as exc:
            text = str(exc)
        if name == "memory.stat":
            keep = ("total_rss ", "total_cache ", "total_mapped_file ", "total_pgmajfault ", "total_pgpgin ")
            text = " ".join(line for line in text.splitlines() if line.startswith(keep))
        state[name] = " ".join(text.split())
    return state


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("guard-duckdb-files"))


def test_the_same_cells_oom_kill_a_stock_kernel(kernel, case_files) -> None:
    k = kernel(limit_bytes=GiB)
    assert k.confinement == "cgroup"
    assert k.run(SETUP + "\n" + files_code(case_files)).ok
    assert k.run(f"pad = np.ones(300 * {MiB}, dtype=np.uint8)").ok
    # 600 s, not 180: once in CI (2 cores, loaded) this stock kernel was still in the fetch at 180 s, not yet
    # killed; the same test alone passed in 6 s, and 12 loaded runs here died in 0.8-1.2 s. The assertion is the
    # same (an OOM kill); what the group looked like goes into the message if it happens again.
    assert_oom_killed(k, FETCH.code, timeout=600, context=lambda: group_state(k))


def test_the_guard_stops_a_duckdb_fetch_sigint_cannot(kernel, case_files) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    assert k.confinement == "cgroup"
    assert k.run(SETUP + "\n" + files_code(case_files)).ok
    start_rss = k.value(RSS)
    before = k.oom_kills()
    for pad in (0, 300, 300, 400):
        assert k.run(f"pad = np.ones({pad} * {MiB}, dtype=np.uint8)").ok
        res = k.run(FETCH.code, timeout=180)
        assert res.status == "error", (pad, res.status, res.text()[:2000])
        assert res.ename == "MemoryBudgetError", (pad, res.text()[:2000])
        assert k.alive and k.oom_kills() == before, pad
        assert k.value("sentinel_value") == "still here"
        assert k.run(cleanup_code(FETCH) + "\ndel pad\ngc.collect()").ok
        # what the failed query held goes with the next cell (up to ~700 MiB stayed held before)
        assert k.run("x = 1").ok
        assert k.value(RSS) < start_rss + 100 * MiB, (pad, k.value(RSS) // MiB, start_rss // MiB)
    assert k.run("print(duckdb.sql('SELECT 42').fetchall())").stdout.strip() == "[(42,)]"


def test_duckdbs_threads_have_settled_before_the_next_cell_starts(kernel) -> None:
    """A new duckdb database's threads allocate their thread-local data about a second after it starts.

    Started by a cell that went on to fill the budget, that allocation met the fence and glibc's loader ended the
    kernel (exit code 127; 5 runs in 30 of test_guard_lib_kernel's arrow-scipy-sklearn-duckdb killers on a loaded
    machine). The guard starts the default database at the end of the cell that imported duckdb, and a cell that
    comes right after threads appeared (that one, or a database of the user's own) waits until they have run
    1.5 s. Control: a stock kernel starts no database at the import, and does not wait.
    """
    ages = {}
    for name, spec in (("stock", None), ("sentinel", SENTINEL_SPEC)):
        k = kernel(limit_bytes=GiB, kernelspec=spec, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
        assert k.run(TIDS).ok
        assert k.run("import duckdb").ok
        ages[name] = [k.value(NEW_THREAD_AGES)]  # the very next cell
        assert k.run(TIDS).ok
        assert k.run("con = duckdb.connect()").ok  # the user's own database
        ages[name].append(k.value(NEW_THREAD_AGES))
    assert ages["stock"][0] == []
    assert ages["stock"][1] and min(ages["stock"][1]) < 1.0, ages  # stock's next cell runs at once
    for new in ages["sentinel"]:
        assert len(new) >= 2, ages  # a database's threads run ...
        assert min(new) >= 1.4, ages  # ... and have had their first second before this cell


def _import_and_read(case_files) -> str:
    """One cell that imports duckdb and reads the big CSV (1.2 GB as int64) into pandas: duckdb's own OOM error."""
    return f"import duckdb\nbig = duckdb.sql(\"SELECT * FROM read_csv_auto('{case_files['csv_big']}')\").df()"


def test_importing_duckdb_and_filling_the_budget_in_one_cell_kills_a_stock_kernel(kernel, case_files) -> None:
    k = kernel(limit_bytes=GiB)
    assert_oom_killed(k, _import_and_read(case_files), timeout=600, context=lambda: group_state(k))


def test_importing_duckdb_and_filling_the_budget_in_one_cell_is_one_memory_error(kernel, case_files) -> None:
    """duckdb's "Out of Memory Error" in the cell that imports duckdb is the guard's one error (shown as duckdb's
    own, a cell too early for the handler to know duckdb's classes, before 2026-12-01: 2 runs of 2)."""
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    before = k.oom_kills()
    res = k.run(_import_and_read(case_files), timeout=180)
    assert res.status == "error" and res.ename == "MemoryBudgetError", res.text()[:2000]
    assert len([o for o in res.outputs if o["output_type"] == "error"]) == 1
    assert k.alive and k.oom_kills() == before
    assert k.run("del big\n1 + 1").status in ("ok", "error")  # `big` was never bound
    assert k.run("1 + 1").ok
