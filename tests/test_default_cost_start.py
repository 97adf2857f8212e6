"""A sentinel kernel starts as fast as stock and loses nothing for it (issue 11: ready and restart cost).

The guard, checkpoints and the rest load once the kernel has answered its first ``kernel_info_request``
(``kernel_sentinel.after_ready``), the supervisor does its own chores once the kernel says it is ready.
These tests show what must hold whatever the timing: no cell ever runs before the guard is on, code that
IPython runs at start-up runs guarded, a kernel shut down before it was ready records no death, the
supervisor still registers the kernel, and the "ready" pipe reaches no process the kernel starts.
No timing is asserted (the speed is in bench/bench_default_cost.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import SENTINEL_KERNELSPEC as SENTINEL
from conftest import MiB
from kernel_harness import KernelHarness, python_in_home, standin_supervisor
LOADED = (
    "[bool(getattr(get_ipython(), '_kernel_sentinel_guard', None)), "
    "bool(getattr(get_ipython(), '_kernel_sentinel_checkpointer', None)), "
    "'sentinel' in get_ipython().magics_manager.magics['line']]"
)


def _started_without_waiting(tmp_path: Path, **kwargs) -> KernelHarness:
    """A sentinel kernel whose client sends its first request at once, without waiting for kernel_info."""
    workdir = tmp_path / "k"
    workdir.mkdir()
    h = KernelHarness(workdir, limit_bytes=384 * MiB, kernelspec=SENTINEL, **kwargs)
    h.km.start_kernel(env=h._env, cwd=str(workdir))
    h.kc = h.km.client()
    h.kc.start_channels()
    return h


def _kernel_id(h: KernelHarness) -> str:
    from kernel_sentinel.identity import kernel_id_from_connection_file

    return kernel_id_from_connection_file(h.km.connection_file)


def test_a_first_cell_sent_at_once_runs_with_everything_loaded(tmp_path) -> None:
    """An execute request that comes before any kernel_info (a client that never waits) finds the guard on."""
    h = _started_without_waiting(tmp_path)
    try:
        res = h.run(f"loaded = {LOADED}\nloaded")
        assert res.ok, res.text()
        assert h.value("loaded") == [True, True, True]
        # The guard really works in that first kernel: its budget and interrupt line are set.
        assert h.value("get_ipython()._kernel_sentinel_guard.status()['budget_bytes'] > 0") is True
    finally:
        h.close()


def test_code_ipython_runs_at_start_up_runs_guarded(kernel, tmp_path) -> None:
    """A profile's startup file runs before the kernel is ready: the guard must already be on for it."""
    ipython_dir = tmp_path / "ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-check.py").write_text(f"guarded_at_startup = {LOADED}\n")
    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL, env={"IPYTHONDIR": str(ipython_dir)})
    assert k.value("guarded_at_startup") == [True, True, True]


def test_a_kernel_shut_down_before_it_was_ready_records_no_death(tmp_path) -> None:
    """A frontend that closes a kernel while it starts: the supervisor leaves cleanly, nothing is a death."""
    from kernel_sentinel.autopsy import death_report

    workdir = tmp_path / "k"
    workdir.mkdir()
    h = KernelHarness(workdir, limit_bytes=384 * MiB, kernelspec=SENTINEL)
    try:
        h.km.start_kernel(env=h._env, cwd=str(workdir))
        kernel_id = _kernel_id(h)
        time.sleep(0.3)  # the kernel is starting, not yet ready (no timing asserted: either way holds)
        h.km.shutdown_kernel(now=False)
        assert h.km.provisioner is None or not h.km.is_alive()
        assert death_report(kernel_id, wait=2) is None
    finally:
        h.close()


def test_the_supervisor_registers_the_kernel_once_it_is_ready(kernel) -> None:
    """The supervisor's chores (store, sweep) wait for the kernel's "ready" byte, and then happen."""
    from kernel_sentinel.store import Store, home_dir

    k = kernel(limit_bytes=384 * MiB, kernelspec=SENTINEL)
    assert k.run("x = 1").ok
    kernel_id = _kernel_id(k)
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline and row is None:
        try:
            with Store(home_dir() / "store.db", create=False) as store:
                rows = store.rows("SELECT * FROM kernels WHERE kernel_id = ?", (kernel_id,))
            row = rows[0] if rows else None
        except Exception:
            row = None
        if row is None:
            time.sleep(0.1)
    assert row is not None and row["status"] == "running" and row["pid"] == k.kernel_pid, row
    # The pipe's number is gone from the kernel's environment (a process it starts cannot find it), and the
    # supervisor no longer waits on it: its chores above ran.
    assert k.value("__import__('os').environ.get('KERNEL_SENTINEL_READY_FD')") is None


# Extension modules the supervisor's chores load (the store's sqlite3, the memory meters' and flight record's ctypes,
# json and zlib): mapped from a .so, so another process can see whether they are loaded.
CHORES_ONLY = ("_sqlite3", "_ctypes", "_json", "zlib")


def _mapped_extensions(pid: int) -> set[str]:
    """Return the names of the Python extension modules (``lib-dynload/*.so``) mapped in process ``pid``."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.rsplit("/", 1)[-1].split(".", 1)[0] for line in f if "lib-dynload/" in line}


def test_the_supervisor_leaves_its_chores_until_the_kernel_is_ready(tmp_path) -> None:
    """While the kernel starts, the supervisor reads the OOM-kill counter and forks its witness, and loads nothing
    its chores need (they would take CPU from the kernel's start); once the kernel says "ready", they run."""
    import importlib.util
    import os
    import signal
    import subprocess
    import sys

    import psutil
    import pytest

    seen = [m for m in CHORES_ONLY if (importlib.util.find_spec(m).origin or "").endswith(".so")]
    if "_sqlite3" not in seen:
        pytest.skip("this Python's sqlite3 is built in: its loading cannot be seen from outside")
    go = tmp_path / "go"
    kernel = (  # a stand-in for ipykernel: says "ready" through the supervisor's pipe when told to
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "os.write(int(os.environ['KERNEL_SENTINEL_READY_FD']), b'R')\n"
        "time.sleep(600)\n"
    )
    run = f"from kernel_sentinel.autopsy.supervisor import supervise; supervise([], [{sys.executable!r}, '-c', {kernel!r}])"
    env = {**os.environ, "KERNEL_SENTINEL_HOME": str(tmp_path / "home")}
    sup = subprocess.Popen([sys.executable, "-c", run], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(psutil.Process(sup.pid).children()) < 2 and time.monotonic() < deadline:  # kernel and witness
            time.sleep(0.02)
        assert len(psutil.Process(sup.pid).children()) == 2
        time.sleep(0.3)  # well past the counter's read; the supervisor now waits for "ready"
        assert not _mapped_extensions(sup.pid) & set(seen)
        go.touch()
        while "_sqlite3" not in _mapped_extensions(sup.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "_sqlite3" in _mapped_extensions(sup.pid)  # the store opened: the chores ran
    finally:
        os.killpg(sup.pid, signal.SIGKILL)  # the whole group, as jupyter_client's forced shutdown: nothing to record
        sup.wait()


def _modules_added_by(code: str, first: str = "") -> set[str]:
    """Return the modules ``code`` imports in a fresh interpreter, after ``first`` (whose imports do not count)."""
    import subprocess
    import sys

    script = f"{first}\nimport sys; before = set(sys.modules)\n{code}\nprint(' '.join(sorted(set(sys.modules) - before)))\n"
    return set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split())


def test_the_supervisor_imports_little_before_it_forks_the_kernel() -> None:
    """What the launcher imports before the fork delays every start and restart: no enum (``signal``'s), typing,
    re or dataclasses; and the signals it notes are named as ``signal`` names them."""
    import signal

    from kernel_sentinel.autopsy import supervisor

    added = _modules_added_by("import kernel_sentinel.launch, kernel_sentinel.autopsy.supervisor")
    assert "kernel_sentinel.autopsy.supervisor" in added
    assert not added & {"enum", "typing", "re", "dataclasses", "kernel_sentinel.memory"}, sorted(added)
    assert supervisor.NAMES == {int(n): signal.Signals(n).name for n in supervisor.HANDLED}


def test_what_the_supervisor_loads_while_the_kernel_starts_imports_little() -> None:
    """While the kernel starts the supervisor opens the kernel log's cursor and reads the OOM-kill counter: those
    modules must not bring re, dataclasses or typing (15-25 ms of its CPU, taken from the kernel's start); the
    parser, used only after a death, still reads real records."""
    import json

    import pytest

    added = _modules_added_by(
        "from kernel_sentinel.autopsy.kmsg import KmsgCursor, boot_usec_of\n"
        "from kernel_sentinel.memory.cgroup import oom_kill_counter, memory_group\n"
        "import os; c = KmsgCursor(); boot_usec_of(os.getpid()); oom_kill_counter(*(memory_group() or ('/', 1))[:2]); c.close()",
        first="import kernel_sentinel.launch, kernel_sentinel.autopsy.supervisor",
    )
    assert "kernel_sentinel.autopsy.kmsg" in added
    assert not added & {"enum", "typing", "re", "dataclasses", "kernel_sentinel.memory.linux"}, sorted(added)

    from kernel_sentinel.autopsy.kmsg import KmsgRecord, kernel_log_evidence, parse_kmsg

    raw = json.loads((Path(__file__).parent / "samples" / "autopsy" / "kmsg_records.json").read_text())
    records = parse_kmsg(raw)
    seg = next(r for r in records if "segfault at" in r.text)
    assert seg == KmsgRecord(seg.seq, seg.usec, seg.text) and len({seg, KmsgRecord(seg.seq, seg.usec, seg.text)}) == 1
    pid = int(seg.text.split("[", 1)[1].split("]", 1)[0])
    assert kernel_log_evidence(records, pid, None)["fault"]["kind"] == "segfault"
    with pytest.raises(AttributeError):  # frozen, as the dataclass it replaced
        seg.usec = 0  # type: ignore[misc]


def test_a_kernel_command_that_cannot_start_is_mirrored_and_recorded(tmp_path, monkeypatch) -> None:
    """The supervisor waits for its child to exec the kernel before it goes on with its own start-up: a child that
    never gets there (no such command) ends that wait too; its exit status 127 is mirrored and recorded as a death."""
    import subprocess
    import sys

    from kernel_sentinel.autopsy import death_report

    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path / "home"))
    missing = str(tmp_path / "no-such-kernel")
    run = f"from kernel_sentinel.autopsy.supervisor import supervise; supervise([], [{missing!r}])"
    sup = subprocess.Popen([sys.executable, "-c", run], stderr=subprocess.PIPE, text=True)
    _, err = sup.communicate(timeout=60)
    assert sup.returncode == 127, err
    report = death_report(f"pid-{sup.pid}", wait=5)  # the supervisor's kernel id without a connection file
    assert report is not None and report["exit"] == {"code": 127}, (report, err)


def test_the_supervisor_reads_a_shutdown_as_the_evidence_does() -> None:
    """The supervisor tells a shutdown from a death before it imports the autopsy (``shutdown_in_record``): the
    same answer as ``Evidence.shutdown_requested`` for every state and previous state the recorder writes, and the
    rule's own answers: a shutdown asked for, or an exit right after one."""
    from kernel_sentinel.autopsy.evidence import Evidence
    from kernel_sentinel.autopsy.flight import shutdown_in_record

    states = [None, "running", "shutdown_requested", "exiting", "unloaded", "stopped"]
    records = [{}, {"state": None}, *({"state": {"state": s, "previous": p}} for s in states for p in states)]
    answers = []
    for record in records:
        ev = Evidence(kernel_id="k", flight=record)
        answers.append(shutdown_in_record(record))
        assert answers[-1] == ev.shutdown_requested, record
        state = record.get("state") or {}
        expected = state.get("state") == "shutdown_requested" or (
            state.get("state") == "exiting" and state.get("previous") == "shutdown_requested"
        )
        assert answers[-1] == expected, record
    assert 0 < sum(answers) < len(answers)


def test_the_supervisor_leaves_a_shutdown_without_the_autopsy_and_records_a_death_with_it(tmp_path) -> None:
    """Until its kernel ends the supervisor holds only what leaving after a shutdown needs (the flight record, the
    store): the autopsy's modules (1.5 MiB in the kernel's group) are imported at a death. A shutdown is left
    without them and is no death; a death right after (a kernel's end with no shutdown asked) is recorded."""
    script = (
        "import sys\n"
        "from kernel_sentinel.autopsy import supervisor\n"
        "from kernel_sentinel.autopsy.flight import FlightWriter, record_paths\n"
        "supervisor._preload()\n"
        "sup = supervisor.Supervisor(['kernel'], None)\n"
        "for pid, state, code in ((4242, 'shutdown_requested', 0), (4243, 'running', 3)):\n"
        "    path = record_paths(sup.home, sup.kernel_id, pid)[0]\n"
        "    path.parent.mkdir(parents=True, exist_ok=True)\n"
        "    writer = FlightWriter(path)\n"
        "    writer.write('meta', {'kernel_id': sup.kernel_id, 'pid': pid})\n"
        "    writer.write('state', {'state': state, 't': 0.0})\n"
        "    writer.close()\n"
        "    sup.child = pid\n"
        "    sup._record(pid, code, None, 1.0, None, None)\n"
        "    print('kernel_sentinel.autopsy.evidence' in sys.modules, path.exists())\n"
        "print(sup.kernel_id)\n"
    )
    shutdown, death, kernel_id = python_in_home(script, tmp_path / "home").splitlines()
    assert shutdown == "False False"  # left without the autopsy; its flight files removed
    assert death == "True False"  # the autopsy imported for the death, its record taken into the store

    from kernel_sentinel.store import Store

    with Store(tmp_path / "home" / "store.db", create=False) as store:
        deaths = store.rows("SELECT * FROM deaths WHERE kernel_id = ?", (kernel_id,))
    assert [d["pid"] for d in deaths] == [4243], deaths


def test_the_supervisor_sweeps_earlier_kernels_apart_and_reaps_the_sweeper(tmp_path) -> None:
    """Once its kernel is ready the supervisor sweeps what earlier kernels left (here a dead kernel's flight
    record: recorded as a death), apart in a forked process it reaps: only the kernel and the witness stay its
    children, neither a zombie."""
    import os
    import signal
    import subprocess

    import psutil

    from kernel_sentinel.autopsy.flight import FlightWriter, record_paths
    from kernel_sentinel.store import Store

    home = tmp_path / "home"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid nobody runs now: an earlier kernel that died unseen
    path = record_paths(home, "earlier", gone.pid)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = FlightWriter(path)
    writer.write("meta", {"kernel_id": "earlier", "pid": gone.pid})
    writer.write("state", {"state": "running", "t": 1.0})
    writer.close()
    go = tmp_path / "go"
    sup = subprocess.Popen(standin_supervisor(go), env={**os.environ, "KERNEL_SENTINEL_HOME": str(home)},
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(psutil.Process(sup.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        go.touch()
        deaths: list = []
        while not deaths and time.monotonic() < deadline:
            time.sleep(0.1)
            if (home / "store.db").exists():
                with Store(home / "store.db", create=False) as store:
                    deaths = store.rows("SELECT * FROM deaths WHERE kernel_id = 'earlier'")
        assert [d["pid"] for d in deaths] == [gone.pid]
        children = psutil.Process(sup.pid).children()
        while len(children) != 2 and time.monotonic() < deadline:  # the sweeper leaves, and is reaped
            time.sleep(0.05)
            children = psutil.Process(sup.pid).children()
        assert len(children) == 2 and all(c.status() != psutil.STATUS_ZOMBIE for c in children), children
    finally:
        os.killpg(sup.pid, signal.SIGKILL)  # the whole group, as jupyter_client's forced shutdown
        sup.wait()


def test_the_flight_recorder_loads_no_guard_before_the_first_reply(tmp_path) -> None:
    """The recorder loads before the kernel's first reply, the guard after it: the recorder's start must not import
    the guard (its whole package: ~15-20 ms of CPU and up to 80 ms wall before the reply, for the watchdog's rides);
    once the parts have loaded, the guard's watchdog takes the recorder's samples (its rider)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "from kernel_sentinel.autopsy import recorder\n"
        "recorder.load(ip)\n"
        "print(sorted(m for m in sys.modules if m.startswith('kernel_sentinel.guard')))\n"
        "from kernel_sentinel.guard import watchdog\n"
        "rider = recorder._recorder._ride\n"
        "before = rider in watchdog._riders\n"
        "recorder.parts_loaded()\n"
        "print(before, rider in watchdog._riders)\n"
        "recorder.unload(ip)\n"
        "print(rider in watchdog._riders)\n"
    )
    env = {**os.environ, "KERNEL_SENTINEL_HOME": str(tmp_path / "home")}
    env.pop("KERNEL_SENTINEL_READY_FD", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    guard_modules, rides, after_unload = out.stdout.splitlines()
    assert guard_modules == "[]"
    assert rides == "False True"  # the rider joins the watchdog once the parts loaded, not before
    assert after_unload == "False"


def test_the_home_folder_is_jupyter_cores_data_dir_without_importing_it(tmp_path) -> None:
    """The supervisor looks its home folder up after each start: jupyter_core's import cost it ~30 ms of CPU and
    3 MiB in the kernel's group. The folder found without it is jupyter_core's own, whatever the environment."""
    import os
    import subprocess
    import sys

    real_home = tmp_path / "real-home"
    real_home.mkdir()
    (tmp_path / "linked-home").symlink_to(real_home)  # jupyter_core resolves the home folder's symlinks
    script = (
        "import sys\n"
        "from kernel_sentinel.identity import home_dir, jupyter_data_dir\n"
        "home = home_dir()\n"
        "print('jupyter_core' in sys.modules)\n"
        "from jupyter_core.paths import jupyter_data_dir as theirs\n"
        "print(jupyter_data_dir() == theirs(), home.parent == __import__('pathlib').Path(theirs()))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "XDG_", "KERNEL_SENTINEL_HOME"))}
    cases = [
        ({}, "False"),
        ({"HOME": str(tmp_path / "linked-home")}, "False"),
        ({"XDG_DATA_HOME": str(tmp_path / "xdg")}, "False"),
        ({"XDG_DATA_HOME": ""}, "False"),
        ({"JUPYTER_DATA_DIR": str(tmp_path / "data")}, "False"),
        ({"JUPYTER_PLATFORM_DIRS": "1"}, "True"),  # platformdirs' rule: jupyter_core's to say
    ]
    for extra, imported in cases:
        out = subprocess.run([sys.executable, "-c", script], env={**base, **extra}, capture_output=True, text=True)
        assert out.returncode == 0, (extra, out.stderr)
        assert out.stdout.split() == [imported, "True", "True"], (extra, out.stdout)
