"""A frontend's interrupt during a kernel's start-up, and a kernel that fails at start-up on its own (issue 11).

jupyter_client's shutdown interrupts the kernel's process group (SIGINT) before it asks the kernel to leave. A
kernel still starting dies of that KeyboardInterrupt, as stock does: mostly by the signal (Python re-raises it at
exit), but with exit status 1 when the interrupt lands while Python imports ``site`` (site-packages' ``.pth``
files, ``sitecustomize``): "Fatal Python error: init_import_site". That is the frontend's doing, not a death.
The supervisor tells it from a kernel that fails at start-up by itself by what the kernel did with SIGINT when the
interrupt came (``/proc/PID/status``: caught by Python, or ignored as ipykernel does from its start-up on).

Each kernel here is held at a chosen moment of its start-up by a ``sitecustomize`` on its PYTHONPATH, so the
interrupt lands exactly there: no timing decides the outcome.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import SENTINEL_KERNELSPEC as SENTINEL
from conftest import MiB
from kernel_harness import KernelHarness

# Runs in the kernel only (its parent is the supervisor): the supervisor imports site with the same PYTHONPATH.
HOLD = """\
import os, signal, time
if os.environ.get("KERNEL_SENTINEL_SUPERVISOR") == str(os.getppid()):
    {before}
    open({marker!r}, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
    {after}
"""


def _kernel_held_in_site(tmp_path: Path, before: str = "pass", after: str = "pass") -> tuple[KernelHarness, Path, Path]:
    """A sentinel kernel started through jupyter_client and held in ``site``'s import until ``go`` exists."""
    import os

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    marker, go = tmp_path / "held", tmp_path / "go"
    (site_dir / "sitecustomize.py").write_text(HOLD.format(before=before, after=after, marker=str(marker), go=str(go)))
    workdir = tmp_path / "k"
    workdir.mkdir()
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH", "")) if p)
    h = KernelHarness(workdir, limit_bytes=384 * MiB, kernelspec=SENTINEL, env={"PYTHONPATH": path})
    h.km.start_kernel(env=h._env, cwd=str(workdir))
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the kernel never reached its sitecustomize"
    return h, marker, go


def _kernel_id(h: KernelHarness) -> str:
    from kernel_sentinel.identity import kernel_id_from_connection_file

    return kernel_id_from_connection_file(h.km.connection_file)


def test_a_shutdown_that_interrupts_the_kernel_while_python_imports_site_records_no_death(tmp_path) -> None:
    """The frontend shuts the kernel down while Python imports ``site``: its KeyboardInterrupt ends the kernel with
    exit status 1 (not by the signal), which the supervisor mirrors; it is not recorded as a death."""
    from kernel_sentinel.autopsy import death_report

    h, _, _ = _kernel_held_in_site(tmp_path)
    try:
        kernel_id = _kernel_id(h)
        process = h.km.provisioner.process  # the supervisor: it exits as its kernel did
        h.km.shutdown_kernel(now=False)  # SIGINT to the group first, then the shutdown request
        assert process.wait(timeout=60) == 1  # "Fatal Python error: init_import_site", mirrored
        assert death_report(kernel_id, wait=2) is None
    finally:
        h.close()


def test_a_kernel_the_shutdown_terminates_before_it_was_ready_records_no_death(tmp_path) -> None:
    """A kernel that does not leave in time when shut down while starting (here: it ignores the interrupt and never
    reads the shutdown request) is terminated by jupyter_client (SIGTERM to the group): not a death either."""
    import signal

    from kernel_sentinel.autopsy import death_report

    h, _, _ = _kernel_held_in_site(tmp_path, before="signal.signal(signal.SIGINT, signal.SIG_IGN)")
    try:
        kernel_id = _kernel_id(h)
        process = h.km.provisioner.process
        h.km.shutdown_wait_time = 1.0  # jupyter_client's wait before SIGTERM (5 s by default)
        h.km.shutdown_kernel(now=False)
        assert process.wait(timeout=60) == -signal.SIGTERM
        assert death_report(kernel_id, wait=2) is None
    finally:
        h.close()


def test_a_kernel_that_fails_at_start_up_after_ignoring_an_interrupt_is_a_death(tmp_path) -> None:
    """A kernel that ignores SIGINT (as ipykernel does once started) and then exits 1 on its own before it was
    ready: the frontend's interrupt did not end it, so its end is recorded as a death."""
    from kernel_sentinel.autopsy import death_report

    h, _, go = _kernel_held_in_site(tmp_path, before="signal.signal(signal.SIGINT, signal.SIG_IGN)", after="os._exit(1)")
    try:
        kernel_id = _kernel_id(h)
        process = h.km.provisioner.process
        h.km.interrupt_kernel()  # SIGINT to the group, as the frontend's shutdown sends first
        time.sleep(1.0)  # the supervisor, idle in its wait, notes the interrupt before the kernel fails on its own
        go.touch()
        assert process.wait(timeout=60) == 1
        report = death_report(kernel_id, wait=10)
        assert report is not None
    finally:
        h.close()


def test_a_kernel_that_fails_at_start_up_with_no_interrupt_is_a_death(tmp_path) -> None:
    """Exit status 1 before ready with no interrupt from the frontend (a broken start-up) stays a death."""
    from kernel_sentinel.autopsy import death_report

    h, _, go = _kernel_held_in_site(tmp_path, after="os._exit(1)")
    try:
        kernel_id = _kernel_id(h)
        process = h.km.provisioner.process
        go.touch()
        assert process.wait(timeout=60) == 1
        assert death_report(kernel_id, wait=10) is not None
    finally:
        h.close()
