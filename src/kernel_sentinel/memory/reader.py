"""How much memory may this process still use, and who says so: the Linux reader (``portable.py`` elsewhere).

Linux: cgroup v1 and v2 (the process's group and every visible ancestor that sets a limit), MemAvailable,
RLIMIT_DATA and RLIMIT_AS, PSI. Elsewhere it hands over to ``portable.portable_snapshot`` (psutil's view
of RAM). The per-tick meters the guard and the runner share are in ``linux.py``. Nothing here raises on a missing or
unreadable file: the reading gets a note instead, and the limits it could not read are simply absent.

Cheap enough for a watchdog: files are opened once and re-read with ``pread`` (procfs and cgroupfs
regenerate their text on every read from offset 0).
"""

from __future__ import annotations

import os
import resource
import sys

from . import parse
from .cgroup import find_group
from .model import CgroupMemory, Limit, MemorySnapshot, Pressure, ProcessMemory, QuickReading
from .portable import portable_snapshot

_READ_SIZE = 16384


class PreadFiles:
    """Open-once files re-read with ``pread``; reopened after a fork, since /proc/self moves with it.

    ``read(path)`` raises OSError (and forgets the descriptor) when the file cannot be read.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._owner = os.getpid()

    def read(self, path: str) -> str:
        if os.getpid() != self._owner:
            self._fds.clear()  # the inherited descriptors belong to the parent's view
            self._owner = os.getpid()
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._fds[path] = fd
        try:
            return os.pread(fd, _READ_SIZE, 0).decode("utf-8", "replace")
        except OSError:
            self._fds.pop(path, None)
            os.close(fd)
            raise

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort
        if os.getpid() == self._owner:
            self.close()


class _Group:
    """One cgroup directory on the way from the process's group up to the visible root."""

    def __init__(self, version: int, path: str, directory: str) -> None:
        self.version = version
        self.path = path
        self.directory = directory
        self._paths: dict[str, str] = {}
        # Which limit files this group has, found once: the v2 root has neither memory.max nor .high.
        names = ("memory.limit_in_bytes",) if version == 1 else ("memory.max", "memory.high")
        self.limit_files = tuple(self.file(n) for n in names if version == 1 or os.path.exists(self.file(n)))

    def file(self, name: str) -> str:
        path = self._paths.get(name)
        if path is None:
            path = self._paths[name] = os.path.join(self.directory, name)
        return path


class CgroupLocation:
    """Where the process's memory cgroup is, found once: the version and the groups up to the root."""

    def __init__(self, version: int, path: str, groups: list[_Group]) -> None:
        self.version = version
        self.path = path
        self.groups = groups  # leaf first

    @property
    def leaf(self) -> _Group:
        return self.groups[0]


def locate_cgroup(pid: int | str = "self", proc: str = "/proc") -> tuple[CgroupLocation | None, list[str]]:
    """Return the memory cgroup of ``pid`` (None when there is none to read) and notes on why not."""
    notes: list[str] = []
    try:
        entries = parse.parse_proc_cgroup(_read_text(f"{proc}/{pid}/cgroup"))
        mounts = parse.parse_mountinfo(_read_text(f"{proc}/self/mountinfo"))
    except (OSError, ValueError) as exc:
        return None, [f"cannot read the process's cgroup: {_reason(exc)}"]
    found = find_group(entries, mounts, notes)
    if found is None:
        return None, notes
    version, path, mount, parts = found
    root = mount.root.rstrip("/")
    groups: list[_Group] = []
    for depth in range(len(parts), -1, -1):
        sub = "/".join(parts[:depth])
        directory = os.path.join(mount.mountpoint, sub) if sub else mount.mountpoint
        group_path = (root + "/" + sub) if sub else (mount.root or "/")
        groups.append(_Group(version, group_path.replace("//", "/") or "/", directory))
    return CgroupLocation(version, path, groups), notes


class MemoryReader:
    """Reads the memory picture of one process, again and again, cheaply.

    ``rlimits=False`` leaves RLIMIT_DATA/RLIMIT_AS out of the budget: the guard sets RLIMIT_DATA itself
    as its fence and must not mistake its own fence for the budget.
    """

    def __init__(self, pid: int | None = None, *, proc: str = "/proc", rlimits: bool = True) -> None:
        self.pid = os.getpid() if pid is None else int(pid)
        self._own = pid is None or int(pid) == os.getpid()
        self._proc = proc
        self._key: int | str = "self" if self._own else self.pid
        self._rlimits = rlimits
        self._files = PreadFiles()
        self._linux = sys.platform.startswith("linux") and os.path.isdir(f"{proc}/{self._key}")
        self._notes: list[str] = []
        self.location: CgroupLocation | None = None
        self._last: MemorySnapshot | None = None
        self._limited_groups: dict[str, _Group] = {}
        self._has_peak = False
        self._pressure_files_found: list[str] = []
        if self._linux:
            self.location, self._notes = locate_cgroup(self._key, proc)
            self._has_peak = self.location is not None and os.path.exists(self.location.leaf.file("memory.peak"))
            self._pressure_files_found = self._pressure_files()
        elif not sys.platform.startswith("linux"):
            self._notes.append(f"{sys.platform}: no cgroups or PSI; budget from psutil's view of RAM")
        else:
            self._notes.append(f"{proc}/{self._key} is not readable; budget from psutil's view of RAM")

    def close(self) -> None:
        self._files.close()

    def quick(self) -> QuickReading:
        """Return own RSS/VmData and the headroom under the limits the last ``snapshot()`` found.

        A few reads instead of a dozen: limits themselves rarely change, so a watchdog calls this every
        tick and ``snapshot()`` now and then (the first call takes a snapshot itself).
        """
        if self._last is None:
            self.snapshot()
        assert self._last is not None
        notes: list[str] = []
        if not self._linux:
            snap = self.snapshot()
            return QuickReading(snap.process.rss_bytes, None, snap.available_bytes, snap.source, None)
        process = self._read_process(notes)
        best: tuple[int, str] | None = None
        tightest_group: tuple[int, int] | None = None  # (headroom, working set) of the tightest cgroup
        for lim in self._last.limits:
            avail, ws = self._quick_headroom(lim, process, notes)
            if avail is None:
                continue
            if ws is not None and (tightest_group is None or avail < tightest_group[0]):
                tightest_group = (avail, ws)
            if best is None or avail < best[0]:
                best = (avail, lim.source)
        return QuickReading(
            rss_bytes=process.rss_bytes,
            vm_data_bytes=process.vm_data_bytes,
            available_bytes=best[0] if best else None,
            source=best[1] if best else "unknown",
            working_set_bytes=tightest_group[1] if tightest_group else None,
        )

    def _quick_headroom(
        self, lim: Limit, process: ProcessMemory, notes: list[str]
    ) -> tuple[int | None, int | None]:
        """Return the headroom under ``lim`` now (None: unreadable) and, for a cgroup, its working set."""
        if lim.kind.startswith("cgroup"):
            group = self._limited_groups.get(lim.source)
            ws = self._group_usage(group, notes)[1] if group is not None else None
            return (None, None) if ws is None else (max(0, lim.limit_bytes - ws), ws)
        if lim.kind == "system RAM":
            text = self._read(f"{self._proc}/meminfo", notes)
            try:
                return (parse.parse_meminfo(text).get("MemAvailable") if text else None), None
            except ValueError:
                return None, None
        used = process.vm_data_bytes if lim.source == "rlimit RLIMIT_DATA" else process.vm_size_bytes
        return max(0, lim.limit_bytes - (used or 0)), None

    def snapshot(self) -> MemorySnapshot:
        """Return one consistent-enough reading of process, cgroup, system and rlimit memory."""
        notes = list(self._notes)
        if not self._linux:
            return portable_snapshot(self.pid, notes)
        process = self._read_process(notes)
        cgroup, cgroup_limits = self._read_cgroup(notes)
        limits = list(cgroup_limits)
        limits.extend(self._ram_limit(process, notes))
        if self._rlimits:
            limits.extend(self._rlimit_limits(process, notes))
        pressure = self._read_pressure(notes)
        self._last = MemorySnapshot(
            pid=self.pid,
            platform=sys.platform,
            process=process,
            cgroup=cgroup,
            limits=tuple(limits),
            pressure=pressure,
            notes=tuple(dict.fromkeys(notes)),
        )
        return self._last

    # -- readers -----------------------------------------------------------------------------------

    def _read(self, path: str, notes: list[str]) -> str | None:
        try:
            return self._files.read(path)
        except OSError as exc:
            notes.append(f"cannot read {path}: {_reason(exc)}")
            return None

    def _read_process(self, notes: list[str]) -> ProcessMemory:
        text = self._read(f"{self._proc}/{self._key}/status", notes)
        fields: dict[str, int] = {}
        if text is not None:
            try:
                fields = parse.parse_proc_status(text)
            except ValueError as exc:
                notes.append(f"cannot parse {self._proc}/{self._key}/status: {exc}")
        return ProcessMemory(
            pid=self.pid,
            rss_bytes=fields.get("VmRSS"),
            vm_data_bytes=fields.get("VmData"),
            vm_size_bytes=fields.get("VmSize"),
            peak_rss_bytes=fields.get("VmHWM"),
            stack_bytes=fields.get("VmStk"),
        )

    def _read_cgroup(self, notes: list[str]) -> tuple[CgroupMemory | None, list[Limit]]:
        loc = self.location
        if loc is None:
            return None, []
        limits: list[Limit] = []
        tightest: tuple[int, str] | None = None
        leaf_usage: tuple[int | None, int | None, int | None] = (None, None, None)
        for group in loc.groups:
            limit = self._group_limit(group, notes)
            is_leaf = group is loc.leaf
            if limit is None and not is_leaf:
                continue
            usage, working_set, in_use = self._group_figures(group, notes)
            if is_leaf:
                leaf_usage = (usage, working_set, in_use)
            if limit is None:
                continue
            if tightest is None or limit < tightest[0]:
                tightest = (limit, group.path)
            if in_use is not None:
                self._limited_groups[f"cgroup v{group.version} {group.path}"] = group
                limits.append(
                    Limit(
                        kind=f"cgroup v{group.version}",
                        source=f"cgroup v{group.version} {group.path}",
                        limit_bytes=limit,
                        available_bytes=max(0, limit - in_use),
                    )
                )
        leaf = loc.leaf
        if loc.version == 1:
            peak = self._int_file(leaf.file("memory.max_usage_in_bytes"), notes)
            oom_file = leaf.file("memory.oom_control")
        else:
            peak = self._int_file(leaf.file("memory.peak"), notes) if self._has_peak else None
            oom_file = leaf.file("memory.events")
        oom_text = self._read(oom_file, notes)
        oom_kills = None
        if oom_text is not None:
            try:
                oom_kills = parse.parse_keyed(oom_text).get("oom_kill")
            except ValueError as exc:
                notes.append(f"cannot parse {oom_file}: {exc}")
        cgroup = CgroupMemory(
            version=loc.version,
            path=leaf.path,
            directory=leaf.directory,
            limit_bytes=tightest[0] if tightest else None,
            limit_path=tightest[1] if tightest else None,
            usage_bytes=leaf_usage[0],
            working_set_bytes=leaf_usage[1],
            in_use_bytes=leaf_usage[2],
            peak_bytes=peak,
            oom_kills=oom_kills,
        )
        return cgroup, limits

    def _group_limit(self, group: _Group, notes: list[str]) -> int | None:
        values = []
        for path in group.limit_files:
            text = self._read(path, notes)
            if text is None:
                continue
            try:
                value = parse.parse_limit_value(text)
            except ValueError:
                notes.append(f"cannot parse {path}: {text.strip()[:40]!r}")
                continue
            if value is not None:
                values.append(value)
        return min(values) if values else None

    def _group_usage(self, group: _Group, notes: list[str]) -> tuple[int | None, int | None]:
        """Return (usage, in use): in use leaves out the page cache the kernel reclaims before an OOM kill."""
        return self._group_figures(group, notes)[::2]

    def _group_figures(self, group: _Group, notes: list[str]) -> tuple[int | None, int | None, int | None]:
        """Return (usage, working set = usage - inactive_file, in use = usage - reclaimable cache)."""
        usage_name = "memory.usage_in_bytes" if group.version == 1 else "memory.current"
        usage = self._int_file(group.file(usage_name), notes)
        stat_text = self._read(group.file("memory.stat"), notes)
        if usage is None or stat_text is None:
            return usage, None, None
        try:
            inactive = parse.parse_inactive_file(stat_text)
            reclaimable = parse.parse_reclaimable(stat_text)
        except ValueError as exc:
            notes.append(f"cannot parse {group.file('memory.stat')}: {exc}")
            return usage, None, None
        return usage, max(0, usage - inactive), max(0, usage - reclaimable)

    def _int_file(self, path: str, notes: list[str]) -> int | None:
        text = self._read(path, notes)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError:
            notes.append(f"cannot parse {path}: {text.strip()[:40]!r}")
            return None

    def _ram_limit(self, process: ProcessMemory, notes: list[str]) -> list[Limit]:
        text = self._read(f"{self._proc}/meminfo", notes)
        if text is None:
            return []
        try:
            info = parse.parse_meminfo(text)
        except ValueError as exc:
            notes.append(f"cannot parse {self._proc}/meminfo: {exc}")
            return []
        available = info.get("MemAvailable", info.get("MemFree", 0))
        held = process.rss_bytes or 0
        return [Limit("system RAM", "system RAM", held + available, available)]

    def _rlimit_limits(self, process: ProcessMemory, notes: list[str]) -> list[Limit]:
        soft: dict[str, int | None] = {}
        if self._own:
            for name, res in (("RLIMIT_DATA", resource.RLIMIT_DATA), ("RLIMIT_AS", resource.RLIMIT_AS)):
                cur = resource.getrlimit(res)[0]
                soft[name] = None if cur == resource.RLIM_INFINITY else cur
        else:
            text = self._read(f"{self._proc}/{self._key}/limits", notes)
            if text is None:
                return []
            table = parse.parse_proc_limits(text)
            soft = {"RLIMIT_DATA": table.get("Max data size"), "RLIMIT_AS": table.get("Max address space")}
        out = []
        for name, used in (("RLIMIT_DATA", process.vm_data_bytes), ("RLIMIT_AS", process.vm_size_bytes)):
            cur = soft.get(name)
            if cur is not None:
                out.append(Limit("rlimit", f"rlimit {name}", cur, max(0, cur - (used or 0))))
        return out

    def _pressure_files(self) -> list[str]:
        candidates = []
        if self.location is not None and self.location.version == 2:
            candidates.append(self.location.leaf.file("memory.pressure"))
        candidates.append(f"{self._proc}/pressure/memory")
        return [path for path in candidates if os.path.exists(path)]

    def _read_pressure(self, notes: list[str]) -> Pressure | None:
        for path in self._pressure_files_found:
            text = self._read(path, notes)
            if text is None:
                continue
            try:
                psi = parse.parse_psi(text)
            except (ValueError, KeyError) as exc:
                notes.append(f"cannot parse {path}: {exc}")
                continue
            full = psi.get("full")
            some = psi["some"]
            return Pressure(
                source=path,
                some_avg10=some.avg10,
                some_avg60=some.avg60,
                full_avg10=full.avg10 if full else None,
                full_avg60=full.avg60 if full else None,
                some_total_us=some.total_us,
            )
        return None


def snapshot(pid: int | None = None, *, rlimits: bool = True) -> MemorySnapshot:
    """Return the memory picture of ``pid`` (this process by default), read once."""
    reader = MemoryReader(pid, rlimits=rlimits)
    try:
        return reader.snapshot()
    finally:
        reader.close()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
