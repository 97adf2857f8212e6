"""The supervisor's witness, renewed once the chores are done, is the one its note names (issue 10: usable memory).

The supervisor and its witness stay in the kernel's memory group for the kernel's whole life: every page either
writes after the witness's fork is a copy charged there. So the renewed witness's note (its pid beside the flight
record, for sweeps) is written with plain ``os`` calls right after that fork, to a path worked out at the first
witness's note. A sweep waits for the witness the note names, and a SIGKILLed supervisor's death is recorded by
that witness: the note must name the witness that runs, not the first one, which has left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from kernel_harness import python_in_home, standin_supervisor


def _children(sup: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """Return (the stand-in kernel, the other children: witnesses and sweeper) of the supervisor, zombies left out."""
    kernel, others = [], []
    for child in sup.children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            (others if child.cmdline() == sup.cmdline() else kernel).append(child)
        except psutil.NoSuchProcess:
            continue
    return kernel, others


def test_the_renewed_witness_is_the_one_its_note_names(tmp_path: Path) -> None:
    from kernel_sentinel.autopsy.flight import record_paths

    home = tmp_path / "home"
    go = tmp_path / "go"
    sup = subprocess.Popen(standin_supervisor(go), env={**os.environ, "KERNEL_SENTINEL_HOME": str(home)},
                           start_new_session=True)
    try:
        me = psutil.Process(sup.pid)
        deadline = time.monotonic() + 60
        kernel, others = _children(me)
        while (len(kernel), len(others)) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.02)
            kernel, others = _children(me)
        assert (len(kernel), len(others)) == (1, 1), (kernel, others)
        first = others[0].pid
        note = record_paths(home, f"pid-{sup.pid}", kernel[0].pid)[0].with_suffix(".sup")
        go.touch()
        # the chores run, the sweeper and the first witness leave: the kernel and the renewed witness stay
        while time.monotonic() < deadline:
            kernel, others = _children(me)
            # (a child that is exiting reads an empty command line and sorts as "kernel" for a moment: wait for the
            # state the assertion below names, not for part of it; a CI run broke out one poll too early)
            if len(kernel) == 1 and len(others) == 1 and others[0].pid != first and note.exists():
                break
            time.sleep(0.05)
        assert len(kernel) == 1 and len(others) == 1 and others[0].pid != first, (kernel, others, first)
        assert note.read_text() == f"{sup.pid} {others[0].pid}\n"
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    finally:
        os.killpg(sup.pid, signal.SIGKILL)  # the whole group, as jupyter_client's forced shutdown: nothing to record
        sup.wait()


def test_what_the_supervisor_holds_until_its_kernel_ends_imports_little(tmp_path: Path) -> None:
    """Until its kernel ends the supervisor holds what leaving after a shutdown needs (the flight record's reader,
    the open store), in the kernel's memory group: not typing, threading, ctypes or what only a death's record
    needs (socket, getpass, uuid, platform). Each would stay charged there for the kernel's whole life."""
    script = (
        "import runpy, kernel_sentinel.launch\n"
        "from kernel_sentinel.autopsy import supervisor\n"
        "import sys; before = set(sys.modules)\n"
        "supervisor._preload()\n"
        "sup = supervisor.Supervisor(['kernel'], None)\n"
        "sup._register()\n"
        "from kernel_sentinel.autopsy.flight import read_record, record_paths, shutdown_in_record\n"
        "shutdown_in_record(read_record(record_paths(sup.home, sup.kernel_id, 1)[0])[0])\n"
        "print(sup._store is not None, ' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = python_in_home(script, tmp_path / "home")
    opened, *added = out.split()
    assert opened == "True" and {"sqlite3", "json", "kernel_sentinel.store"} <= set(added), out
    assert not set(added) & {"typing", "threading", "ctypes", "socket", "getpass", "uuid", "platform"}, sorted(added)
