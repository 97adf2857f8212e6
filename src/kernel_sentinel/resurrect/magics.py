"""``%sentinel checkpoint on|off|status|now`` and ``%sentinel restore [KERNEL_ID] [--list] [--rerun]``.

``install(ip, find)`` registers both in ``kernel_sentinel.magics`` (the registry every in-kernel part uses)
and makes sure ``%sentinel`` exists; ``find(ip)`` returns the shell's checkpointer, so this module does not
import the extension that loads it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from .restore import RestoreReport, format_list, list_checkpoints, load_checkpoint, rerun_cells

USAGE_CHECKPOINT = "usage: %sentinel checkpoint on|off|status|now"
USAGE_RESTORE = "usage: %sentinel restore [KERNEL_ID] [--list] [--rerun]"

_last_report: RestoreReport | None = None


def checkpoint_command(ip: Any, cp: Any, line: str) -> str:
    """Return the text for ``%sentinel checkpoint ...`` after acting on ``cp`` (the shell's checkpointer or None)."""
    words = line.split()
    action = words[0].lower() if words else "status"
    if cp is None:
        return "checkpoints are not loaded in this kernel: %load_ext kernel_sentinel"
    if action == "on":
        cp.enabled = True
        cp.stopped_reason = None
        return "checkpoints: on (after every cell)\n" + cp.checkpoint(getattr(ip, "execution_count", None))
    if action == "off":
        cp.enabled = False
        cp.wait()
        return "checkpoints: off"
    if action == "status":
        return cp.status()
    if action == "now":
        return cp.checkpoint(getattr(ip, "execution_count", None), wait=True)
    return USAGE_CHECKPOINT


def restore_command(ip: Any, cp: Any, line: str) -> str:
    """Return the text for ``%sentinel restore ...`` after restoring (and re-running, if asked)."""
    global _last_report
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return f"{USAGE_RESTORE} ({exc})"
    flags = {w for w in words if w.startswith("-")}
    args = [w for w in words if not w.startswith("-")]
    unknown = flags - {"--list", "--rerun"}
    if unknown or len(args) > 1:
        return USAGE_RESTORE
    home = None
    if "--list" in flags:
        return format_list(list_checkpoints(home))
    if "--rerun" in flags and not args and _last_report is not None and _last_report.found:
        return "\n".join(rerun_cells(ip, _last_report) or ["nothing to re-run"])
    kernel_id = args[0] if args else None
    own = cp.incarnation if cp is not None else None
    from .checkpoint import session_key_of

    if cp is not None:
        cp.wait()  # our own writer must not be halfway through while we read the folder
    available = cp._memory_available() if cp is not None else None
    report = load_checkpoint(ip.user_ns, kernel_id=kernel_id, session_key=session_key_of(ip.user_ns),
                             exclude=own, available=available)
    _last_report = report
    text = report.text()
    if "--rerun" in flags and report.found:
        text += "\n" + "\n".join(rerun_cells(ip, report) or ["nothing to re-run"])
    return text


def install(ip: Any, find: Callable[[Any], Any]) -> None:
    """Register ``checkpoint`` and ``restore`` as ``%sentinel`` subcommands and make sure the magic exists."""
    from ..magics import install as install_magic
    from ..magics import register_subcommand

    register_subcommand("checkpoint", lambda m, args: print(checkpoint_command(m.shell, find(m.shell), " ".join(args))),
                        "checkpoint on|off|status|now")
    register_subcommand("restore", lambda m, args: print(restore_command(m.shell, find(m.shell), shlex.join(args))),
                        "restore [KERNEL_ID] [--list] [--rerun]")
    install_magic(ip)
