"""Checkpoints of big containers of small objects are incremental (issue 11 item 3).

A rebound dict of 200k small lists, saved again after one entry changed, writes one chunk, not the whole
dict again; it comes back equal, in order, with objects shared between its entries still shared. Real
pickling, real files, the real fork writer (in this process: small data, nothing here can exhaust
memory), and once through a real sentinel kernel killed by SIGKILL.
"""

from __future__ import annotations

import signal

import pytest

from conftest import SENTINEL_KERNELSPEC, MiB
from test_resurrect_store import _run as _run_cell

from kernel_sentinel.resurrect.checkpoint import Checkpointer
from kernel_sentinel.resurrect.restore import load_checkpoint


def _run(cp: Checkpointer, ns: dict, code: str, count: int) -> dict:
    """Run one cell through the checkpointer's hooks, wait for its checkpoint; return the writer's result."""
    _run_cell(cp, ns, code, count)
    return cp.last_result


REBIND = "d = {i: [i, i + 1, str(i)] for i in range(200_000)}\nd[77_777] = CHANGE\nd['one'] = shared\nd['two'] = shared"


@pytest.mark.parametrize("writer", ["fork", "thread"])
def test_a_rebound_dict_with_one_changed_entry_writes_one_chunk_and_restores_exactly(writer: str) -> None:
    ns: dict = {}
    cp = Checkpointer(ns, enabled=True, kernel_id="k-chunks", session_key=None, writer=writer)
    _run(cp, ns, "shared = ['the same list']", 1)
    first = _run(cp, ns, REBIND.replace("CHANGE", "[0]"), 2)
    assert first["status"] == "written", first
    second = _run(cp, ns, REBIND.replace("CHANGE", "[1]"), 3)  # a new dict: every entry a new object, one differs
    assert second["status"] == "written", second
    assert first["bytes_written"] > 4_000_000  # the whole dict: ~5 MB
    assert second["bytes_written"] < first["bytes_written"] / 10, (first, second)

    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-other")
    assert "d" in fresh, report.text()
    assert fresh["d"] == ns["d"] and list(fresh["d"]) == list(ns["d"])  # equal, and in the same order
    assert fresh["d"][77_777] == [1]
    assert fresh["d"]["one"] is fresh["d"]["two"]  # shared between chunks: still one object
    assert fresh["d"]["one"] is not fresh["shared"]  # (small objects shared between variables come back as copies)


def test_a_big_list_and_a_dict_holding_notebook_code_round_trip() -> None:
    """A list is chunked too; a container whose entries refer to the notebook's code is saved whole (cloudpickle)."""
    ns: dict = {"__name__": "__main__"}
    cp = Checkpointer(ns, enabled=True, kernel_id="k-chunks2", session_key=None, writer="fork")
    code = ("rows = [(i, float(i), 'r%d' % i) for i in range(100_000)]\n"
            "def square(x):\n    return x * x\n"
            "funcs = {i: square for i in range(20_000)}")
    result = _run(cp, ns, code, 1)
    assert result["status"] == "written", result
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-other")
    assert fresh.get("rows") == ns["rows"], report.text()
    assert fresh["funcs"][19_999](7) == 49 and len(fresh["funcs"]) == 20_000
    rows_again = _run(cp, ns, "rows = list(rows)\nrows[5] = (5, 5.5, 'x')", 2)
    assert rows_again["bytes_written"] < 200_000, rows_again  # one chunk of the ~2.6 MB list


SENTINEL = SENTINEL_KERNELSPEC


def test_a_chunked_dict_comes_back_after_sigkill(kernel) -> None:
    """Through a real sentinel kernel: the chunked dict, checkpointed twice, is restored after SIGKILL."""
    old = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL)
    assert old.run("shared = ['x']\n" + REBIND.replace("CHANGE", "[0]")).ok
    assert old.run("%sentinel checkpoint now").ok
    assert old.run(REBIND.replace("CHANGE", "['after']")).ok
    res = old.run("%sentinel checkpoint now")
    # written now, or already by the checkpoint taken in the pause after the cell
    assert res.ok and ("written" in res.stdout or "nothing changed" in res.stdout), res.text()
    old.signal(signal.SIGKILL)
    assert old.wait_for_death() is not None
    new = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL)
    res = new.run("%sentinel restore")
    assert res.ok and "d" in res.stdout, res.text()
    assert new.value("[len(d), d[77_777], d[199_999], d['one'] is d['two'], list(d)[:3]]") == [
        200_002, ["after"], [199_999, 200_000, "199999"], True, [0, 1, 2]]
