"""Real notebooks, stock against sentinel in the same-size memory group: never worse than stock (issue #10).

The 24 notebooks of chapters 2 (NumPy) and 3 (pandas) of the Python Data Science Handbook (code cells
only, tests/notebooks/handbook/NOTICE) are what a student runs in a small Binder- or classroom-sized
container. Issue #10 saw the sentinel kernel end 9 of them differently from stock in a 384 MiB group:
trivial cells hanging until the cell timeout (guard and checkpoints together), a false MemoryBudgetError
at ``import seaborn``, a KeyboardInterrupt in a tiny cell. Here each notebook runs cell by cell in a stock
ipykernel and then in the sentinel kernel as users get it (guard and checkpoints on, the default
environment), each kernel fresh in its own 384 MiB cgroup with the notebook's data files in its working
directory, every cell as written (%timeit included: no notebook takes a minute per kernel), and:

- every cell ends the same way in both kernels: the same status (ok / error / died / timeout) and, for
  an error, the same exception name. Values are not compared: cells draw random numbers and time
  things; a cell that fails for want of a network, a data file or a package (or for an API the book
  used that today's libraries changed) fails the same way in both, as do the cells that need its result;
- the sentinel kernel is alive at the end, its guard made no intervention, its group's OOM-kill counter
  did not move, and its checkpoints were on;
- stock's group OOM-killed nothing either, with one exception, which is the guard's promise and not a
  difference: a cell at which the OOM killer ends the stock kernel must fail with MemoryBudgetError in
  the sentinel kernel (one intervention), which lives on. The comparison ends there (stock ran nothing
  after it); the sentinel's later cells must still neither die nor hang. In 384 MiB this is 03.12's
  four 100000 x 100 DataFrames (four times 76 MiB, each built through a copy, on a ~100 MiB kernel):
  issue #10 has stock complete every notebook, this machine's stock kernel does not complete that one.

The same check runs in 256 MiB for the notebooks where the bench saw the sentinel kernel end a cell
differently from stock there (ALSO_IN_SMALLER; KNOWN_DIFFERENCES are marked xfail until the guard is
fixed). No timings are asserted. bench/bench_real_notebooks.py runs the same code and prints the figures
(peak memory, wall time) per notebook.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import GUARD_EXPR, SENTINEL_KERNELSPEC, MiB
from kernel_harness import CellResult, KernelHarness

pytestmark = pytest.mark.cgroup

HANDBOOK = Path(__file__).resolve().parent / "notebooks" / "handbook"
NOTEBOOKS = sorted(HANDBOOK.glob("0[23].*.ipynb"))
LIMIT = 384 * MiB  # the issue's group: a small Binder- or classroom-sized container
CELL_TIMEOUT = 60.0  # well above the slowest cell in stock (a %timeit); a hang shows as "timeout"


@dataclass
class NotebookRun:
    """One notebook run cell by cell in one kernel: each cell's result, then the kernel's state after it."""

    kind: str  # "stock" | "sentinel"
    cells: list[str]
    results: list[CellResult] = field(default_factory=list)
    seconds: float = 0.0
    peak_bytes: int | None = None
    oom_kills: int = 0
    alive: bool = True
    guard: dict[str, Any] | None = None  # the sentinel's get_guard().status() after the last cell
    checkpoints: str = ""  # the sentinel's `%sentinel checkpoint status`

    def outcomes(self) -> list[tuple[str, str | None]]:
        """Return (status, exception name or None) per cell; "not run" after the kernel died or hung."""
        got = [(r.status, r.ename if r.status == "error" else None) for r in self.results]
        return got + [("not run", None)] * (len(self.cells) - len(got))


def notebook_cells(path: Path) -> list[str]:
    """Return the code cells' sources of a stored notebook, as they are (%timeit cells included)."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def prepare_workdir(workdir: Path) -> None:
    """Copy the handbook's data folder into ``workdir`` (the kernel's cwd): the cells read data/*.csv."""
    shutil.copytree(HANDBOOK / "data", workdir / "data", dirs_exist_ok=True)


def run_notebook(harness: KernelHarness, kind: str, cells: list[str], timeout: float = CELL_TIMEOUT) -> NotebookRun:
    """Return the run of ``cells`` in a started kernel, one execute request per cell, as a frontend does."""
    run = NotebookRun(kind, cells)
    started = time.monotonic()
    for code in cells:
        res = harness.run(code, timeout=timeout)
        run.results.append(res)
        if res.status == "died":
            break  # the rest would be "died" too; "not run" says the same and takes no time
        if res.status == "timeout" and not _recovered(harness):
            break
    run.seconds = time.monotonic() - started
    run.alive = harness.alive
    run.oom_kills = harness.oom_kills()
    run.peak_bytes = harness.cgroup.peak_bytes() if harness.cgroup else None
    if kind == "sentinel" and run.alive:
        try:
            run.guard = harness.value(f"{GUARD_EXPR}.status()")
            run.checkpoints = harness.run("%sentinel checkpoint status", timeout=30).text()
        except Exception as exc:  # a kernel that no longer answers: the assertions say so, not this
            run.guard = {"unreadable": repr(exc)}
    return run


def _recovered(harness: KernelHarness) -> bool:
    """Return True once a hung cell was interrupted and the kernel answers again (the next cells may run)."""
    harness.km.interrupt_kernel()
    return harness.run("pass", timeout=30).ok


def stopped_killer(stock: NotebookRun, sentinel: NotebookRun) -> int | None:
    """Return the cell at which the group's OOM killer ended the stock kernel and the guard stopped the cell.

    That is the guard's promise, not a difference: where a stock kernel is OOM-killed (its group's counter
    moved), the same cell fails with MemoryBudgetError in the sentinel kernel, which lives on. None: no such
    cell (or the sentinel did something else there, which ``differences`` reports).
    """
    for i, (a, b) in enumerate(zip(stock.outcomes(), sentinel.outcomes())):
        if a == ("died", None):
            return i if stock.oom_kills and b == ("error", "MemoryBudgetError") else None
    return None


def differences(stock: NotebookRun, sentinel: NotebookRun) -> list[str]:
    """Return one line per cell the sentinel kernel ended differently from stock (empty: the same).

    The comparison ends at a ``stopped_killer`` cell: stock ran nothing after it. The sentinel's later
    cells are only held to not dying and not hanging (they run without the stopped cell's variables).
    """
    killed = stopped_killer(stock, sentinel)
    lines = []
    for i, (a, b) in enumerate(zip(stock.outcomes(), sentinel.outcomes())):
        if killed is not None and i >= killed:
            if i > killed and b[0] in ("died", "timeout"):
                lines.append(f"cell {i}: after the stopped cell {killed}, sentinel {_fmt(b)}; code: {stock.cells[i][:200]!r}")
            continue
        if a != b:
            res = sentinel.results[i] if i < len(sentinel.results) else None
            said = f" [{res.ename}: {(res.evalue or '')[:200]}]" if res is not None and res.ename else ""
            lines.append(f"cell {i}: stock {_fmt(a)}, sentinel {_fmt(b)}{said}; code: {stock.cells[i][:200]!r}")
    return lines


def _fmt(outcome: tuple[str, str | None]) -> str:
    status, ename = outcome
    return f"{status} {ename}" if ename else status


SMALLER = 256 * MiB  # a smaller classroom container
# In SMALLER, the notebooks in which bench/bench_real_notebooks.py saw the sentinel kernel end a cell
# differently from stock (all 24 there would double this file's run time; the bench runs all at any size).
# 03.09's false refusal (cell 18, births.pivot_table(...).plot(): MemoryBudgetError from the watchdog at
# ~200 MiB under its 232 MiB line, stock's group peak 175 MiB) came in 3 runs of 7 at b34b14b and in none
# of 10 since 5e471c2: it stays as a check. 02.04's (cell 16, `import matplotlib.pyplot`: the fence, at
# VmData + 2 MiB after pandas' import, refused it with the group at 120 MiB) came only from an uncommitted
# tree, in no run of b34b14b or 5e471c2, and costs a minute: the bench covers it.
ALSO_IN_SMALLER = ["03.09-Pivot-Tables.ipynb", "03.11-Working-with-Time-Series.ipynb"]
# Where the sentinel kernel ends a cell differently from stock today: (notebook, group size) -> the exact
# difference. The guard's to fix, not this test's: each stays asserted as stock-equal and is marked xfail
# (not strict: the outcome varies from run to run). None is known: 03.11's cell 38 in 256 MiB (its first scipy
# import, inside a gaussian rolling window: stock ok in every run; the sentinel at 5e471c2 failed 14 runs of 25:
# the fence refusing scipy's OpenBLAS reservations or the watchdog, once a SIGSEGV death, once a 60 s hang) ran
# clean 16 of 16 since 221eb97 (what an extension module reserves while it loads passes the fence).
KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {}


def _params() -> list[Any]:
    """Return the (notebook, group size) cases: all 24 in 384 MiB, then ALSO_IN_SMALLER in 256 MiB."""
    cases = [(p, LIMIT) for p in NOTEBOOKS] + [(HANDBOOK / name, SMALLER) for name in ALSO_IN_SMALLER]
    params = []
    for path, limit in cases:
        why = KNOWN_DIFFERENCES.get((path.name, limit))
        marks = [pytest.mark.xfail(strict=False, reason=why)] if why else []
        params.append(pytest.param(path, limit, id=f"{path.stem[:5]}-{limit // MiB}MiB", marks=marks))
    return params


def test_the_handbook_is_complete() -> None:
    # The issue's 24 notebooks and the data they read; a lost file would quietly shrink the check.
    assert len(NOTEBOOKS) == 24
    assert {name for name, _ in KNOWN_DIFFERENCES} | set(ALSO_IN_SMALLER) <= {p.name for p in NOTEBOOKS}
    assert {p.name for p in (HANDBOOK / "data").iterdir()} >= {
        "births.csv", "president_heights.csv", "state-abbrevs.csv", "state-areas.csv", "state-population.csv"
    }


def test_the_comparison_sees_what_issue_10_saw() -> None:
    # The failures the issue reported must register as differences; random values and the guard's
    # promise (a MemoryBudgetError where stock is OOM-killed) must not. No kernel: results as run() gives them.
    cells = ["import seaborn", "pd.Series(list('abcdef'))", "x = 1", "y"]

    def run(kind: str, *results: CellResult, oom_kills: int = 0) -> NotebookRun:
        return NotebookRun(kind, cells, list(results), oom_kills=oom_kills)

    ok, name_error = CellResult("ok"), CellResult("error", ename="NameError", evalue="name 'y' is not defined")
    stock = run("stock", ok, ok, ok, name_error)
    assert differences(stock, run("sentinel", ok, ok, ok, name_error)) == []
    refused = CellResult("error", ename="MemoryBudgetError", evalue="refused")
    found = differences(stock, run("sentinel", refused, CellResult("timeout"), CellResult("error", ename="KeyboardInterrupt")))
    assert [line.split(":")[0] for line in found] == ["cell 0", "cell 1", "cell 2", "cell 3"]
    assert "stock ok, sentinel error MemoryBudgetError [MemoryBudgetError: refused]" in found[0]
    assert "sentinel timeout" in found[1] and "not run" in found[3]
    killed = run("stock", ok, CellResult("died"), oom_kills=1)
    assert stopped_killer(killed, run("sentinel", ok, refused, ok, name_error)) == 1
    assert differences(killed, run("sentinel", ok, refused, ok, name_error)) == []
    assert differences(killed, run("sentinel", ok, refused, CellResult("timeout"))) != []  # later cells: no hang
    assert differences(killed, run("sentinel", ok, ok, ok, name_error)) != []  # not stopped: a difference
    assert differences(run("stock", ok, CellResult("died")), run("sentinel", ok, refused, ok, ok)) != []  # no OOM kill


@pytest.mark.parametrize(("path", "limit"), _params())
def test_notebook_ends_as_in_stock(kernel, path: Path, limit: int) -> None:
    cells = notebook_cells(path)
    runs: dict[str, NotebookRun] = {}
    for kind, spec in (("stock", None), ("sentinel", SENTINEL_KERNELSPEC)):
        k = kernel(limit_bytes=limit, kernelspec=spec)
        assert k.confinement == "cgroup"
        prepare_workdir(k.workdir)  # before the first cell: the kernel's cwd is its workdir
        runs[kind] = run_notebook(k, kind, cells)
        k.close()  # one group at a time: the two kernels do not compete for the machine's memory
    stock, sentinel = runs["stock"], runs["sentinel"]
    killed = stopped_killer(stock, sentinel)
    assert differences(stock, sentinel) == []
    assert sentinel.oom_kills == 0
    assert stock.oom_kills == (0 if killed is None else 1), (stock.oom_kills, stock.outcomes())
    assert sentinel.alive
    assert sentinel.guard is not None and "interventions" in sentinel.guard, sentinel.guard
    # No intervention where stock completes; exactly the one that stopped the cell stock was killed in.
    assert sentinel.guard["interventions"] == (0 if killed is None else 1), sentinel.guard.get("last_failure")
    assert "checkpoints: on" in sentinel.checkpoints  # the issue's hangs needed guard and checkpoints both
