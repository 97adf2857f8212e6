"""Deaths that memory caused are explained as memory (``memory_exhausted``), naming the library and its remedy.

One real death: polars aborts the kernel (SIGABRT, "memory allocation of N bytes failed") when the guard's
fence refuses its cross join's output in a 1 GiB group; the frames are built in the same cell, so the
pre-run check cannot size them (the case that stays unpreventable). Then pure tests of the classification
on evidence captured from real deaths (tests/samples/autopsy/; ``KS_CAPTURE_SAMPLES=1`` rewrites
polars_abort_fenced.json from the real death here).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from conftest import GiB
from test_guard_lib_cases import SENTINEL_SPEC
from kernel_harness import kill_signal_name

from kernel_sentinel.autopsy import death_report
from kernel_sentinel.autopsy.classify import classify
from kernel_sentinel.autopsy.evidence import Evidence
from kernel_sentinel.autopsy.explain import explain
from kernel_sentinel.autopsy.supervisor import kernel_id_from_connection_file
from kernel_sentinel.store import Store

SAMPLES = Path(__file__).parent / "samples" / "autopsy"
POLARS_IN_ONE_CELL = "a = pl.DataFrame({'x': np.arange(20000)})\nb = a.join(a, how='cross')"


@pytest.mark.cgroup
def test_polars_abort_at_the_fence_is_explained_as_memory(kernel) -> None:
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env={"KERNEL_SENTINEL_CHECKPOINT": "0"})
    assert k.run("import numpy as np, polars as pl").ok
    res = k.run(POLARS_IN_ONE_CELL)
    assert res.status == "died", (res.status, res.text()[:2000])
    k.wait_for_death()
    assert kill_signal_name(k.exit_status) == "SIGABRT"
    assert k.oom_kills() == 0  # the fence refused: the OOM killer never came
    kid = kernel_id_from_connection_file(k.km.connection_file)
    report = death_report(kid, wait=10)
    assert report is not None
    assert report["cause"] == "abort"  # what the process died of
    assert report["memory_exhausted"] is True  # ... and why
    assert report["summary"].startswith("Out of memory: polars aborted the kernel (SIGABRT)")
    assert "streaming" in report["remedy"] and "%sentinel restore" in report["remedy"]
    assert report["evidence"]["memory"]["library"] == "polars"
    with Store() as store:
        row = store.death(kid)
    guard_region = row["evidence"]["flight"]["guard"]  # what the guard left for the autopsy and the server
    assert guard_region["status"]["enabled"] is True and guard_region["status"]["budget_bytes"] == GiB
    assert guard_region["items"][-1]["kind"] == "risk" and guard_region["items"][-1]["libraries"] == ["polars"]
    if os.environ.get("KS_CAPTURE_SAMPLES") == "1":
        (SAMPLES / "polars_abort_fenced.json").write_text(
            json.dumps({"evidence": row["evidence"], "report": row["report"]}, indent=1)
        )


# -- pure: the classification on captured evidence ----------------------------------------------------


def sample(name: str) -> Evidence:
    return Evidence.from_dict(json.loads((SAMPLES / f"{name}.json").read_text())["evidence"])


def report_of(ev: Evidence) -> dict:
    return explain(ev, classify(ev))


def test_captured_polars_abort_is_memory() -> None:
    report = report_of(sample("polars_abort_fenced"))
    assert report["cause"] == "abort" and report["exit"] == {"signal": "SIGABRT"}
    assert report["memory_exhausted"] is True
    assert report["summary"].startswith("Out of memory: polars")
    assert "collect(engine='streaming')" in report["remedy"]
    assert report["remedy"].endswith("brings back the variables of the last checkpoint.")
    assert report["headline"] == "out of memory: polars abort"


@pytest.mark.parametrize(("name", "exhausted"), [("abort", False), ("segfault", False), ("exit3", False),
                                                ("bus_error_disk_full", False), ("oom_cgroup", True),
                                                ("external_sigkill_child", False)])
def test_other_captured_deaths(name: str, exhausted: bool) -> None:
    report = report_of(sample(name))
    assert report["memory_exhausted"] is exhausted
    if exhausted:
        assert report["summary"].startswith("Out of memory")
        assert "%sentinel restore" in report["remedy"]
    else:
        assert "%sentinel restore" not in report["remedy"]


def test_an_abort_without_the_fence_is_not_called_memory() -> None:
    ev = sample("polars_abort_fenced")
    ev.flight["meta"]["guard"] = False  # KERNEL_SENTINEL_GUARD=0: no allocation was refused at a budget
    report = report_of(ev)
    assert report["memory_exhausted"] is False
    assert report["summary"].startswith("Native code")


def test_an_abort_outside_the_libraries_needs_other_proof() -> None:
    ev = sample("polars_abort_fenced")
    ev.flight["cell"]["code"] = "import ctypes\nctypes.CDLL(None).abort()"
    ev.flight["guard"] = None
    assert report_of(ev)["memory_exhausted"] is False
    near = copy.deepcopy(ev)  # ... such as memory at 95% of the budget at the last sample
    budget = near.flight["memory"]["budget_bytes"]
    near.flight["memory"]["samples"] = [[near.died_at - 0.1, int(budget * 0.95), 1 << 20]]
    report = report_of(near)
    assert report["memory_exhausted"] is True
    assert "% of its memory budget at the last sample" in report["evidence"]["memory"]["proof"][0]


def test_a_death_soon_after_a_refusal_is_memory_a_prerun_refusal_is_not() -> None:
    ev = sample("polars_abort_fenced")
    ev.flight["cell"]["code"] = "send_huge_output()"
    refusal = {"kind": "refusal", "trigger": "fence", "t": ev.died_at - 2.0, "cell": 2}
    ev.flight["guard"] = {"items": [refusal]}
    report = report_of(ev)
    assert report["memory_exhausted"] is True
    assert "refused an allocation 2.0 s before" in report["evidence"]["memory"]["proof"][0]
    ev.flight["guard"] = {"items": [{**refusal, "trigger": "prerun"}]}  # nothing of that cell ran
    assert report_of(ev)["memory_exhausted"] is False


def test_captured_loader_exit_at_the_fence_is_memory() -> None:
    """duckdb's idle worker thread, first touching its thread-local data at the fence: glibc's loader exits 127.

    Captured from a real death (a loaded 2-core machine, a 1 GiB group: 5 runs in 30 of the arrow-scipy-sklearn-
    duckdb killers); perf showed ``tls_get_addr_tail`` -> malloc refused -> ``_exit(127)`` in a duckdb worker.
    """
    ev = sample("duckdb_tls_exit127_fenced")
    report = report_of(ev)
    assert report["cause"] == "exit" and report["exit"] == {"code": 127}  # what the process died of
    assert report["memory_exhausted"] is True  # ... and why
    assert report["summary"].startswith("Out of memory: duckdb ended the kernel (exit code 127")
    assert "thread-local data" in report["summary"]
    proof = report["evidence"]["memory"]["proof"]
    assert proof[0] == "the guard refused an allocation of cell [6] 3.5 s before the death"  # sklearn's, not duckdb's
    assert "% of its memory budget at the last sample" in proof[1]
    assert "%sentinel restore" in report["remedy"]
    named = copy.deepcopy(ev)  # an earlier cell's refusal names no library for this death
    [i for i in named.flight["guard"]["items"] if i["kind"] == "refusal"][-1]["library"] = "pyarrow"
    assert report_of(named)["evidence"]["memory"]["library"] == "duckdb"
    finished = copy.deepcopy(ev)  # an exit between cells is the kernel's own, whatever memory was in use
    finished.flight["cell"]["finished"] = finished.died_at - 1.0
    assert report_of(finished)["memory_exhausted"] is False
    unfenced = copy.deepcopy(ev)  # no fence, no refused allocation: an exit(127) of the user's code
    unfenced.flight["meta"]["guard"] = False
    assert report_of(unfenced)["memory_exhausted"] is False
    low = copy.deepcopy(ev)  # nothing refused lately and memory far from the budget: no proof
    low.flight["guard"]["items"] = [i for i in low.flight["guard"]["items"] if i["kind"] != "refusal"]
    low.flight["memory"]["samples"] = [[low.died_at - 0.1, 100 << 20, 900 << 20]]
    assert report_of(low)["memory_exhausted"] is False
    other = copy.deepcopy(ev)  # another exit code is never memory's on this proof
    other.exit_code = 3
    assert report_of(other)["memory_exhausted"] is False
