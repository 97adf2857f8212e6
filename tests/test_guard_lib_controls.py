"""Controls: every killer of the catalogue OOM-kills a stock kernel in a 1 GiB memory cgroup.

Without these the acceptance suite could pass because its cells are harmless. A stock kernel dies once,
so each killer gets its own (a plain ipykernel kernelspec, no sentinel). Each test checks the group's
OOM-kill counter moved and the kernel ended by SIGKILL.
"""

from __future__ import annotations

import pytest
from conftest import GiB
from kernel_harness import assert_oom_killed
from test_guard_lib_cases import KILLERS, SETUP, Case, files_code, make_files, run_legitimate_work

pytestmark = pytest.mark.cgroup


@pytest.fixture(scope="session")
def case_files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("guard-lib-files"))


def stock(kernel, case_files):
    k = kernel(limit_bytes=GiB)
    assert k.confinement == "cgroup"
    res = k.run(SETUP + "\n" + files_code(case_files))
    assert res.ok, res.text()
    return k


@pytest.mark.parametrize("case", KILLERS, ids=[c.name for c in KILLERS])
def test_killer_oom_kills_a_stock_kernel(kernel, case_files, case: Case) -> None:
    k = stock(kernel, case_files)
    if case.prepare:
        assert k.run(case.prepare).ok
    assert_oom_killed(k, case.code)


def test_legitimate_work_completes_in_a_stock_kernel(kernel, case_files) -> None:
    k = stock(kernel, case_files)
    before = k.oom_kills()
    run_legitimate_work(k)
    assert k.alive and k.oom_kills() == before
