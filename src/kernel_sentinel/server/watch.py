"""The kernel watch: every kernel the server runs, followed from start to death, each death told once.

Flow: measure (a poll of each kernel's process every half second, a look at its memory and its recorded
MemoryBudgetErrors every two) -> decide
(a process that ended while nobody asked it to shut down died) -> act/record (the sentinel kernel's own
report from the store, or the server's own for a stock kernel) -> explain (``why --json``) -> emit (one
``kernel_death`` event, the metrics).

Two ways to see a death, deduplicated by the process id: the poll (fast: the restarter polls only every
3 s) and jupyter_client's restart callbacks ('restart' fires before the restart, while the provisioner still
holds the old process and its return code; 'dead' when it gives up restarting).

Threads: everything on ``KernelWatch`` and ``Watched`` is touched on the server's event loop only. Worker
threads run the blocking parts on plain data and hand plain data back: ``self._pool`` the quick looks
(``status.look``, for the gauges and ``GET kernels/ID``), ``self._deaths`` the slow part of a death (waiting
for the autopsy's record, writing the store), so a burst of deaths never delays a REST answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback

from ..memory import oom_kill_counter
from . import metrics
from .events import SCHEMA_ID, event_data
from .status import KernelLook, dying, is_sentinel, look
from .stock import DeathSeen, record_stock_death

POLL_SECONDS = 0.5
LOOK_SECONDS = 2.0
OWN_REPORT_WAIT = 10.0  # how long a sentinel kernel's own record may take to reach the store
OOM_READINGS = 2  # polls of the OOM-kill counter kept: the oldest is "before" (see Watched.oom_readings)


@dataclass
class Watched:
    """One kernel of this server, as the watch knows it. Event loop thread only."""

    kernel_id: str
    kernel_name: str | None
    sentinel: bool
    pid: int | None = None  # the process jupyter_client started (the launcher for a sentinel kernel)
    started_at: float | None = None  # when this process was first seen (a little early, never late)
    last_look: KernelLook | None = None
    cgroup: tuple[str, int] | None = None  # its memory cgroup, as last seen while it ran and was not dying
    # Its memory cgroup's OOM-kill counter, the last polls' readings while it ran and was not dying, oldest
    # first. The counter moves when the OOM killer picks the kernel, and the process takes a while longer to
    # exit (longer still under memory pressure): a reading taken in between would hide the kill.
    oom_readings: deque[int] = field(default_factory=lambda: deque(maxlen=OOM_READINGS))
    deaths: int = 0
    # Its MemoryBudgetErrors: the store's rows for this kernel (the kernel writes one per error, the fleet
    # counts the same rows), as last read; the metric has been bumped up to this count.
    memory_errors: int = 0
    handled_pids: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)  # store ids of deaths already emitted
    looking: bool = False

    def keep_oom_reading(self, count: int | None, pid: int) -> None:
        """Keep ``count``, read before this call, as a reading of a kernel that ran: not if ``pid`` is dying now."""
        if count is not None and not dying(pid):
            self.oom_readings.append(count)


class KernelWatch:
    """Follows the server's kernels and reports their deaths (see the module docstring for the threads)."""

    def __init__(self, serverapp: Any, home: Path) -> None:
        self.serverapp = serverapp
        self.km = serverapp.kernel_manager
        self.home = home
        self.log = serverapp.log
        self.kernels: dict[str, Watched] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kernel-sentinel-look")
        self._deaths = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kernel-sentinel-death")
        self._callbacks: list[PeriodicCallback] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic poll and look (on the server's event loop)."""
        for fn, seconds in ((self._poll, POLL_SECONDS), (self._look_all, LOOK_SECONDS)):
            cb = PeriodicCallback(partial(self._safely, fn), seconds * 1000)
            cb.start()
            self._callbacks.append(cb)

    def _safely(self, fn: Any, *args: Any) -> None:
        """Run ``fn``; a failure is logged once per call and never reaches the server or the kernels."""
        try:
            fn(*args)
        except Exception as exc:
            self.log.warning("kernel-sentinel: %s failed: %s", getattr(fn, "__name__", fn), exc)

    # -- measure: which kernels, which processes, alive or not ------------------------------------

    def _poll(self) -> None:
        ids = set(self.km.list_kernel_ids())
        for kernel_id in ids - self.kernels.keys():
            self._safely(self._watch, kernel_id)
        for kernel_id in list(self.kernels.keys() - ids):
            self._safely(self._unwatch, kernel_id)
        for kernel_id in ids:
            self._safely(self._check, kernel_id)  # one kernel's trouble must not blind the watch to the others

    def _watch(self, kernel_id: str) -> None:
        km = self.km.get_kernel(kernel_id)
        spec = getattr(km, "kernel_spec", None)
        w = Watched(
            kernel_id,
            getattr(km, "kernel_name", None),
            is_sentinel(list(getattr(spec, "argv", None) or []), getattr(km, "provisioner", None)),
        )
        self.kernels[kernel_id] = w
        for event in ("restart", "dead"):
            self.km.add_restart_callback(kernel_id, partial(self._safely, self._check, kernel_id), event)

    def _unwatch(self, kernel_id: str) -> None:
        self.kernels.pop(kernel_id)
        metrics.forget_kernel(kernel_id)

    def _check(self, kernel_id: str) -> None:
        """See whether the kernel's process ended; a new process (a restart) is followed from now on."""
        w = self.kernels.get(kernel_id)
        if w is None:
            return
        try:
            km = self.km.get_kernel(kernel_id)
        except KeyError:
            return
        if getattr(km, "shutting_down", False):
            return  # asked for (shutdown, restart, culling): not a death
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        if proc is None:
            return
        if proc.pid != w.pid:
            self._new_process(w, km, proc.pid)
        cgroup = w.cgroup
        # The counter first, the liveness after: a kernel alive and not dying after the reading was not yet
        # OOM-killed when it was taken (the server itself may stall for seconds between two reads when its
        # cgroup is under pressure).
        count = oom_kill_counter(*cgroup) if cgroup is not None else None
        returncode = proc.poll()  # waitpid(WNOHANG): never blocks
        if returncode is None:
            w.keep_oom_reading(count, proc.pid)
            return
        self._died(w, proc.pid, returncode)

    def _new_process(self, w: Watched, km: Any, pid: int) -> None:
        w.pid = pid
        w.started_at = time.time() - POLL_SECONDS - 1.0
        w.last_look = None
        w.cgroup = None
        w.oom_readings.clear()
        self._look(w)

    def _look_all(self) -> None:
        for w in self.kernels.values():
            self._look(w)

    def _look(self, w: Watched) -> None:
        if w.looking or w.pid is None:
            return
        w.looking = True
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, partial(look, w.kernel_id, w.pid, self.home, sentinel=w.sentinel)
        )
        future.add_done_callback(partial(self._looked, w, w.pid))

    def _looked(self, w: Watched, pid: int, future: asyncio.Future[KernelLook]) -> None:
        w.looking = False
        if future.cancelled() or future.exception() is not None or w.pid != pid:
            return
        self._apply(w, future.result())

    def _apply(self, w: Watched, seen: KernelLook) -> None:
        if seen.memory_errors is not None and seen.memory_errors > w.memory_errors:
            # New rows in the store: the metric counts each once, whichever look read them first.
            metrics.MEMORY_ERRORS.inc(seen.memory_errors - w.memory_errors)
            w.memory_errors = seen.memory_errors
        if seen.record is None:
            return  # the process was gone: keep the last reading, the evidence of its death
        w.last_look = seen
        if seen.cgroup is not None:  # looks at a dying process carry no record (status.look): this one ran
            w.cgroup = seen.cgroup
            if not w.oom_readings and w.pid is not None:
                # The first reading now, not at the next poll: a kernel killed before that poll had no "before"
                # (seen once in a CI run with a soak beside it). The counter first, the liveness after, as in _check.
                w.keep_oom_reading(oom_kill_counter(*seen.cgroup), w.pid)
        if w.kernel_id in self.kernels:
            metrics.set_kernel(w.kernel_id, seen.memory.get("used_bytes"), seen.memory.get("budget_bytes"))

    async def kernel_status(self, kernel_id: str) -> dict[str, Any]:
        """Return the REST view of one kernel (``KeyError`` when the server runs no such kernel)."""
        if kernel_id not in self.km:
            raise KeyError(kernel_id)
        if kernel_id not in self.kernels:  # started since the last poll
            self._poll()
        w = self.kernels[kernel_id]
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(self._pool, partial(look, kernel_id, w.pid, self.home, sentinel=w.sentinel))
        if w.pid is not None:
            self._apply(w, seen)
        return {"kernel_id": kernel_id, "guard": seen.guard, "memory": seen.memory, "deaths": w.deaths,
                "memory_errors": w.memory_errors}

    # -- decide, record, explain, emit --------------------------------------------------------------

    def _died(self, w: Watched, pid: int, returncode: int) -> None:
        if pid in w.handled_pids:
            return
        w.handled_pids.add(pid)
        record = w.last_look.record if w.last_look else None
        cgroup = w.cgroup
        seen = DeathSeen(
            kernel_id=w.kernel_id,
            pid=pid,
            returncode=returncode,
            died_at=time.time(),
            started_at=w.started_at,
            oom_kills_before=w.oom_readings[0] if w.oom_readings else None,
            oom_kills_after=oom_kill_counter(*cgroup) if cgroup else None,
            memory=record,
            sentinel=w.sentinel,
        )
        self.log.info("kernel-sentinel: kernel %s (pid %s) ended with %s", w.kernel_id, pid, returncode)
        task = asyncio.get_running_loop().create_task(self._report(w, seen))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _report(self, w: Watched, seen: DeathSeen) -> None:
        try:
            where = {"server": self._server_url(), "kernel_name": w.kernel_name, "notebook": await self._notebook(w)}
            seen = replace(seen, where=tuple((k, v) for k, v in where.items() if v))
            loop = asyncio.get_running_loop()
            report = await loop.run_in_executor(self._deaths, partial(self._explain, seen, frozenset(w.reported)))
            if report is None:
                return  # the flight record says the shutdown was asked for
            w.deaths += 1
            if report.get("death_id") is not None:
                w.reported.add(int(report["death_id"]))
            data = event_data(report, **where)
            metrics.DEATHS.labels(cause=str(report.get("cause") or "unknown")).inc()
            self.serverapp.event_logger.emit(schema_id=SCHEMA_ID, data=data)
        except Exception as exc:
            self.log.warning("kernel-sentinel: could not report kernel %s's death: %s", w.kernel_id, exc)

    def _explain(self, seen: DeathSeen, reported: frozenset[int]) -> dict[str, Any] | None:
        """Return the death's why-report: the sentinel kernel's own, else what the server saw (worker thread)."""
        if seen.sentinel:
            own = _own_report(seen, reported)
            if own is not None:
                return own
            seen = replace(seen, notes=(f"no record from the sentinel kernel within {OWN_REPORT_WAIT:.0f} s",))
        return record_stock_death(seen, self.home)

    async def _notebook(self, w: Watched) -> str | None:
        """Return the path of the notebook whose session runs the kernel, if a session names one."""
        try:
            for session in await self.serverapp.session_manager.list_sessions():
                if (session.get("kernel") or {}).get("id") == w.kernel_id:
                    return session.get("path")
        except Exception:
            return None
        return None

    def _server_url(self) -> str | None:
        try:
            return str(self.serverapp.connection_url)
        except Exception:
            return None


def _own_report(seen: DeathSeen, reported: frozenset[int]) -> dict[str, Any] | None:
    """Return the autopsy's report of this death once it is in the store, or None after ``OWN_REPORT_WAIT``."""
    from ..autopsy import death_report

    deadline = time.monotonic() + OWN_REPORT_WAIT
    while True:
        report = death_report(seen.kernel_id, wait=0.0)
        if (
            report is not None
            and report.get("death_id") not in reported
            and (seen.started_at is None or (report.get("died_at") or 0) >= seen.started_at)
        ):
            report.setdefault("sentinel", True)
            return report
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
