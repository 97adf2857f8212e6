"""The sentinel kernel's entry point: what a kernelspec written by ``kernel-sentinel install`` runs.

``python -m kernel_sentinel.launch -f CONNECTION_FILE [ipykernel args...]`` becomes the kernel's supervisor
(``kernel_sentinel.autopsy.supervisor``): it starts ipykernel with the kernel_sentinel extension loaded as
its child, sees how that child ends, records and explains a death, and exits the way the child did. Every
frontend honours a kernelspec's argv (JupyterLab, Notebook, VS Code, nbclient, papermill), so this is where
protection starts for all of them. ``KERNEL_SENTINEL_SUPERVISE=0`` execs ipykernel directly (no autopsy
from outside; the in-kernel flight recorder still runs); so does every platform but Linux.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def kernel_argv(args: Sequence[str]) -> list[str]:
    """Return the ipykernel command line that loads the extension, passing ``args`` through."""
    return [sys.executable, "-m", "ipykernel_launcher", *args, "--ext=kernel_sentinel"]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = kernel_argv(args)
    # Only Linux has PR_SET_PDEATHSIG, without which a killed supervisor could orphan its kernel.
    if os.environ.get("KERNEL_SENTINEL_SUPERVISE", "1") == "0" or not sys.platform.startswith("linux"):
        os.execv(command[0], command)
    from .autopsy.supervisor import supervise

    supervise(args, command)


if __name__ == "__main__":
    main()
