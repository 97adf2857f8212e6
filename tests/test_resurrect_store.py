"""Checkpoints and restore on small namespaces, in this process (tiny data: nothing here can exhaust memory).

Real files, real pickling, real fork and thread writers; the faults (a truncated blob, a missing or
corrupt manifest) are made by damaging the real files on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernel_sentinel.resurrect.blobs import BlobStore, checkpoints_root
from kernel_sentinel.resurrect.checkpoint import CellTracker, Checkpointer, parse_switch, scan_namespace, write_checkpoint
from kernel_sentinel.resurrect.restore import list_checkpoints, load_checkpoint


class _Result:
    """What IPython passes to post_run_cell: the cell's source and number."""

    def __init__(self, code: str, count: int) -> None:
        self.info = type("Info", (), {"raw_cell": code})()
        self.execution_count = count


def _run(cp: Checkpointer, ns: dict, code: str, count: int) -> None:
    cp.pre_run_cell(None)
    exec(code, ns)
    cp.post_run_cell(_Result(code, count))
    cp.wait()


def _checkpointer(ns: dict, kernel_id: str = "k-old", writer: str = "thread", **kw) -> Checkpointer:
    return Checkpointer(ns, enabled=True, kernel_id=kernel_id, session_key=None, writer=writer, **kw)


@pytest.mark.parametrize("writer", ["thread", "fork"])
def test_round_trip_keeps_values_aliases_and_names_unpicklable_cell(writer: str, tmp_path: Path) -> None:
    ns: dict = {}
    cp = _checkpointer(ns, writer=writer)
    _run(cp, ns, "import numpy as np\na = np.arange(200_000, dtype='f8'); b = a", 1)
    _run(cp, ns, "import pandas as pd\ndf = pd.DataFrame({'x': np.arange(50_000), 's': ['q'] * 50_000})", 2)
    _run(cp, ns, "d = {'k': [1, 2]}\nalias = d\ng = lambda x: x * 3 + 1", 3)
    _run(cp, ns, f"fh = open({str(tmp_path / 'f.txt')!r}, 'w')", 4)
    assert cp.last_result["status"] == "written" and cp.last_result["writer"] == writer

    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert fresh["b"] is fresh["a"] and fresh["alias"] is fresh["d"]
    assert np.array_equal(fresh["a"], ns["a"]) and fresh["a"].flags.writeable
    assert fresh["df"].equals(ns["df"])
    assert fresh["d"] == {"k": [1, 2]} and fresh["g"](2) == 7
    assert fresh["np"] is np and "fh" not in fresh
    [missing] = report.not_saved
    assert missing["names"] == ["fh"] and missing["cells"][0]["execution_count"] == 4
    text = report.text()
    assert "not restored: fh" in text and "cell [4]" in text and "open(" in text
    ns["fh"].close()


def test_only_changed_objects_are_written_and_unchanged_cells_write_nothing() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import numpy as np\nbig = np.ones(500_000)\nsmall = [1, 2, 3]", 1)
    first = cp.last_result
    assert first["bytes_written"] >= big_bytes(ns)
    _run(cp, ns, "small.append(4)", 2)
    assert cp.last_result["status"] == "written" and cp.last_result["bytes_written"] < 1000
    _run(cp, ns, "print('hello')", 3)
    assert cp.last_result["status"] == "unchanged"
    _run(cp, ns, "big[7] = 2.0", 4)
    assert cp.last_result["bytes_written"] >= big_bytes(ns)


def big_bytes(ns: dict) -> int:
    return ns["big"].nbytes


def test_truncated_blob_loses_only_its_variable(tmp_path: Path) -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import numpy as np\nx = np.arange(100_000.0)\ny = np.ones(100_000)\nz = {'keep': 1}", 1)
    manifest = json.loads(Path(cp.last_result["manifest"]).read_text())
    [x_entry] = [o for o in manifest["objects"] if o["names"] == ["x"]]
    blob = BlobStore(cp.store.dir).blob_path(x_entry["buffers"][0])
    with open(blob, "r+b") as f:
        f.truncate(blob.stat().st_size // 2)

    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert "x" not in fresh and np.array_equal(fresh["y"], ns["y"]) and fresh["z"] == {"keep": 1}
    [failed] = report.failed
    assert failed["names"] == ["x"] and "truncated" in failed["reason"]
    assert "could not load x" in report.text()


def test_damaged_blob_is_caught_by_its_hash() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import numpy as np\nx = np.arange(100_000.0)\nw = 5", 1)
    manifest = json.loads(Path(cp.last_result["manifest"]).read_text())
    [x_entry] = [o for o in manifest["objects"] if o["names"] == ["x"]]
    blob = BlobStore(cp.store.dir).blob_path(x_entry["buffers"][0])
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 8)
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert "x" not in fresh and fresh["w"] == 5
    assert "damaged" in report.failed[0]["reason"]


def test_missing_newest_manifest_falls_back_and_says_so() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "v = 1", 1)
    _run(cp, ns, "v = 2", 2)
    Path(cp.last_result["manifest"]).unlink()
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert fresh["v"] == 1
    assert any("checkpoint 2" in n and "missing" in n for n in report.notes)
    assert "missing" in report.text()


def test_corrupt_newest_manifest_falls_back_and_says_so() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "v = 1", 1)
    _run(cp, ns, "v = 2", 2)
    Path(cp.last_result["manifest"]).write_text('{"objects": [')
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert fresh["v"] == 1
    assert any("could not read manifest-00000002.json" in n for n in report.notes)


def test_no_checkpoint_says_so() -> None:
    report = load_checkpoint({}, exclude="nobody")
    assert not report.found and "No checkpoint" in report.text()


def test_restore_prefers_the_same_notebook_and_skips_own_kernel() -> None:
    a: dict = {}
    cp_a = Checkpointer(a, enabled=True, kernel_id="ka", session_key="/nb/one.ipynb", writer="thread")
    _run(cp_a, a, "who = 'one'", 1)
    b: dict = {}
    cp_b = Checkpointer(b, enabled=True, kernel_id="kb", session_key="/nb/two.ipynb", writer="thread")
    _run(cp_b, b, "who = 'two'", 1)
    fresh: dict = {}
    load_checkpoint(fresh, session_key="/nb/one.ipynb", exclude="kc")
    assert fresh["who"] == "one"
    fresh = {}
    load_checkpoint(fresh, exclude="kb")  # no session: newest of any other kernel
    assert fresh["who"] == "one"
    fresh = {}
    load_checkpoint(fresh, kernel_id="kb")
    assert fresh["who"] == "two"
    assert {r["kernel_id"] for r in list_checkpoints()} == {"ka", "kb"}


def test_old_checkpoints_and_unreferenced_blobs_are_pruned() -> None:
    ns: dict = {}
    cp = _checkpointer(ns, keep=2)
    for i in range(4):
        _run(cp, ns, f"import numpy as np\nv = np.full(100_000, {i}.0)", i + 1)
    store = BlobStore(cp.store.dir)
    assert [r.seq for r in store.manifests(cp.incarnation)] == [3, 4]
    store.sweep_blobs(grace_seconds=0)
    big_blobs = [p for p in store.blobs.rglob("*") if p.is_file() and p.stat().st_size >= 800_000]
    assert len(big_blobs) == 2  # the arrays of checkpoints 3 and 4 only


def test_tight_memory_skips_with_a_note_in_status_not_in_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    ns: dict = {}
    cp = _checkpointer(ns, memory_available=lambda: 1 << 20)
    _run(cp, ns, "v = 1", 1)
    assert cp.last_result is None and cp.skipped == 1
    assert capsys.readouterr().out == ""
    assert "memory is tight" in cp.status()
    assert not checkpoints_root().joinpath("kernel-k-old", "kernels").exists()


def test_fork_only_with_headroom_for_copy_on_write() -> None:
    ns: dict = {}
    rss = lambda: 100 << 20  # noqa: E731 - a kernel holding the 64 MB array and 36 MB of objects
    cp = _checkpointer(ns, writer="auto", memory_available=lambda: 100 << 20, process_rss=rss)
    _run(cp, ns, "import numpy as np\nbig = np.ones(8_000_000)", 1)  # 100 MB + 64 MiB reserve > 100 MiB
    assert cp.last_result["writer"] == "thread"
    cp2 = _checkpointer({}, kernel_id="k2", writer="auto", memory_available=lambda: 1 << 30, process_rss=rss)
    ns2 = cp2.ns
    _run(cp2, ns2, "import numpy as np\nbig = np.ones(8_000_000)", 1)
    assert cp2.last_result["writer"] == "fork"


def test_scan_groups_aliases_and_leaves_out_ipython_names() -> None:
    arr = np.zeros(3)
    ns = {"a": arr, "b": arr, "_": arr, "_i1": "x", "In": [], "Out": {}, "os": os, "n": 1, "hidden": 2}
    groups, modules = scan_namespace(ns, hidden={"hidden"})
    assert sorted(g.names for g in groups) == [["a", "b"], ["n"]]
    assert modules == [{"names": ["os"], "module": "os"}]


def test_cell_tracker_finds_the_binding_cell_in_history() -> None:
    tracker = CellTracker()
    history = ["", "import os", "fh = open('x')", "print(fh)"]
    assert tracker.cells_for("fh", history)[0]["execution_count"] == 2
    ns = {"fh": 1}
    tracker.before({})
    tracker.after(ns, 7, "fh = 1")
    assert tracker.cells_for("fh", history) == [{"execution_count": 7, "code": "fh = 1"}]


def test_switch_parsing() -> None:
    assert parse_switch("on", False) and not parse_switch("OFF", True) and parse_switch(None, True)
    with pytest.raises(ValueError, match="use on or off"):
        parse_switch("maybe", True)


def test_dataframe_buffers_go_out_of_band() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import pandas as pd, numpy as np\ndf = pd.DataFrame({'a': np.arange(200_000.0), 'b': np.arange(200_000)})", 1)
    manifest = json.loads(Path(cp.last_result["manifest"]).read_text())
    [entry] = manifest["objects"]
    assert entry["buffers"] and entry["nbytes"] >= 3_200_000
    assert isinstance(ns["df"], pd.DataFrame)


def test_a_restarted_kernel_with_the_same_id_restores_its_dead_predecessor() -> None:
    old: dict = {}
    cp_old = _checkpointer(old, kernel_id="same")
    cp_old.incarnation = "same@1"  # the process that died (Jupyter restarts it under the same kernel id)
    _run(cp_old, old, "v = 'before the death'", 1)
    new: dict = {}
    cp_new = _checkpointer(new, kernel_id="same")
    _run(cp_new, new, "w = 'new kernel, first cell'", 1)
    for _ in range(4):  # more checkpoints than `keep` in the new process: the dead one's are not pruned
        _run(cp_new, new, "w = w + '!'", 2)
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude=cp_new.incarnation)
    assert fresh == {"v": "before the death"} and report.kernel_id == "same"


def test_restore_offer_only_after_a_recorded_death_of_that_process() -> None:
    from kernel_sentinel.resurrect.restore import restore_offer

    old: dict = {}
    cp_old = _checkpointer(old, kernel_id="kx")
    cp_old.incarnation = "kx@4242"
    _run(cp_old, old, f"v = 1\nfh = open({os.devnull!r})", 1)
    deaths = {"kx": {"pid": 4242, "cause": "external_kill"}}
    text = restore_offer(own="kx@99", kernel_id="kx", session_key=None, death_report=deaths.get)
    assert text and "%sentinel restore" in text and "cell [1]" in text and "not saved: fh" in text
    assert restore_offer(own="kx@99", kernel_id="kx", session_key=None, death_report={"kx": {"pid": 1}}.get) is None
    assert restore_offer(own="kx@99", kernel_id="kx", session_key=None, death_report={}.get) is None
    old["fh"].close()


def test_nearly_full_disk_stops_checkpoints_and_says_so_in_status(capsys: pytest.CaptureFixture[str]) -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    cp.disk_reserve = 1 << 60  # as if the filesystem had less free space than must stay free
    _run(cp, ns, "v = 1", 1)
    assert capsys.readouterr().out == ""  # said in status, never in a cell's output
    assert "checkpoints stopped" in cp.status() and "must stay free" in cp.status()
    _run(cp, ns, "v = 2", 2)
    assert capsys.readouterr().out == ""
    assert "stopped" in cp.status()


def test_disk_budget_deletes_other_kernels_checkpoints_first() -> None:
    other: dict = {}
    cp_other = _checkpointer(other, kernel_id="other")
    _run(cp_other, other, "import numpy as np\nold = np.ones(200_000)", 1)
    ns: dict = {}
    cp = _checkpointer(ns, kernel_id="me", disk_budget=1)
    _run(cp, ns, "import numpy as np\nmine = np.zeros(200_000)", 1)
    assert BlobStore(cp_other.store.dir).manifests() == []
    assert len(BlobStore(cp.store.dir).manifests()) == 1  # the newest of the running kernel stays
    assert any("disk budget" in n for n in cp.last_result["notes"])


def test_big_python_objects_stream_to_disk_and_come_back() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    # a tuple (a list or dict this big is saved in chunks instead): its in-band pickle > 8 MiB is spilled
    _run(cp, ns, "rows = tuple((i, str(i)) for i in range(600_000))", 1)
    manifest = json.loads(Path(cp.last_result["manifest"]).read_text())
    assert manifest["objects"][0]["nbytes"] > 8 << 20 and "chunks" not in manifest["objects"][0]
    assert not any((cp.store.dir / "tmp").iterdir())  # the spilled pickle became the blob
    fresh: dict = {}
    load_checkpoint(fresh, exclude="k-new")
    assert fresh["rows"] == ns["rows"]


def test_restore_leaves_out_what_does_not_fit_in_memory() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import numpy as np\nhuge = np.ones(1_000_000)\nsmall = {'a': 1}", 1)
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new", available=(64 << 20) + 4096)
    assert fresh["small"] == {"a": 1} and "huge" not in fresh
    assert "memory budget" in report.failed[0]["reason"] and report.failed[0]["names"] == ["huge"]


def test_cli_lists_checkpoints(capsys: pytest.CaptureFixture[str]) -> None:
    from kernel_sentinel.cli import main

    assert main(["checkpoints"]) == 0 and "No checkpoints." in capsys.readouterr().out
    ns: dict = {}
    cp = _checkpointer(ns, kernel_id="listed")
    _run(cp, ns, "v = [1, 2]\nw = v", 3)
    assert main(["checkpoints", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["kernel_id"] == "listed" and row["execution_count"] == 3 and row["variables"] == 2


def test_session_key_from_server_env_or_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernel_sentinel.resurrect.checkpoint import session_key_of

    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert session_key_of({}) is None
    assert session_key_of({"__vsc_ipynb_file__": "/w/a.ipynb"}) == "/w/a.ipynb"
    assert session_key_of({"__session__": "/w/b.ipynb", "__vsc_ipynb_file__": "/w/a.ipynb"}) == "/w/b.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "/w/c.ipynb")
    assert session_key_of({"__session__": "/w/b.ipynb"}) == "/w/c.ipynb"


def test_big_variables_inside_other_variables_are_stored_once_and_stay_shared() -> None:
    ns: dict = {}
    cp = _checkpointer(ns)
    _run(cp, ns, "import numpy as np\nweights = np.ones(300_000)\nmodel = {'w': weights, 'name': 'm'}\nruns = [weights, weights]", 1)
    manifest = json.loads(Path(cp.last_result["manifest"]).read_text())
    by_name = {o["names"][0]: o for o in manifest["objects"]}
    assert by_name["model"]["refs"] == ["weights"] and not by_name["model"]["buffers"]
    fresh: dict = {}
    report = load_checkpoint(fresh, exclude="k-new")
    assert fresh["model"]["w"] is fresh["weights"] and fresh["runs"][1] is fresh["weights"]
    assert not report.failed
    # the held variable lost: the holder says why instead of coming back without it
    blob = BlobStore(cp.store.dir).blob_path(by_name["weights"]["buffers"][0])
    blob.unlink()
    fresh = {}
    report = load_checkpoint(fresh, exclude="k-new")
    reasons = {f["names"][0]: f["reason"] for f in report.failed}
    assert "missing" in reasons["weights"] and "holds weights" in reasons["model"] and "runs" in reasons


def test_over_the_cpu_budget_checkpoints_wait_and_status_says_why() -> None:
    ns: dict = {"v": 1}
    cp = _checkpointer(ns)
    assert cp._within_budget()
    cp.writer_cpu = cp.cpu_budget() + 1.0  # as if the writers had used more than half the kernel's CPU
    assert not cp._within_budget()
    assert "checkpoint deferred: the writers' CPU" in cp.status()
    cp.writer_cpu = 0.0
    cp._budget_retry_at = 0.0  # a "no" holds for a second: ask again now
    cp.kernel_cost = cp.kernel_budget() + 1.0  # as if forks had cost the kernel more than their share of its CPU
    assert not cp._within_budget()
    assert "what forks cost the kernel" in cp.status()


def test_a_thread_writer_gives_up_when_a_cell_starts(tmp_path: Path) -> None:
    ns: dict = {"rows": [[i, str(i)] for i in range(300_000)]}
    cp = _checkpointer(ns, writer="thread")
    asked = []

    def cancelled() -> bool:  # the cell starts after the writer has pickled a few frames of `rows`
        asked.append(1)
        if len(asked) == 5:
            cp.pre_run_cell(None)  # the user's next cell: the writer must not read objects that cell may change
        return cp._thread.cancelled()

    cp._thread.start(lambda: write_checkpoint(_capture(cp), None, cancelled=cancelled))
    result = cp._thread.wait()
    assert result["status"] == "cancelled" and len(asked) == 5  # gave up at the next frame, mid-object
    assert not list(BlobStore(cp.store.dir).manifests())


def test_a_thread_writer_lets_go_of_a_big_array_within_a_chunk_when_a_cell_starts() -> None:
    # The thread writer holds what it writes: a cell's `del` of a 560 MiB array freed nothing until the whole
    # blob was on disk, and the next cell was refused memory a stock kernel had (the guard's soak). It gave up
    # only between objects; now between 32 MiB chunks of a buffer too, leaving no blob and no temp file.
    size = 160 << 20
    ns: dict = {"big": np.ones(size // 8)}
    cp = _checkpointer(ns, writer="thread")
    store = BlobStore(cp.store.dir)
    started = []

    def cancelled() -> bool:  # the user's next cell starts once the blob's first chunk is being written
        if not started and list(store.dir.rglob("*.tmp")):
            started.append(1)
            cp.pre_run_cell(None)
        return cp._thread.cancelled()

    cp._thread.start(lambda: write_checkpoint(_capture(cp), None, cancelled=cancelled))
    result = cp._thread.wait()
    assert started and result["status"] == "cancelled", result
    assert result["bytes_written"] < size // 2, result  # not the whole blob first
    assert not list(store.dir.rglob("*.tmp")) and not list(store.manifests())
    assert not [p for p in store.dir.rglob("*") if p.is_file() and p.stat().st_size >= size // 2]



def test_a_starting_cell_waits_until_the_thread_writer_has_let_go_of_the_array_it_writes() -> None:
    # The writer asks cancelled() only between 32 MiB chunks, and a chunk's write and fdatasync hold the array:
    # a cell starting mid-chunk ran `del big` while the writer still held it, freed nothing, and the next
    # cell was refused 560 MiB a stock kernel had (test_guard_with_checkpoints.py, CI at f3130ba). The writer
    # runs in the checkpoint scheduler's own thread here, as in a kernel.
    import weakref

    ns: dict = {"big": np.ones((160 << 20) // 8)}
    held = weakref.ref(ns["big"])
    cp = _checkpointer(ns, writer="thread")
    cp.post_run_cell(_Result("big = np.ones(...)", 1))
    store = BlobStore(cp.store.dir)
    try:
        assert cp.checkpoint().startswith("checkpoint started (thread writer)")
        deadline = time.monotonic() + 60
        while not list(store.dir.rglob("*.tmp")):  # the blob's chunks are being written
            assert cp._thread.busy and time.monotonic() < deadline, cp.status()
            time.sleep(0.001)
        cp.pre_run_cell(None)  # the user's next cell starts
        del ns["big"]  # ... and deletes the array
        assert held() is None, "the writer still held the array after the cell started"
    finally:
        cp.close()
    assert "thread checkpoint given up: a cell started while it read the namespace" in cp.status()
    assert not list(store.dir.rglob("*.tmp")) and not list(store.manifests())


def test_a_job_no_thread_has_claimed_is_dropped_when_a_cell_starts() -> None:
    import weakref

    from kernel_sentinel.resurrect.writer import ThreadWriter

    class Held:
        pass

    obj = Held()
    held = weakref.ref(obj)
    writer = ThreadWriter()
    writer.start(lambda held_here=obj: {"status": "written", "obj": held_here})
    del obj
    assert writer.cancel(wait=1.0) is True and held() is None  # the job and what it held are gone at once
    assert writer.run_pending() is False  # nothing left to run
    assert writer.poll()["status"] == "cancelled"



def test_a_thread_job_started_while_a_cell_waited_for_the_lock_never_runs_during_that_cell() -> None:
    # A cell that does not get the scheduler's lock within PRE_RUN_LOCK_SECONDS starts all the same and asks the
    # thread writer to give up; a job the scheduler then starts under that lock cleared that request, and would
    # have read the live namespace while the cell ran (what the thread writer must never do).
    import threading

    ns: dict = {"a": list(range(100_000))}
    cp = _checkpointer(ns, writer="thread")
    cp.post_run_cell(_Result("a = list(range(100_000))", 1))
    try:
        with cp._lock:  # the scheduler holds its lock (a fork in progress, say)
            cell = threading.Thread(target=cp.pre_run_cell, args=(None,))
            cell.start()
            cell.join(30)  # the cell gave up waiting for the lock and started
            assert not cell.is_alive() and cp._in_cell
            cp._start_idle_locked()  # what the scheduler does next, still under its lock (it looked before the cell)
            assert cp.last_writer == "thread"
            assert not cp._thread.busy, "a thread job was left to run during the cell"
        cp.post_run_cell(_Result("x = 1", 2))  # the cell ends: the checkpoint is taken at the next idle moment
        cp.wait()
        assert cp.last_result["status"] == "written"
    finally:
        cp.close()
    assert "thread checkpoint given up: a cell started while it read the namespace" in cp.status()


def test_a_stopped_forked_writer_is_gone_when_stop_returns() -> None:
    # Its copied pages are charged to the kernel's group until it has exited: the guard reads the group right
    # after the checkpoints' pre-run hook, and counted a dying writer's 216 MiB against the starting cell.
    from kernel_sentinel.resurrect.writer import ForkWriter

    writer = ForkWriter()
    writer.start(lambda: (time.sleep(60), {"status": "written"})[1])
    pid = writer.pid
    assert writer.busy and pid is not None
    assert writer.stop(wait=10.0) is True
    assert writer.pid is None and not writer.busy  # exited and reaped: nothing of it is left in the group
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert writer.poll() == {"status": "given_up", "notes": []}


def _capture(cp: Checkpointer):
    from kernel_sentinel.resurrect.checkpoint import Capture

    groups, modules = scan_namespace(cp.ns)
    return Capture(cp.kernel_id, cp.incarnation, None, 1, groups, modules, str(cp.store.dir), 3, 1 << 30, 0)
