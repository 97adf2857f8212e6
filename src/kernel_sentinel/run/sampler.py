"""Memory of a running kernel, sampled from outside it every ~25 ms: per-cell peak and after, and a timeline.

Sampled from the runner's side so the numbers exist even when the kernel dies or its guard is missing.
What is sampled is what counts against the budget: the usage of the kernel's own memory cgroup when it
has one (page cache and kernel memory included, as the OOM killer counts them), otherwise the RSS of the
kernel process and its children. With a cgroup v1 group the kernel's own watermark
(``memory.max_usage_in_bytes``, reset to 0 at every cell start) is folded into each cell's peak, so a spike
shorter than the sampling interval is not missed.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from ..confine import MemoryCgroup
from ..memory.linux import GroupMeter, StatmMeter



@dataclass
class CellMemory:
    """What the sampler saw during one cell."""

    peak_bytes: int | None = None  # max of samples and (v1) the cgroup watermark
    sampled_peak_bytes: int | None = None  # max of samples alone
    watermark_bytes: int | None = None  # cgroup v1 max_usage_in_bytes since the cell started
    peak_rss_bytes: int | None = None  # max sampled RSS of the kernel's processes
    after_bytes: int | None = None
    samples: int = 0


@dataclass
class Timeline:
    """All samples of the run: seconds since start, bytes, the cell index running (-1 between cells)."""

    t: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    cell: list[int] = field(default_factory=list)


class MemorySampler:
    """A daemon thread sampling the kernel's memory; ``begin_cell``/``end_cell`` bracket each cell."""

    def __init__(self, pid: int, cgroup: MemoryCgroup | None = None, interval: float = 0.025) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self.interval = interval
        self.source = (
            f"cgroup v{cgroup.version} usage of {cgroup.path}" if cgroup else f"RSS of kernel process {pid} and children"
        )
        self.timeline = Timeline()
        # The one per-tick reader the guard uses too (memory.linux): descriptors opened once, one pread each.
        self._group: GroupMeter | None = None
        if cgroup is not None:
            try:
                self._group = GroupMeter(cgroup.directory, cgroup.version)
            except OSError:
                self._group = None
        self._usage = cgroup.directory if self._group is not None else None
        self._statm: dict[int, StatmMeter] = {}
        self._watermark_path = (
            os.path.join(cgroup.directory, "memory.max_usage_in_bytes") if cgroup and cgroup.version == 1 else None
        )
        self._pids: list[int] = [pid]
        self._pids_checked = 0.0
        self._lock = threading.Lock()
        self._cell = -1
        self._current = CellMemory()
        self._stop = threading.Event()
        self._start = time.monotonic()
        self.last_bytes: int | None = None
        self._thread = threading.Thread(target=self._loop, name="kernel-sentinel-sampler", daemon=True)

    # -- reading -------------------------------------------------------------------------------------

    def _tree(self) -> list[int]:
        """Return the kernel pid and its descendants, refreshed once a second (psutil is not cheap)."""
        now = time.monotonic()
        if now - self._pids_checked > 1.0:
            self._pids_checked = now
            try:
                import psutil

                proc = psutil.Process(self.pid)
                self._pids = [self.pid] + [c.pid for c in proc.children(recursive=True)]
            except Exception:  # gone or not ours to read: keep the last list
                pass
        return self._pids

    def rss_bytes(self) -> int | None:
        """Return the summed RSS of the kernel's processes (None once they are all gone)."""
        total, seen = 0, False
        for pid in self._tree():
            meter = self._statm.get(pid)
            try:
                if meter is None:
                    meter = self._statm[pid] = StatmMeter(pid)
                total += meter.read()[0]
                seen = True
            except (OSError, ValueError, IndexError):  # a process that exited
                gone = self._statm.pop(pid, None)
                if gone is not None:
                    gone.close()
        return total if seen else None

    def usage_bytes(self) -> int | None:
        """Return the budgeted usage now: cgroup usage, else RSS of the kernel's processes."""
        if self._group is not None:
            try:
                return self._group.usage()
            except (OSError, ValueError):  # the group is being removed
                return None
        return self.rss_bytes()

    def _read_watermark(self) -> int | None:
        if self._watermark_path is None:
            return None
        try:
            with open(self._watermark_path) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def _reset_watermark(self) -> None:
        if self._watermark_path is None:
            return
        try:
            with open(self._watermark_path, "w") as f:
                f.write("0\n")
        except OSError:
            self._watermark_path = None  # not resettable here: samples alone from now on

    # -- sampling --------------------------------------------------------------------------------------

    def _sample(self) -> None:
        usage = self.usage_bytes()
        rss = self.rss_bytes() if self._usage is not None else usage
        with self._lock:
            if usage is None:
                return
            self.last_bytes = usage
            self.timeline.t.append(round(time.monotonic() - self._start, 4))
            self.timeline.bytes.append(usage)
            self.timeline.cell.append(self._cell)
            if self._cell >= 0:
                cur = self._current
                cur.samples += 1
                cur.sampled_peak_bytes = max(cur.sampled_peak_bytes or 0, usage)
                if rss is not None:
                    cur.peak_rss_bytes = max(cur.peak_rss_bytes or 0, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> MemorySampler:
        self._start = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self._group is not None:
            self._group.close()
        for meter in self._statm.values():
            meter.close()
        self._statm.clear()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def begin_cell(self, index: int) -> None:
        """Start a cell's measurement: reset the watermark, take a first sample."""
        self._reset_watermark()
        with self._lock:
            self._cell = index
            self._current = CellMemory()
        self._sample()

    def end_cell(self) -> CellMemory:
        """Finish the cell's measurement and return it (peak folds in the v1 watermark)."""
        self._sample()
        with self._lock:
            cur = self._current
            self._cell = -1
            self._current = CellMemory()
        cur.watermark_bytes = self._read_watermark()
        cur.after_bytes = self.usage_bytes()
        peaks = [b for b in (cur.sampled_peak_bytes, cur.watermark_bytes) if b is not None]
        cur.peak_bytes = max(peaks) if peaks else None
        return cur
