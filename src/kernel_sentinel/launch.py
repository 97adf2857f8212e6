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
from collections.abc import Mapping, Sequence

# glibc's tunable that serves every thread from the main heap. A thread's arena keeps heaps that shrink with
# MADV_DONTNEED and stay writable: growing into them again takes memory the address-space fence cannot see, and
# glibc moves an allocation the fence refused into them (47 MiB after one thread allocated 50 MB in 100 KB blocks
# and ended; an array loop then OOM-killed the kernel past the fence). With one arena the main heap grows with brk,
# which RLIMIT_DATA sees, and a trim gives it back. Threads share one lock: a RandomForest fit with 2 threads
# (glibc mallocs in its tree builder) took the same time within the noise (bench/bench_malloc_arenas.py).
ONE_ARENA = "glibc.malloc.arena_max=1"


def _guard_off(env: Mapping[str, str]) -> bool:
    """Return True where the environment switches the guard off: the kernel is then left as the user set it."""
    return env.get("KERNEL_SENTINEL_GUARD", "").strip() == "0"


def one_arena_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the variables to add to ``env`` so that glibc gives the guarded kernel one malloc arena.

    Nothing where the guard is switched off, or where the user chose the arenas (``MALLOC_ARENA_MAX`` or an
    ``arena_max`` tunable): their setting is kept. Other tunables of theirs stay, this one is appended.
    """
    if _guard_off(env) or env.get("MALLOC_ARENA_MAX", "").strip():
        return {}
    tunables = env.get("GLIBC_TUNABLES", "")
    if "arena_max" in tunables:
        return {}
    return {"GLIBC_TUNABLES": f"{tunables}:{ONE_ARENA}" if tunables else ONE_ARENA}


def rust_backtrace_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the variables to add to ``env`` so that Rust libraries in the guarded kernel print no panic backtrace.

    Printing one resolves symbols (std parses the library's debug info: tens of MiB allocated at once), and a
    panic in polars at the fence then met a refused allocation inside the panic hook, which waits for the lock
    the hook itself holds: the kernel hung for good (seen once in ~25 polars queries refused at the fence, with
    ``RUST_BACKTRACE=1`` set in the environment). ``KERNEL_SENTINEL_RUST_BACKTRACE`` is what the kernel gets
    instead (default 0); nothing changes where the guard is off.
    """
    if _guard_off(env):
        return {}
    wanted = env.get("KERNEL_SENTINEL_RUST_BACKTRACE", "").strip() or "0"
    if env.get("RUST_BACKTRACE", "").strip() in ("", "0") and wanted == "0":
        return {}
    return {"RUST_BACKTRACE": wanted}


def kernel_argv(args: Sequence[str]) -> list[str]:
    """Return the ipykernel command line that loads the extension, passing ``args`` through."""
    return [sys.executable, "-m", "ipykernel_launcher", *args, "--ext=kernel_sentinel"]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = kernel_argv(args)
    # Set before the kernel's interpreter starts: glibc reads its tunables once, at a process's start.
    os.environ.update(one_arena_env(os.environ))
    os.environ.update(rust_backtrace_env(os.environ))
    # Only Linux has PR_SET_PDEATHSIG, without which a killed supervisor could orphan its kernel.
    if os.environ.get("KERNEL_SENTINEL_SUPERVISE", "1") == "0" or not sys.platform.startswith("linux"):
        os.execv(command[0], command)
    from .autopsy.supervisor import supervise

    supervise(args, command)


if __name__ == "__main__":
    main()
