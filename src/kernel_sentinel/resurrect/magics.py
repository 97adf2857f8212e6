"""``%sentinel checkpoint on|off|status|now`` and ``%sentinel restore [KERNEL_ID] [--list] [--rerun]``.

The guard owns the ``%sentinel`` magic; ``subcommands(ip)`` returns the two handlers for its dispatch
table. Until the guard's magic exists, ``install`` registers a minimal ``%sentinel`` that knows only these
two (the guard's, registered later, replaces it and takes them over through ``subcommands``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from .restore import RestoreReport, format_list, list_checkpoints, load_checkpoint, rerun_cells

USAGE_CHECKPOINT = "usage: %sentinel checkpoint on|off|status|now"
USAGE_RESTORE = "usage: %sentinel restore [KERNEL_ID] [--list] [--rerun]"

_last_report: RestoreReport | None = None


def _checkpointer(ip: Any) -> Any:
    from .extension import checkpointer

    return checkpointer(ip)


def checkpoint_command(ip: Any, line: str) -> str:
    """Return the text for ``%sentinel checkpoint ...`` after acting on it."""
    words = line.split()
    action = words[0].lower() if words else "status"
    cp = _checkpointer(ip)
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


def restore_command(ip: Any, line: str) -> str:
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
    cp = _checkpointer(ip)
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


def subcommands(ip: Any) -> dict[str, Callable[[str], str]]:
    """Return ``{"checkpoint": handler, "restore": handler}`` for the guard's ``%sentinel`` dispatch table."""
    return {"checkpoint": lambda line: checkpoint_command(ip, line), "restore": lambda line: restore_command(ip, line)}


def install(ip: Any) -> None:
    """Add ``checkpoint`` and ``restore`` to the guard's ``%sentinel`` (registering that magic if the guard did not).

    Without the guard's module, a minimal ``%sentinel`` that knows only these two is registered instead.
    """
    try:
        from ..guard.magics import SentinelMagics, register_subcommand
    except ImportError:
        SentinelMagics = register_subcommand = None  # noqa: N806
    if register_subcommand is not None:
        register_subcommand("checkpoint", lambda m, args: print(checkpoint_command(m.shell, " ".join(args))),
                            "checkpoint on|off|status|now")
        register_subcommand("restore", lambda m, args: print(restore_command(m.shell, shlex.join(args))),
                            "restore [KERNEL_ID] [--list] [--rerun]")
        if "sentinel" not in ip.magics_manager.magics.get("line", {}):
            ip.register_magics(SentinelMagics)
        return
    line_magics = ip.magics_manager.magics.get("line", {})
    if "sentinel" in line_magics and not getattr(line_magics["sentinel"], "_ks_resurrect", False):
        return  # somebody else's %sentinel, with no hook for us: leave it alone
    handlers = subcommands(ip)

    def sentinel(line: str) -> None:
        word, _, rest = line.strip().partition(" ")
        handler = handlers.get(word)
        print(handler(rest) if handler else "usage: %sentinel checkpoint on|off|status|now | restore [KERNEL_ID] [--list] [--rerun]")

    sentinel._ks_resurrect = True  # type: ignore[attr-defined]
    ip.register_magic_function(sentinel, "line", "sentinel")
