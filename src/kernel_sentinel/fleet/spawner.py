"""A JupyterHub spawner for one machine that gives each user's server its own memory cgroup.

``CgroupSpawner`` is JupyterHub's ``SimpleLocalProcessSpawner`` (local processes, no OS accounts: for tests
and demos) plus what KubeSpawner's ``mem_limit`` gives a pod: the user's server and every kernel it starts
share one memory limit (``Spawner.mem_limit``, default 512M here). The group is made with
``kernel_sentinel.confine.MemoryCgroup`` before the server starts, entered by the server's own command
(``python -m kernel_sentinel.confine --cgroup ...``), and removed when the server stops. Where no memory
cgroup can be made the server is not started: a limit that silently does not exist is worse than none.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import default

from ..confine import ConfineError, MemoryCgroup, confined_command


class CgroupSpawner(SimpleLocalProcessSpawner):
    """Local single-user servers, each in a memory cgroup of ``mem_limit`` bytes (removed on stop).

    Threads: JupyterHub calls start/stop/poll on its event loop only.
    """

    group: MemoryCgroup | None = None

    @default("mem_limit")
    def _default_mem_limit(self) -> int:
        return 512 * 1024 * 1024

    async def start(self) -> Any:
        """Make the user's memory group, then start the server inside it; return its (ip, port)."""
        try:
            self.group = MemoryCgroup.create(int(self.mem_limit), prefix=f"hub-{self.user.name}")
        except ConfineError as exc:
            raise RuntimeError(f"no memory cgroup for {self.user.name}'s server: {exc}") from exc
        self._plain_cmd = list(self.cmd)
        self.cmd = confined_command(self._plain_cmd, cgroup=self.group)
        try:
            return await super().start()
        except BaseException:
            self._remove_group()
            raise
        finally:
            self.cmd = self._plain_cmd

    async def stop(self, now: bool = False) -> None:
        """Stop the server (and with it its kernels), then remove its memory group."""
        await super().stop(now=now)
        self._remove_group()

    def _remove_group(self) -> None:
        if self.group is not None:
            try:
                self.group.remove()
            except Exception as exc:  # a process still inside: say so, the next start makes a new group
                self.log.warning("kernel-sentinel: memory group %s not removed: %s", self.group.directory, exc)
            self.group = None
