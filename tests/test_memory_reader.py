"""The budget reader on captured files of both cgroup versions, and on broken and missing ones.

v1 files were captured on this machine from a 300 MB child cgroup holding one python process; the v2
files are a Kubernetes pod in the format Linux writes (samples/memory/v2/README says why).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernel_sentinel.memory import MemoryReader, parse
from kernel_sentinel.memory import reader as reader_module

SAMPLES = Path(__file__).parent / "samples" / "memory"
PID = 4242
V1_GROUP = "/process_api/74c247f28a582877bc2440f211535d95/ks-capture"
V2_POD = "/kubepods.slice/kubepods-burstable.slice/pod-1234.slice"
V2_LEAF = V2_POD + "/cri-containerd-abcd.scope"


def _proc(root: Path, mountinfo: str, cgroup: str, status: str, limits: str | None = None) -> Path:
    proc = root / "proc"
    for key in ("self", str(PID)):
        (proc / key).mkdir(parents=True)
        (proc / key / "mountinfo").write_text(mountinfo)
        (proc / key / "cgroup").write_text(cgroup)
        (proc / key / "status").write_text(status)
        if limits is not None:
            (proc / key / "limits").write_text(limits)
    shutil.copy(SAMPLES / "v1" / "meminfo", proc / "meminfo")
    (proc / "pressure").mkdir()
    shutil.copy(SAMPLES / "v1" / "pressure_memory", proc / "pressure" / "memory")
    return proc


@pytest.fixture
def v1_tree(tmp_path: Path) -> Path:
    """A /proc and a cgroup v1 memory mount laid out as on this machine, with the captured files."""
    v1 = SAMPLES / "v1"
    mount = tmp_path / "sys" / "memory"
    group = mount / V1_GROUP.lstrip("/")
    group.mkdir(parents=True)
    for name in ("memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes",
                 "memory.max_usage_in_bytes", "memory.oom_control"):
        shutil.copy(v1 / name, group / name)
    # The ancestors exist with no limit of their own, as on the real machine.
    for parent in (group.parent, group.parent.parent, mount):
        (parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    mountinfo = "".join(
        line.replace("/sys/fs/cgroup/memory", str(mount)) + "\n"
        for line in (v1 / "mountinfo").read_text().splitlines()
    )
    return _proc(tmp_path, mountinfo, (v1 / "proc_cgroup").read_text(), (v1 / "proc_status").read_text(),
                 (v1 / "proc_limits").read_text())


@pytest.fixture
def v2_tree(tmp_path: Path) -> Path:
    v2 = SAMPLES / "v2"
    mount = tmp_path / "sys" / "cgroup"
    pod = mount / V2_POD.lstrip("/")
    leaf = mount / V2_LEAF.lstrip("/")
    leaf.mkdir(parents=True)
    for sample in v2.iterdir():
        if sample.name.startswith("leaf."):
            shutil.copy(sample, leaf / sample.name[len("leaf."):])
        elif sample.name.startswith("pod."):
            shutil.copy(sample, pod / sample.name[len("pod."):])
    # kubepods-burstable.slice and kubepods.slice: unlimited; the root has no memory.max at all.
    for parent in (pod.parent, pod.parent.parent):
        (parent / "memory.max").write_text("max\n")
        (parent / "memory.high").write_text("max\n")
    mountinfo = (v2 / "mountinfo").read_text().replace(" /sys/fs/cgroup ", f" {mount} ")
    status = (SAMPLES / "v1" / "proc_status").read_text()
    return _proc(tmp_path, mountinfo, (v2 / "proc_cgroup").read_text(), status,
                 (SAMPLES / "v1" / "proc_limits").read_text())


def test_v1_captured_group_is_the_budget(v1_tree: Path):
    snap = MemoryReader(PID, proc=str(v1_tree)).snapshot()
    assert snap.notes == ()
    assert snap.budget_bytes == 314572800
    assert snap.source == f"cgroup v1 {V1_GROUP}"
    stat = parse.parse_keyed((SAMPLES / "v1" / "memory.stat").read_text())
    usage = int((SAMPLES / "v1" / "memory.usage_in_bytes").read_text())
    assert snap.cgroup.usage_bytes == usage
    assert snap.cgroup.working_set_bytes == usage - stat["total_inactive_file"]
    # Headroom counts the page cache the kernel drops before an OOM kill (both file lists) as free: in
    # use is below kubelet's working set.
    reclaimable = stat["total_active_file"] + stat["total_inactive_file"]
    assert snap.cgroup.in_use_bytes == usage - reclaimable < snap.cgroup.working_set_bytes
    assert snap.available_bytes == 314572800 - snap.cgroup.in_use_bytes
    assert snap.cgroup.oom_kills == 0
    assert snap.cgroup.peak_bytes == int((SAMPLES / "v1" / "memory.max_usage_in_bytes").read_text())
    status = parse.parse_proc_status((SAMPLES / "v1" / "proc_status").read_text())
    assert snap.process.rss_bytes == status["VmRSS"] and snap.process.vm_data_bytes == status["VmData"]
    assert snap.pressure is not None and snap.pressure.source.endswith("pressure/memory")
    # System RAM is listed too, but with far more headroom than the group.
    ram = next(lim for lim in snap.limits if lim.kind == "system RAM")
    assert ram.available_bytes > snap.available_bytes


def test_v2_tightest_ancestor_wins_and_high_counts(v2_tree: Path):
    snap = MemoryReader(PID, proc=str(v2_tree)).snapshot()
    assert snap.notes == ()
    # The pod's 2 GiB memory.max is tighter than the container's 3 GiB memory.high (and 4 GiB max).
    assert snap.budget_bytes == 2 * 1024**3
    assert snap.source == f"cgroup v2 {V2_POD}"
    # pod: usage minus (active_file 64 MiB + inactive_file 200 MiB)
    assert snap.available_bytes == 2 * 1024**3 - (1484783616 - (67108864 + 209715200))
    leaf = snap.cgroup
    assert leaf.version == 2 and leaf.path == V2_LEAF
    assert leaf.limit_bytes == 2 * 1024**3 and leaf.limit_path == V2_POD
    assert leaf.working_set_bytes == 1350565888 - 201326592
    assert leaf.in_use_bytes == 1350565888 - (67108864 + 201326592)
    assert leaf.peak_bytes == 1610612736
    assert leaf.oom_kills == 2
    container = next(lim for lim in snap.limits if lim.source == f"cgroup v2 {V2_LEAF}")
    assert container.limit_bytes == 3 * 1024**3  # min(memory.max, memory.high)
    # cgroup v2 has per-group pressure; it is preferred over the system-wide file.
    assert snap.pressure.source.endswith("cri-containerd-abcd.scope/memory.pressure")
    assert snap.pressure.some_avg10 == 1.25 and snap.pressure.full_avg10 == 0.5


def test_rlimit_from_proc_limits_of_another_process(v1_tree: Path):
    limits = (v1_tree / str(PID) / "limits").read_text()
    (v1_tree / str(PID) / "limits").write_text(
        limits.replace("Max data size             unlimited            unlimited",
                       "Max data size             335544320            unlimited")
    )
    snap = MemoryReader(PID, proc=str(v1_tree)).snapshot()
    assert snap.source == "rlimit RLIMIT_DATA"
    assert snap.budget_bytes == 335544320
    status = parse.parse_proc_status((SAMPLES / "v1" / "proc_status").read_text())
    assert snap.available_bytes == 335544320 - status["VmData"]


def test_unreadable_cgroup_file_degrades_to_a_note(v1_tree: Path, tmp_path: Path):
    group = tmp_path / "sys" / "memory" / V1_GROUP.lstrip("/")
    (group / "memory.stat").unlink()
    (group / "memory.stat").mkdir()  # reading a directory fails even for root
    (group / "memory.oom_control").write_text("garbage without numbers\n")
    snap = MemoryReader(PID, proc=str(v1_tree)).snapshot()
    assert any("memory.stat" in note for note in snap.notes)
    assert any("memory.oom_control" in note for note in snap.notes)
    assert snap.cgroup.working_set_bytes is None and snap.cgroup.oom_kills is None
    # Without a working set the group's headroom is unknown, so the budget falls back to system RAM.
    assert snap.source == "system RAM"
    assert snap.to_dict()["notes"]


def test_missing_cgroup_mount_and_v2_without_memory_controller(v2_tree: Path, tmp_path: Path):
    leaf = tmp_path / "sys" / "cgroup" / V2_LEAF.lstrip("/")
    shutil.rmtree(leaf)
    leaf.mkdir()  # the group exists but the memory controller is not enabled for it
    snap = MemoryReader(PID, proc=str(v2_tree)).snapshot()
    assert snap.cgroup is None
    assert snap.source == "system RAM"
    assert any("no memory controller" in note for note in snap.notes)


def test_garbage_proc_files_never_raise(v1_tree: Path):
    (v1_tree / str(PID) / "status").write_text("Name:\tpython\n")
    (v1_tree / "meminfo").write_text("nonsense\n")
    (v1_tree / "pressure" / "memory").write_text("some avg10=x\n")
    (v1_tree / "self" / "cgroup").write_text("not a cgroup file")
    (v1_tree / str(PID) / "cgroup").write_text("not a cgroup file")
    snap = MemoryReader(PID, proc=str(v1_tree)).snapshot()
    assert snap.budget is None and snap.source == "unknown"
    assert len(snap.notes) >= 3
    assert snap.to_dict()["budget_bytes"] is None


def test_a_process_that_vanished(tmp_path: Path):
    snap = MemoryReader(99999999, proc=str(tmp_path)).snapshot()
    assert snap.notes  # says why it fell back
    assert snap.source == "system RAM"


def test_non_linux_platform_uses_psutil(monkeypatch: pytest.MonkeyPatch):
    import psutil

    monkeypatch.setattr(reader_module.sys, "platform", "darwin")
    snap = MemoryReader().snapshot()
    assert snap.cgroup is None and snap.pressure is None
    assert snap.source == "system RAM"
    assert snap.notes and "darwin" in snap.notes[0]
    assert abs(snap.available_bytes - psutil.virtual_memory().available) < 512 * 1024**2


def test_this_process_live():
    import psutil

    reader = MemoryReader()
    first = reader.snapshot()
    second = reader.snapshot()  # the re-read path (pread on open files)
    reader.close()
    assert first.process.rss_bytes > 0 and second.process.rss_bytes > 0
    assert abs(second.process.rss_bytes - psutil.Process().memory_info().rss) < 64 * 1024**2
    assert second.budget_bytes is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max\n", None), ("9223372036854771712\n", None), ("314572800\n", 314572800)],
)
def test_limit_values(text: str, expected: int | None):
    assert parse.parse_limit_value(text) == expected


def test_mountinfo_escapes_and_foreign_root():
    text = "40 31 0:33 /docker/abc /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n"
    (mount,) = parse.parse_mountinfo(text)
    assert mount.mountpoint == "/sys/fs/cgroup/mem ory" and mount.root == "/docker/abc"
    assert mount.version == 1 and "memory" in mount.options


def test_quick_reading_follows_the_snapshot(v1_tree: Path, tmp_path: Path):
    reader = MemoryReader(PID, proc=str(v1_tree))
    snap = reader.snapshot()
    quick = reader.quick()
    assert quick.source == snap.source and quick.available_bytes == snap.available_bytes
    assert quick.rss_bytes == snap.process.rss_bytes and quick.working_set_bytes == snap.cgroup.in_use_bytes
    # Usage grows by 100 MiB: the quick reading sees it without a new snapshot.
    group = tmp_path / "sys" / "memory" / V1_GROUP.lstrip("/")
    usage = int((group / "memory.usage_in_bytes").read_text())
    (group / "memory.usage_in_bytes").write_text(f"{usage + (100 << 20)}\n")
    assert reader.quick().available_bytes == snap.available_bytes - (100 << 20)


def test_quick_on_this_process():
    reader = MemoryReader()
    quick = reader.quick()
    assert quick.rss_bytes > 0 and quick.available_bytes > 0 and quick.source != "unknown"


def test_reclaimable_cache_is_both_file_lists():
    v1 = "total_active_file 400\ntotal_inactive_file 100\ntotal_mapped_file 50\ntotal_dirty 20\ntotal_writeback 5\n"
    # v1's own counters (no total_ prefix) are ignored when the hierarchical ones exist; dirty pages are
    # reclaimed once written back (a writer is throttled, not killed), mapped ones at a refault cost
    assert parse.parse_reclaimable("active_file 7\ninactive_file 7\n" + v1) == 500
    v2 = b"anon 9\nfile 600\nshmem 100\nfile_mapped 50\nfile_dirty 0\nfile_writeback 0\ninactive_file 100\nactive_file 400\n"
    assert parse.parse_reclaimable(v2) == 500  # shmem is on the anon lists, not in active/inactive_file
    with pytest.raises(ValueError):
        parse.parse_reclaimable("anon 5\n")


def test_portable_reader_is_psutils_view_of_ram_and_never_raises() -> None:
    """Off Linux the reading is psutil's RAM; a process that cannot be read is a note, not an exception."""
    import os as _os

    from kernel_sentinel.memory.portable import portable_snapshot

    own = portable_snapshot(_os.getpid(), [])
    assert own.source == "system RAM" and own.cgroup is None and own.process.rss_bytes > 0
    assert own.budget_bytes >= own.process.rss_bytes
    gone = portable_snapshot(2**22 + 12345, [])  # above the default pid_max: no such process
    assert gone.process.rss_bytes is None and any("cannot read process" in n for n in gone.notes)


@pytest.mark.parametrize(("tree", "group", "kills"), [("v1_tree", V1_GROUP, 0), ("v2_tree", V2_LEAF, 2)])
def test_the_light_cgroup_read_finds_the_group_the_reader_finds(tree: str, group: str, kills: int, request):
    """``memory.cgroup`` (what the supervisor reads while the kernel starts) agrees with ``locate_cgroup``."""
    from kernel_sentinel.memory import cgroup, locate_cgroup

    proc = str(request.getfixturevalue(tree))
    location, _ = locate_cgroup(PID, proc)
    directory, version, path = cgroup.memory_group(PID, proc)
    assert (directory, version, path) == (location.leaf.directory, location.version, location.path)
    assert path == group and directory.endswith(group)
    assert cgroup.oom_kill_counter(directory, version) == kills  # the captured memory.oom_control / memory.events


def test_the_light_cgroup_read_without_a_memory_controller_or_outside_the_mount(v2_tree: Path, tmp_path: Path):
    from kernel_sentinel.memory import cgroup, locate_cgroup

    mount = tmp_path / "sys" / "cgroup"
    leaf = mount / V2_LEAF.lstrip("/")
    shutil.rmtree(leaf)
    leaf.mkdir()  # the group exists but the memory controller is not enabled for it
    assert cgroup.memory_group(PID, str(v2_tree)) is None and locate_cgroup(PID, str(v2_tree))[0] is None
    # A mount of a subtree (a container's view) and a path outside it: the mount's root is read.
    mountinfo = v2_tree / "self" / "mountinfo"
    mountinfo.write_text(mountinfo.read_text().replace(" 0:22 / ", " 0:22 /kubepods.slice "))
    (v2_tree / str(PID) / "cgroup").write_text("0::/elsewhere/leaf\n")
    location, notes = locate_cgroup(PID, str(v2_tree))
    assert cgroup.memory_group(PID, str(v2_tree)) is None and location is None  # that root has no memory.current
    assert any("outside the mount" in note for note in notes)
    (mount / "memory.current").write_text("0\n")
    location, _ = locate_cgroup(PID, str(v2_tree))
    assert cgroup.memory_group(PID, str(v2_tree)) == (str(mount), 2, "/elsewhere/leaf")
    assert (location.leaf.directory, location.version, location.path) == (str(mount), 2, "/elsewhere/leaf")
    assert cgroup.oom_kill_counter(str(mount), 2) is None  # no memory.events there: unknown, not 0


def test_the_package_imports_its_heavy_parts_only_when_asked(tmp_path: Path):
    """The supervisor reads ``memory.cgroup`` while the kernel starts, the recorder ``memory.linux``: importing a
    submodule imports the package first, and that must not pull in the reader, its dataclasses or typing."""
    import subprocess
    import sys

    script = """
import json, sys
import kernel_sentinel.launch, kernel_sentinel.autopsy.supervisor  # what the supervisor has before the fork
before = set(sys.modules)
from kernel_sentinel.memory.cgroup import memory_group, oom_kill_counter
light = sorted(set(sys.modules) - before)
import kernel_sentinel.memory as memory
names = {name: getattr(memory, name).__module__ for name in memory.__all__}
print(json.dumps({"light": light, "names": names}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    import json

    seen = json.loads(out)
    assert set(seen["light"]) <= {"kernel_sentinel.memory", "kernel_sentinel.memory.cgroup", "kernel_sentinel.memory.parse"}
    assert seen["names"]["snapshot"] == "kernel_sentinel.memory.reader"
    assert seen["names"]["MemorySnapshot"] == "kernel_sentinel.memory.model"
    assert seen["names"]["oom_kill_counter"] == "kernel_sentinel.memory.cgroup"
    assert len(seen["names"]) == 10


def test_the_status_parse_reads_the_main_stack_and_a_snapshot_carries_it(v1_tree: Path):
    # The guard's 2 s refresh takes the main stack (VmStk) from the snapshot's own read of the status file,
    # not from a second read of it (Meters.main_stack_bytes).
    captured = (SAMPLES / "v1" / "proc_status").read_text()
    assert "VmStk:\t     132 kB" in captured
    assert parse.parse_proc_status(captured)["VmStk"] == 132 * 1024
    snap = MemoryReader(PID, proc=str(v1_tree)).snapshot()
    assert snap.process.stack_bytes == 132 * 1024
    reader = MemoryReader()
    live = reader.snapshot().process
    reader.close()
    status = Path("/proc/self/status").read_text()
    assert live.stack_bytes == int(status.split("VmStk:")[1].split("kB")[0]) * 1024  # the main stack stays put
