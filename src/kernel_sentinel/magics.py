"""``%sentinel``: take the words after it, run the subcommand a part registered for the first word.

The one magic of the in-kernel parts. Each part registers its own subcommands here, without importing any
other part: the guard (status, ``budget``, ``free``, ``on``/``off``), checkpoints (``checkpoint``,
``restore``), the advisor (``check``). ``kernel_sentinel.extension`` is where they are loaded together.
Bad input prints one line of usage, never a traceback.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class

Subcommand = Callable[["SentinelMagics", list[str]], Any]

# name -> (function(magics, args), usage fragment). "" is the bare ``%sentinel``. Registered from the
# kernel's main thread (extension loading, or a cell), read by the magic on the same thread.
SUBCOMMANDS: dict[str, tuple[Subcommand, str]] = {}


def register_subcommand(name: str, func: Subcommand, usage: str) -> None:
    """Add (or replace) ``%sentinel NAME ...``; ``func(magics, args)`` gets the words after NAME."""
    SUBCOMMANDS[name] = (func, usage)


def unregister_subcommand(name: str) -> None:
    """Remove ``%sentinel NAME`` (a part being unloaded); no error when it is not there."""
    SUBCOMMANDS.pop(name, None)


def usage_line() -> str:
    """Return the one-line usage message listing every registered subcommand."""
    parts = [u for name, (_, u) in SUBCOMMANDS.items() if name]
    return "usage: %sentinel [" + " | ".join(parts) + "]"


@magics_class
class SentinelMagics(Magics):
    """The ``%sentinel`` line magic: dispatches to ``SUBCOMMANDS``."""

    @line_magic
    def sentinel(self, line: str = "") -> None:
        """%sentinel [SUBCOMMAND ARGS...]: the guard's status and controls, checkpoints, the advisor."""
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        name, args = (words[0], words[1:]) if words else ("", [])
        entry = SUBCOMMANDS.get(name)
        if entry is None:
            print(usage_line())
            return
        try:
            entry[0](self, args)
        except MemoryError:
            raise  # the guard's own error, rendered by its handler
        except Exception as exc:  # a subcommand's bug must not become a traceback in the user's notebook
            print(f"%sentinel {name}: {type(exc).__name__}: {exc}".replace("  ", " "))


def install(ip: Any) -> None:
    """Register ``%sentinel`` in ``ip`` unless it is there already (each part calls this after registering)."""
    if getattr(ip, "magics_manager", None) is None:
        return
    if "sentinel" not in ip.magics_manager.magics.get("line", {}):
        ip.register_magics(SentinelMagics)
