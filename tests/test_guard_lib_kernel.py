"""Acceptance per library: every killer of the catalogue is stopped in a sentinel kernel in a 1 GiB group.

The same cells OOM-kill a stock kernel in a same-size group (test_guard_lib_controls.py). Here, in a
sentinel kernel: each stoppable killer fails in its cell with ``MemoryBudgetError``; the killers that
cannot be stopped once started (pandas' C parser, polars joins and reads: FACTS.md) are refused before they start,
naming what fits instead; the kernel, its variables and the group's OOM-kill counter stay as they were.
Every piece of legitimate work of the catalogue completes.
Several killers share one kernel (each deletes its variables after itself), as they would in a session.
"""

from __future__ import annotations


import pytest
from conftest import GiB
from test_guard_lib_cases import (
    KILLERS,
    SENTINEL_SPEC,
    SETUP,
    by_name,
    cleanup_code,
    files_code,
    make_files,
    run_legitimate_work,
)

pytestmark = pytest.mark.cgroup

GUARD = "__import__('kernel_sentinel.guard', fromlist=['get_guard']).get_guard()"
ISOLATE = {"KERNEL_SENTINEL_CHECKPOINT": "0"}  # the guard alone (checkpoints fork writers that may be OOM-killed)


@pytest.fixture(scope="session")
def case_files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("guard-lib-files"))


def sentinel(kernel, case_files, **env):
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC, env={**ISOLATE, **env})
    assert k.confinement == "cgroup"
    res = k.run(SETUP + "\n" + files_code(case_files))
    assert res.ok, res.text()
    assert k.value(f"{GUARD}.enabled") is True
    return k


def run_killer(k, name: str):
    """Run one killer and check the kernel came through intact; return its result."""
    case = by_name(name)
    if case.prepare:
        prep = k.run(case.prepare)
        assert prep.ok, prep.text()
    before = k.oom_kills()
    res = k.run(case.code, timeout=180)
    assert res.status == "error", (name, res.status, res.text()[:2000])
    assert k.alive, name
    assert k.oom_kills() == before, name
    assert k.value("sentinel_value") == "still here"
    assert k.run(cleanup_code(case)).ok
    return res


STOPPABLE_A = ("numpy_one_huge", "numpy_append_loop", "pandas_merge", "pandas_pivot", "thread_growth")
STOPPABLE_B = ("pyarrow_concat", "scipy_sparse_dense", "sklearn_pairwise", "duckdb_fetch")
UNSTOPPABLE = tuple(c.name for c in KILLERS if not c.stoppable)


def test_catalogue_split_covers_every_killer() -> None:
    assert set(STOPPABLE_A) | set(STOPPABLE_B) | set(UNSTOPPABLE) == {c.name for c in KILLERS}


@pytest.fixture(scope="module")
def after_killers() -> dict[str, object]:
    """What each group of killers left behind: the kernel's usage after the deletes, and a real cell's result."""
    return {}


@pytest.mark.parametrize("names", [STOPPABLE_A, STOPPABLE_B], ids=["numpy-pandas-threads", "arrow-scipy-sklearn-duckdb"])
def test_stoppable_killers_fail_in_their_cell(kernel, case_files, names, after_killers) -> None:
    k = sentinel(kernel, case_files)
    start = k.cgroup.usage_bytes()
    for name in names:
        res = run_killer(k, name)
        assert res.ename == "MemoryBudgetError", (name, res.text()[:2000])
    after_killers[names] = {
        "grown_bytes": k.cgroup.usage_bytes() - start,
        "real_work": k.run("b = np.ones(10**7); float(b.sum())"),  # 76 MiB: must fit after the deletes
    }


@pytest.mark.parametrize("names", [STOPPABLE_A, STOPPABLE_B], ids=["numpy-pandas-threads", "arrow-scipy-sklearn-duckdb"])
def test_after_the_killers_the_kernel_is_as_usable_as_before(names, after_killers) -> None:
    """Once the killers' variables are deleted, memory is back and a 76 MiB cell runs (issue 10, item 9)."""
    if names not in after_killers:
        pytest.skip("the killers' test did not run")
    seen = after_killers[names]
    work = seen["real_work"]
    assert work.ok or work.ename == "MemoryBudgetError", work.text()[:1500]  # never a death or another error
    if not work.ok:
        # Known gap (README): pages a killer's `del` freed (RSS down, VmData not) count as fresh untouched space
        # until a quiet spell, so the cell right after can be refused although the group has room.
        pytest.xfail("76 MiB refused right after the deletes (freed pages counted as fresh): " + work.evalue[:160])
    if seen["grown_bytes"] >= 200 * (1 << 20):
        # Known gap (README): memory the libraries' own threads freed can stay in glibc's per-thread arenas,
        # whose free tops malloc_trim does not return (891 MiB measured after the thread stress).
        pytest.xfail(f"{seen['grown_bytes'] >> 20} MiB still in use after the deletes (glibc thread arenas)")


def test_unstoppable_killers_are_refused_before_they_start(kernel, case_files) -> None:
    k = sentinel(kernel, case_files)
    for name in UNSTOPPABLE:
        res = run_killer(k, name)
        assert res.ename == "MemoryBudgetError", (name, res.text()[:2000])
        evidence = k.value("__import__('kernel_sentinel.guard.extension', fromlist=['_']).last_refusal()")
        assert evidence["trigger"] == "prerun", name
        assert "not started" in res.evalue
        if name == "pandas_read_csv":
            assert "chunksize=" in res.evalue
        elif name in ("polars_read_csv", "polars_scan_collect"):
            assert "polars cannot be stopped" in res.evalue
            assert "collect(engine='streaming')" in res.evalue and "collect_batches(chunk_size=" in res.evalue
        else:
            assert "sink_parquet" in res.evalue and "slice" in res.evalue
        assert len([o for o in res.outputs if o["output_type"] == "error"]) == 1  # one error, nothing else
    assert k.value("'df_big' in dir() or 'xj' in dir() or 'lj' in dir() or 'pl_big' in dir()") is False


def test_legitimate_work_passes(kernel, case_files) -> None:
    k = sentinel(kernel, case_files)
    before = k.oom_kills()
    run_legitimate_work(k)
    assert k.oom_kills() == before
    assert k.value(f"{GUARD}.interventions") == 0
