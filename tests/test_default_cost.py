"""The default sentinel kernel, as users get it, stays out of the way (issue 11, issue 10 item 6).

Real kernels through jupyter_client, in real memory groups: the ``python3-sentinel`` kernelspec's argv
(supervisor, flight recorder, guard and checkpoints all on, nothing configured) next to stock ipykernel.
No timing is asserted here (speed is in bench/bench_default_cost.py): these tests show what must hold
whatever the machine's speed.
"""

from __future__ import annotations

import signal
import sys

from conftest import MiB
from kernel_harness import STOCK_ARGV

SENTINEL = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "Python 3 (sentinel)",
    "language": "python",
    "env": {"JPY_SESSION_NAME": "/home/user/cost.ipynb"},  # what jupyter_server gives every kernel
}
STOCK = {"argv": STOCK_ARGV, "display_name": "stock", "language": "python"}

# What the notebooks that hung did in a 384 MiB group: pandas, then trivial cells one after the other.
SMALL_CELLS = [
    "import numpy as np\nimport pandas as pd",
    "pd.Series(list('abcdef'))",
    "pd.DataFrame(np.arange(9).reshape(3, 3))",
    "s = pd.Series(list('abcdef'))\ns.str.upper().tolist()",
    "df = pd.DataFrame({'a': [1, 2, 3], 'b': list('xyz')})\ndf.shape",
    "d = {i: [i, str(i)] for i in range(20_000)}\nlen(d)",
    "x = list(range(1000))\nsum(x)",
    "df.describe().shape",
    "pd.Series(list('abcdef')).value_counts().size",
]


def _outputs(cell) -> str:
    return "\n".join(str((o.get("data") or {}).get("text/plain", "")) for o in cell.outputs)


def test_trivial_pandas_cells_complete_in_a_384_mib_group_as_in_stock(kernel) -> None:
    """The hang of FACTS.md 'What the defaults cost' (guard + checkpoints, 384 MiB): none, same outputs as stock."""
    results = {}
    for name, spec in (("stock", STOCK), ("sentinel", SENTINEL)):
        k = kernel(limit_bytes=384 * MiB, kernelspec=spec)
        cells = []
        for _ in range(2):  # twice: the second time every cell runs while the first pass is being saved
            for code in SMALL_CELLS:
                res = k.run(code, timeout=90)
                assert res.status == "ok", f"{name}: {code!r} -> {res.status}: {res.text()[:800]}"
                cells.append((_outputs(res), res.stdout, res.stderr))
        assert k.alive and k.oom_kills() == 0
        results[name] = cells
    assert results["sentinel"] == results["stock"]  # nothing added to any cell's output either


def test_lambda_and_notebook_function_come_back_after_sigkill(kernel) -> None:
    """cloudpickle is a dependency: functions and lambdas are saved by default and restored in a new kernel."""
    old = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL)
    cells = [
        "scale = 3",
        "double = lambda x: 2 * x",
        "def affine(x, b=1):\n    return scale * x + b",
        "def make_counter(start):\n    def step(n):\n        return start + n\n    return step\ncounter = make_counter(10)",
        "table = {'f': affine, 'g': double}",
    ]
    for code in cells:
        assert old.run(code).ok
    expect = "[double(21), affine(2), affine(2, b=0), counter(5), table['f'](1), table['g'](4)]"
    before = old.value(expect)
    assert before == [42, 7, 6, 15, 4, 8]
    # the checkpoint is written off the critical path: let it finish, then kill the kernel without warning
    status = old.run("%sentinel checkpoint now")
    assert status.ok and "written" in status.stdout or "nothing changed" in status.stdout, status.text()
    old.signal(signal.SIGKILL)
    assert old.wait_for_death() is not None
    new = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL)
    restored = new.run("%sentinel restore")
    assert restored.ok, restored.text()
    for name in ("double", "affine", "counter", "table", "scale"):
        assert name in restored.stdout, restored.stdout
    assert new.value(expect) == before


def test_memory_errors_get_one_error_and_no_checkpoint_note(kernel) -> None:
    """Issue 10 item 6: after a memory error, no second traceback and no note of ours in the cell's output."""
    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL)
    assert k.run("import numpy as np\nkeep = np.arange(1000)").ok
    failed = k.run("big = np.ones(2 * 1024**3 // 8)\nbig[:] = 1")  # 2 GiB in a 384 MiB group
    assert failed.status == "error" and failed.ename == "MemoryBudgetError", failed.text()[:1500]
    errors = [o for o in failed.outputs if o["output_type"] == "error"]
    assert len(errors) == 1, failed.outputs
    assert "checkpoint" not in failed.text().lower() and "Traceback" not in failed.stderr, failed.text()
    # the next cells run clean, and the skipped checkpoint is told where the user asks for it
    after = k.run("y = keep.sum()\nprint(y)")
    assert after.ok and after.stdout.strip() == str(sum(range(1000))), after.text()
    status = k.run("%sentinel checkpoint status")
    assert "ran out of memory" in status.stdout, status.stdout


def test_duckdb_out_of_memory_is_its_own_single_error(kernel) -> None:
    """duckdb's own 'Out of Memory Error' stays the only error: the hooks after it add nothing."""
    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL)
    assert k.run("import duckdb\ncon = duckdb.connect()\ncon.sql(\"SET memory_limit='8MB'\")\n"
                 "con.sql(\"SET threads=1\")\ncon.sql(\"SET preserve_insertion_order=false\")").ok
    failed = k.run("con.sql('SELECT i, md5(i::VARCHAR) AS h FROM range(3000000) t(i) ORDER BY h').fetchall()")
    assert failed.status == "error", failed.text()[:1500]
    assert "memory" in f"{failed.ename} {failed.evalue}".lower(), failed.text()[:1500]
    errors = [o for o in failed.outputs if o["output_type"] == "error"]
    assert len(errors) == 1, failed.outputs
    assert "checkpoint" not in failed.text().lower() and "Traceback" not in failed.stderr, failed.text()
    assert k.run("z = 1").ok and k.alive


def test_checkpoint_notes_stay_in_status_unless_asked(kernel) -> None:
    """What checkpoints had to do (here: delete old ones to stay in a 1 KiB disk budget) is in status, not in cells."""
    spec = {**SENTINEL, "env": {**SENTINEL["env"], "KERNEL_SENTINEL_CHECKPOINT_DISK": "1K"}}
    k = kernel(limit_bytes=384 * MiB, kernelspec=spec)
    outs = []
    for code in ("a = list(range(100_000))", "b = 'x' * 10_000", "c = {'k': a}"):
        outs.append(k.run(code))
        now = k.run("%sentinel checkpoint now")  # asked: the answer is shown
        assert now.ok and now.stdout.strip(), now.text()
    assert all(r.ok for r in outs)
    assert all(r.stdout == "" and r.stderr == "" for r in outs), [r.text() for r in outs]
    status = k.run("%sentinel checkpoint status")
    assert "checkpoints: on" in status.stdout and "to stay in the disk budget" in status.stdout, status.stdout


def _kernel_id(k) -> str:
    from kernel_sentinel.identity import kernel_id_from_connection_file

    return kernel_id_from_connection_file(k.km.connection_file)


def test_a_death_just_before_a_shutdown_request_is_still_recorded(kernel) -> None:
    """The supervisor leaves as fast as the kernel on a shutdown, but a death that came first is a death."""
    from kernel_sentinel.autopsy import death_report

    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL)
    assert k.run("x = 1").ok
    kernel_id = _kernel_id(k)
    k.signal(signal.SIGKILL)  # the ipykernel process alone, from outside
    k.km.shutdown_kernel(now=False)  # and at once the frontend's graceful shutdown, as a closing tab sends
    report = death_report(kernel_id, wait=30)
    assert report is not None, "the death was lost"
    assert report["cause"] == "external_kill" and report["exit"] == {"signal": "SIGKILL"}, report


def test_restarts_from_jupyter_client_record_no_death(kernel) -> None:
    """A graceful restart (Restart kernel, nbclient) and a forced one (restart now) are not deaths."""
    from kernel_sentinel.autopsy import death_report

    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL)
    kernel_id = _kernel_id(k)
    assert k.run("import numpy as np\nx = np.arange(10)").ok
    k.km.restart_kernel(now=False)
    k.kc.wait_for_ready(timeout=60)
    assert k.run("y = 2").ok
    k.km.restart_kernel(now=True)
    k.kc.wait_for_ready(timeout=60)
    assert k.run("z = 3").ok and k.value("z") == 3
    assert death_report(kernel_id, wait=2) is None
    k.km.shutdown_kernel(now=False)
    assert death_report(kernel_id, wait=2) is None
