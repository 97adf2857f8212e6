"""The sentinel kernel's entry point: what a kernelspec written by ``kernel-sentinel install`` runs.

``python -m kernel_sentinel.launch -f CONNECTION_FILE [ipykernel args...]`` starts an ipykernel with the
kernel_sentinel extension loaded. Every frontend honours a kernelspec's argv (JupyterLab, Notebook,
VS Code, nbclient, papermill), so this is where protection starts for all of them.
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
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
