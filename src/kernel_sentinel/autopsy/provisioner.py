"""A jupyter_client kernel provisioner that records a kernel's death from the return code jupyter_client sees.

For kernelspecs that keep ipykernel as the process jupyter_client starts (``argv`` ending in
``--ext=kernel_sentinel`` for the flight recorder) and are run by a server that uses jupyter_client
(JupyterLab, Notebook 7, nbclient, papermill). Chosen in kernel.json::

    "metadata": {"kernel_provisioner": {"provisioner_name": "sentinel-provisioner"}}

The sentinel launcher (``python -m kernel_sentinel.launch``) is the better witness: every frontend honours a
kernelspec's argv (VS Code too), and it gets ``wait4``'s peak RSS. When the argv already starts the launcher,
this provisioner leaves the recording to it. A death is recorded the first time ``poll()`` sees the return
code (the restarter polls every few seconds), unless jupyter_client is shutting the kernel down on request.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner


class SentinelProvisioner(LocalProvisioner):  # type: ignore[misc]
    """LocalProvisioner that turns the return code it polls into a recorded, explained death."""

    _sentinel_seen: int | None = None  # the pid whose end was already handled

    async def poll(self) -> int | None:
        pid = self.pid
        ret = await super().poll()
        if ret is not None and pid is not None and self.process is not None:
            self._sentinel_end(pid, ret)
        return ret

    def _sentinel_end(self, pid: int, returncode: int) -> None:
        if self._sentinel_seen == pid:
            return
        self._sentinel_seen = pid
        parent = self.parent
        if getattr(parent, "shutting_down", False):
            return  # asked for
        argv = list(getattr(self.kernel_spec, "argv", None) or [])
        if any("kernel_sentinel.launch" in str(a) for a in argv):
            return  # the launcher is the kernel's parent and has recorded it already
        try:
            record_exit(self._sentinel_kernel_id(), pid, returncode)
        except Exception as exc:  # the server must never suffer for the autopsy
            print(f"kernel-sentinel: could not record the kernel's end: {exc}", file=sys.stderr)

    def _sentinel_kernel_id(self) -> str:
        from ..identity import kernel_id_from_connection_file

        conn = getattr(self.parent, "connection_file", None)
        return kernel_id_from_connection_file(conn) or str(self.kernel_id)


def record_exit(kernel_id: str, pid: int, returncode: int) -> dict[str, Any] | None:
    """Record the end of kernel process ``pid`` with the return code its parent saw; return the report.

    Returns None when the flight record says the shutdown was requested (not a death).
    """
    from ..identity import home_dir
    from ..memory import oom_kill_counter
    from .evidence import Evidence
    from .gather import boot_usec, discard_flight, finish, gather_disk, gather_flight, gather_kernel_log

    home = home_dir()
    ev = Evidence(kernel_id=kernel_id, pid=pid, source="provisioner")
    if returncode < 0:
        ev.signal = -returncode
    else:
        ev.exit_code = returncode
    gather_flight(ev, home)
    if ev.shutdown_requested:
        discard_flight(home, kernel_id, pid)
        return None
    memory = ev.flight.get("memory") or {}
    ev.died_at = time.time()
    cg = memory.get("cgroup") or {}
    if cg.get("directory") and cg.get("oom_kills") is not None:
        ev.oom_kills_before = cg["oom_kills"]  # at the recorder's last sample, at most ~2 s before the end
        ev.oom_kills_after = oom_kill_counter(cg["directory"], cg.get("version"))
        ev.cgroup_path = cg.get("path") or ev.cgroup_path
    if ev.signal is not None:
        gather_kernel_log(ev, boot_usec((ev.flight.get("meta") or {}).get("started")))
    if ev.signal == signal.SIGBUS:
        gather_disk(ev)
    if not os.path.exists(str(home)):
        ev.notes.append(f"no KERNEL_SENTINEL_HOME at {home}")
    return finish(ev, home)
