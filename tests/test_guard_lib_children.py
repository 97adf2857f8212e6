"""Children and hooks: a shell command or a pool worker that eats the memory is named; one error, one explanation.

Controls: in a stock kernel in the same 1 GiB group the OOM killer fires on the same cells (it picks the
biggest task: the child), and a process pool whose worker it killed never returns (multiprocessing.Pool
waits forever). In a sentinel kernel the cell is stopped before that, the message names the child (pid,
command, size), the kernel and its variables stay, and the OOM-kill counter does not move.
"""

from __future__ import annotations


import pytest
from conftest import GiB
from test_guard_lib_cases import SENTINEL_SPEC

pytestmark = pytest.mark.cgroup

SETUP = "import numpy as np, multiprocessing as mp, time\nsentinel_value = 'still here'"
SHELL = '!python -c "import numpy as np, time; a = [(np.ones(10**7), time.sleep(0.01)) for _ in range(300)]"'
POOL = (
    "def eat(n):\n"
    "    return len([(np.ones(10**7), time.sleep(0.01)) for _ in range(n)])\n"
    "with mp.get_context('fork').Pool(2) as pool:\n"
    "    print(pool.map(eat, [150, 1]))"
)


def sentinel(kernel, **env):
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env={"KERNEL_SENTINEL_CHECKPOINT": "0", **env})
    assert k.run(SETUP).ok
    return k


def test_shell_command_is_named(kernel) -> None:
    k = sentinel(kernel)
    before = k.oom_kills()

    res = k.run(SHELL)
    assert res.status == "ok"  # IPython's `!` never fails a cell: the guard's interrupt went to the command
    # Either the guard's interrupt stopped the command, or the OOM killer took it first (children volunteer,
    # oom_score_adj 1000): either way one line names it, and the kernel is untouched.
    said = res.stderr
    assert ("kernel-sentinel: memory reached" in said or "kernel-sentinel: the OOM killer ended" in said), said
    if k.oom_kills() == before:
        assert "kernel-sentinel: memory reached" in said, said
    assert "python -c" in said and "import numpy" in said, said
    assert k.alive


def test_pool_worker_is_named(kernel) -> None:
    """The worker is stopped with the cell, or (when it outran the watchdog) the OOM killer's kill stops the cell.

    Either way the cell ends with a MemoryBudgetError naming the worker, where a stock kernel's Pool.map
    waits forever (the control below).
    """
    k = sentinel(kernel)
    before = k.oom_kills()
    res = k.run(POOL, timeout=60)
    assert res.status == "error" and res.ename == "MemoryBudgetError", res.text()[:2000]
    assert "a forked copy of the kernel: a multiprocessing or joblib worker" in res.evalue
    if k.oom_kills() == before:
        assert "grew to about" in res.evalue, res.evalue
    else:
        assert "The OOM killer ended" in res.evalue and "intact" in res.evalue, res.evalue
        assert "kernel-sentinel: the OOM killer ended" not in res.stdout + res.stderr  # said once, in the error
    assert k.alive
    assert k.value("sentinel_value") == "still here"
    assert k.run("b = np.ones(10**7); float(b.sum())").ok


def test_controls_the_oom_killer_takes_the_child_and_a_pool_hangs(kernel) -> None:
    k = kernel(limit_bytes=GiB)  # stock ipykernel
    assert k.run(SETUP).ok
    before = k.oom_kills()
    res = k.run(SHELL)
    assert k.oom_kills() > before  # the OOM killer fired on the command
    assert k.alive
    before = k.oom_kills()
    res = k.run(POOL, timeout=25)
    assert res.status == "timeout"  # the killed worker's task never comes back
    assert k.oom_kills() > before


DUCKDB_OWN_OOM = (
    "import duckdb\n"
    "con = duckdb.connect()\n"
    "con.execute(\"SET memory_limit = '40MB'\")\n"
    "con.execute(\"SET temp_directory = ''\")\n"
    "con.sql('SELECT list(range) FROM range(30000000)').fetchall()"
)


def test_duckdbs_own_out_of_memory_error_is_one_error(kernel) -> None:
    """duckdb's own "Out of Memory Error" (its memory_limit, not the budget): one error output, no hook noise."""
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC)  # checkpoints on: every hook a user has
    assert k.run(SETUP).ok
    res = k.run(DUCKDB_OWN_OOM)
    assert res.status == "error" and res.ename == "OutOfMemoryException", res.text()[:2000]
    errors = [o for o in res.outputs if o["output_type"] == "error"]
    assert len(errors) == 1
    assert [o for o in res.outputs if o["output_type"] != "error"] == []
    assert "Traceback" not in res.stderr and "Error in callback" not in res.stdout + res.stderr, res.stderr
    assert "Unexpected exception formatting" not in res.stdout
    assert k.run("x = 1").ok
