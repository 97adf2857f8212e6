"""Fixtures every test may use: an isolated KERNEL_SENTINEL_HOME, real kernels in real memory cgroups."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kernel_harness import KernelHarness

from kernel_sentinel.confine import ConfineError, MemoryCgroup

MiB = 1 << 20
GiB = 1 << 30
# The sentinel kernel as users get it (the supervisor's launcher), and an expression for its guard inside it.
SENTINEL_KERNELSPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
}
GUARD_EXPR = "__import__('kernel_sentinel.guard', fromlist=['get_guard']).get_guard()"
MAX_TEST_CGROUP = GiB  # the safety rule: nothing that exhausts memory runs in a bigger group


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test's store, flight records and Jupyter runtime files out of the user's real folders."""
    home = tmp_path_factory.mktemp("ks-home")
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(home))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
    return home


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Callable[..., KernelHarness]]:
    """Return a factory: ``kernel(limit_bytes=256 * MiB)`` starts a real kernel in its own cgroup.

    Keyword arguments go to ``KernelHarness`` (``kernelspec=``, ``env=``, ``confine=``).
    Every kernel and cgroup it made is shut down and removed when the test ends, pass or fail.
    """
    made: list[KernelHarness] = []

    def start(limit_bytes: int | None = None, **kwargs) -> KernelHarness:
        if limit_bytes is not None and limit_bytes > MAX_TEST_CGROUP:
            raise ValueError(f"test cgroups are at most 1 GiB, asked for {limit_bytes}")
        workdir = tmp_path / f"kernel{len(made)}"
        workdir.mkdir()
        harness = KernelHarness(workdir, limit_bytes=limit_bytes, **kwargs)
        made.append(harness)
        return harness.start()

    yield start
    for harness in made:
        harness.close()


@pytest.fixture
def memory_cgroup() -> Iterator[Callable[[int], MemoryCgroup]]:
    """Return a factory for bare memory cgroups (at most 1 GiB), removed after the test; skips without one."""
    made: list[MemoryCgroup] = []

    def create(limit_bytes: int) -> MemoryCgroup:
        if limit_bytes > MAX_TEST_CGROUP:
            raise ValueError(f"test cgroups are at most 1 GiB, asked for {limit_bytes}")
        try:
            group = MemoryCgroup.create(limit_bytes, prefix="ks-test")
        except ConfineError as exc:
            pytest.skip(f"needs a memory cgroup: {exc}")
        made.append(group)
        return group

    yield create
    for group in made:
        group.remove()
