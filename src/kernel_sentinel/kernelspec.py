"""``kernel-sentinel install`` / ``uninstall``: the kernelspec every frontend uses to start a guarded kernel.

A kernelspec's ``argv`` is honoured by JupyterLab, Notebook 7, VS Code, nbclient and papermill alike, so
protection is a kernel.json away: it runs ``python -m kernel_sentinel.launch -f {connection_file}`` with the
interpreter that installed it. A limit given with ``--memory-limit`` goes in ``env`` twice:
``KERNEL_SENTINEL_GROUP_LIMIT`` asks the supervisor for a memory group of the kernel's own with that limit
(``autopsy/kernel_group.py``), ``KERNEL_SENTINEL_MEMORY_LIMIT`` is the guard's budget where no group can be made.
Written through jupyter_client's ``KernelSpecManager.install_kernel_spec``, so it lands where Jupyter looks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any

DEFAULT_NAME = "python3-sentinel"
DEFAULT_DISPLAY_NAME = "Python 3 (sentinel)"
REPLACED_NAME = "python3"  # jupyter_client's NATIVE_KERNEL_NAME: what frontends start by default
EX_USAGE = 64


class KernelspecError(RuntimeError):
    """Installing or removing a kernelspec failed; the message is one line for the user.

    ``usage`` is True when the arguments themselves were wrong (exit 64), False when the system refused.
    """

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def kernelspec_dict(display_name: str = DEFAULT_DISPLAY_NAME, memory_limit: str | None = None) -> dict[str, Any]:
    """Return the kernel.json content for a guarded kernel run by this interpreter."""
    from . import __version__

    spec: dict[str, Any] = {
        "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "debugger": True,
            "kernel_sentinel": {"version": __version__, "memory_limit": memory_limit},
        },
    }
    if memory_limit:
        from .autopsy.kernel_group import ENV_LIMIT

        spec["env"] = {"KERNEL_SENTINEL_MEMORY_LIMIT": memory_limit, ENV_LIMIT: memory_limit}
    return spec


def validate_memory_limit(text: str) -> str:
    """Return ``text`` unchanged if it is a SIZE the guard will accept; raise ``SizeError`` (one line) otherwise.

    A percentage is checked against this machine's budget now and resolved again when the kernel starts.
    """
    from .memory import snapshot
    from .sizes import parse_size

    total = None
    if str(text).strip().endswith("%"):
        total = snapshot(rlimits=False).budget_bytes or 1
    parse_size(text, of=total)
    return str(text).strip()


def _logo_dir() -> str | None:
    try:
        from ipykernel.kernelspec import RESOURCES
    except ImportError:
        return None
    return RESOURCES if os.path.isdir(RESOURCES) else None


def _where(user: bool, sys_prefix: bool, prefix: str | None) -> tuple[bool, str | None]:
    if sum([bool(user), bool(sys_prefix), prefix is not None]) > 1:
        raise KernelspecError("choose one of --user, --sys-prefix, --prefix", usage=True)
    if sys_prefix:
        return False, sys.prefix
    return bool(user), prefix


def install(
    *,
    user: bool = False,
    sys_prefix: bool = False,
    prefix: str | None = None,
    name: str | None = None,
    display_name: str | None = None,
    memory_limit: str | None = None,
    replace: bool = False,
) -> str:
    """Write the guarded kernelspec and return the folder it went to.

    Without ``user``, ``sys_prefix`` or ``prefix`` it goes to the user's Jupyter data folder.
    ``replace`` installs it as ``python3``, the kernel frontends pick by default. Raises ``SizeError`` for a
    bad ``memory_limit`` and ``KernelspecError`` for anything else, each with a one-line message.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    as_user, where = _where(user, sys_prefix, prefix)
    if not as_user and where is None:
        as_user = True  # no location given: the user's own folder, which needs no root and every frontend reads
    if replace and name not in (None, REPLACED_NAME):
        raise KernelspecError("--replace installs as 'python3'; leave out --name", usage=True)
    name = REPLACED_NAME if replace else (name or DEFAULT_NAME)
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise KernelspecError(f"invalid kernel name {name!r}: use letters, digits, '-', '_' and '.'", usage=True)
    limit = validate_memory_limit(memory_limit) if memory_limit else None
    spec = kernelspec_dict(display_name or DEFAULT_DISPLAY_NAME, limit)
    with tempfile.TemporaryDirectory(prefix="kernel-sentinel-spec-") as tmp:
        source = os.path.join(tmp, name)
        os.mkdir(source)
        logos = _logo_dir()
        if logos:
            for entry in os.listdir(logos):
                if entry.startswith("logo-"):
                    shutil.copy(os.path.join(logos, entry), source)
        with open(os.path.join(source, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        try:
            return KernelSpecManager().install_kernel_spec(source, kernel_name=name, user=as_user, prefix=where)
        except OSError as exc:
            raise KernelspecError(f"cannot write the kernelspec: {exc.strerror or exc} ({exc.filename or ''})") from exc


def _kernel_dirs(user: bool, prefix: str | None) -> list[str] | None:
    from jupyter_core.paths import jupyter_data_dir

    if prefix is not None:
        return [os.path.join(prefix, "share", "jupyter", "kernels")]
    if user:
        return [os.path.join(jupyter_data_dir(), "kernels")]
    return None  # everywhere Jupyter looks


def uninstall(
    *, name: str | None = None, user: bool = False, sys_prefix: bool = False, prefix: str | None = None
) -> str:
    """Remove the kernelspec ``name`` (default ``python3-sentinel``) and return the folder removed.

    Only removes a kernelspec that kernel-sentinel wrote (its argv runs ``kernel_sentinel.launch``), so
    ``uninstall --name python3`` undoes ``install --replace`` but never deletes ipykernel's own spec.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    as_user, where = _where(user, sys_prefix, prefix)
    name = name or DEFAULT_NAME
    dirs = _kernel_dirs(as_user, where)
    ksm = KernelSpecManager(kernel_dirs=dirs) if dirs is not None else KernelSpecManager()
    ksm.ensure_native_kernel = False
    found = ksm.find_kernel_specs().get(name)
    if found is None:
        raise KernelspecError(f"no kernelspec named {name!r}" + (f" in {dirs[0]}" if dirs else ""))
    try:
        with open(os.path.join(found, "kernel.json")) as f:
            argv = json.load(f).get("argv", [])
    except (OSError, ValueError):
        argv = []
    if "kernel_sentinel.launch" not in argv:
        raise KernelspecError(f"kernelspec {name!r} at {found} was not written by kernel-sentinel; left alone")
    try:
        shutil.rmtree(found)
    except OSError as exc:
        raise KernelspecError(f"cannot remove {found}: {exc.strerror or exc}") from exc
    return found


# --- CLI ------------------------------------------------------------------------------------------------


def _add_location(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="the current user's Jupyter data folder (install's default)")
    where.add_argument("--sys-prefix", action="store_true", help="this Python environment (sys.prefix)")
    where.add_argument("--prefix", metavar="DIR", help="PREFIX/share/jupyter/kernels")


def _install_cmd(args: argparse.Namespace) -> int:
    from .sizes import SizeError, format_bytes, parse_size

    try:
        path = install(
            user=args.user,
            sys_prefix=args.sys_prefix,
            prefix=args.prefix,
            name=args.name,
            display_name=args.display_name,
            memory_limit=args.memory_limit,
            replace=args.replace,
        )
    except SizeError as exc:
        print(f"kernel-sentinel install: --memory-limit: {exc}", file=sys.stderr)
        return EX_USAGE
    except KernelspecError as exc:
        print(f"kernel-sentinel install: {exc}", file=sys.stderr)
        return EX_USAGE if exc.usage else 1
    limit = ""
    if args.memory_limit:
        limit = f", memory limit {args.memory_limit}"
        if not args.memory_limit.strip().endswith("%"):
            limit += f" ({format_bytes(parse_size(args.memory_limit))})"
    print(f"Installed kernelspec {os.path.basename(path)} in {path}{limit}")
    return 0


def _uninstall_cmd(args: argparse.Namespace) -> int:
    try:
        path = uninstall(name=args.name, user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix)
    except KernelspecError as exc:
        print(f"kernel-sentinel uninstall: {exc}", file=sys.stderr)
        return 1
    print(f"Removed kernelspec {os.path.basename(path)} from {path}")
    return 0


def register_install(sub: argparse._SubParsersAction) -> None:
    """Add ``kernel-sentinel install`` to the CLI."""
    p = sub.add_parser("install", help="install a kernelspec that starts kernels with the memory guard on")
    _add_location(p)
    p.add_argument("--name", help=f"kernelspec name (default {DEFAULT_NAME})")
    p.add_argument("--display-name", metavar="TEXT", help=f"name shown in frontends (default {DEFAULT_DISPLAY_NAME!r})")
    p.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="each kernel's own memory limit (a memory group of its own where the machine allows, "
        "else the guard's budget), e.g. 4G, 512M or 80%% (of what the machine allows)",
    )
    p.add_argument("--replace", action="store_true", help="install as 'python3', the default kernel")
    p.set_defaults(func=_install_cmd)


def register_uninstall(sub: argparse._SubParsersAction) -> None:
    """Add ``kernel-sentinel uninstall`` to the CLI."""
    p = sub.add_parser("uninstall", help="remove a kernelspec written by 'kernel-sentinel install'")
    _add_location(p)
    p.add_argument("--name", help=f"kernelspec name (default {DEFAULT_NAME}; 'python3' after --replace)")
    p.set_defaults(func=_uninstall_cmd)
