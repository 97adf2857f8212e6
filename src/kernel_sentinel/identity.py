"""Which kernel this is and where its records live: take the environment, return ids and folders.

The one place for the rules every part must agree on: a kernel's id (``kernel-<id>.json`` -> ``<id>``,
else the connection file's stem), what the supervisor tells its child (``KERNEL_SENTINEL_KERNEL_ID``,
``KERNEL_SENTINEL_SUPERVISOR``, ``KERNEL_SENTINEL_CONNECTION_FILE``), and the home folder
(``KERNEL_SENTINEL_HOME``, else the Jupyter data dir). A leaf: imports nothing of the package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # pathlib (and the re it imports) cost ~5 ms: not on the launcher's way to forking the kernel
if TYPE_CHECKING:
    from pathlib import Path


def home_dir() -> Path:
    """Return where the store, flight records and checkpoints live: KERNEL_SENTINEL_HOME, else the Jupyter data dir."""
    from pathlib import Path

    explicit = os.environ.get("KERNEL_SENTINEL_HOME")
    if explicit:
        return Path(explicit)
    try:
        return Path(jupyter_data_dir()) / "kernel-sentinel"
    except Exception:  # jupyter_core missing or broken: a plain per-user folder still works
        return Path.home() / ".local" / "share" / "kernel-sentinel"


def jupyter_data_dir() -> str:
    """Return jupyter_core's ``jupyter_data_dir()``, worked out here on Linux unless platformdirs are asked for.

    The supervisor needs the home folder after each start, and jupyter_core's import cost it ~30 ms of CPU and
    3.1 MiB of anonymous memory (in the kernel's memory group). jupyter_core's rule there: JUPYTER_DATA_DIR, else
    XDG_DATA_HOME, else the home folder's real path + .local/share, then ``jupyter``; platformdirs' (asked for
    with JUPYTER_PLATFORM_DIRS, announced as jupyter_core's next default) names the same folder on Linux, but
    it is left to jupyter_core."""
    env = os.environ
    if env.get("JUPYTER_DATA_DIR"):
        return env["JUPYTER_DATA_DIR"]
    if sys.platform.startswith("linux") and "JUPYTER_PLATFORM_DIRS" not in env:
        xdg = env.get("XDG_DATA_HOME") or os.path.join(os.path.realpath(os.path.expanduser("~")), ".local", "share")
        return os.path.join(xdg, "jupyter")
    from jupyter_core.paths import jupyter_data_dir as jupyter_cores

    return jupyter_cores()


def kernel_id_from_connection_file(path: str | None) -> str | None:
    """Return the kernel id a connection file names: ``kernel-<id>.json`` -> ``<id>``, else the file's stem."""
    if not path:
        return None
    stem = os.path.basename(path)
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    return stem[len("kernel-") :] if stem.startswith("kernel-") and len(stem) > len("kernel-") else stem


def connection_file_from_argv(args: Sequence[str]) -> str | None:
    """Return the connection file in an ipykernel command line (``-f X``, ``-f=X``, ``--f X``, ``--f=X``)."""
    for i, arg in enumerate(args):
        if arg in ("-f", "--f") and i + 1 < len(args):
            return args[i + 1]
        for prefix in ("-f=", "--f="):
            if arg.startswith(prefix):
                return arg[len(prefix) :]
    return None


def kernel_identity() -> tuple[str, int | None, str | None]:
    """Return (kernel id, supervisor pid, connection file) of the kernel this process is.

    The supervisor's word when it is our parent (it put them in the environment), else ipykernel's
    connection file, else ``pid-<pid>`` (a shell that is not a kernel).
    """
    supervisor = os.environ.get("KERNEL_SENTINEL_SUPERVISOR")
    sup_pid = int(supervisor) if supervisor and supervisor.isdigit() and int(supervisor) == os.getppid() else None
    conn = os.environ.get("KERNEL_SENTINEL_CONNECTION_FILE") if sup_pid else None
    kid = os.environ.get("KERNEL_SENTINEL_KERNEL_ID") if sup_pid else None
    if not kid:
        try:
            from ipykernel.connect import get_connection_file

            conn = get_connection_file()
        except Exception:
            conn = None
        kid = kernel_id_from_connection_file(conn) if conn else f"pid-{os.getpid()}"
    return kid, sup_pid, conn
