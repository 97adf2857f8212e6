"""The IPython extension: what ``%load_ext kernel_sentinel`` and the sentinel kernelspec turn on.

The one place where the in-kernel parts meet. The flight recorder loads first, so that a death while
the guard is still loading is recorded too; then the guard, then checkpoints (which ask the guard's
budget before they fork). In a kernel that is starting, all but the recorder load just after it answered
its first ``kernel_info_request`` and before any cell runs (``after_ready``): frontends wait for that reply. Each part steps aside on its own if it cannot work. ``%sentinel`` and its
subcommand registry are in ``kernel_sentinel.magics``: each part registers its own subcommands there; the
advisor's ``check`` is registered here, importing the advisor only when it is first used (~60 ms).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~10 ms to import: not on the launcher's way to forking the kernel
if TYPE_CHECKING:
    from typing import Any

# Nothing imported at the top: ``import kernel_sentinel`` (the CLI, the launcher) must not pull in IPython.
CHECK_USAGE = "check [PATH...]"


def _check(magics: Any, args: list[str]) -> None:
    """``%sentinel check``: the advisor, imported on first use rather than at every kernel start."""
    from .advise.live import magic_check

    magic_check(magics, args)


def load_ipython_extension(ip: Any) -> None:
    """Turn on the autopsy's flight recorder now, and the guard and checkpoints as soon as the kernel is ready.

    The recorder loads first, before the guard is even imported: a guard that fails to load is no excuse, and
    a shutdown requested at any moment after this must be told from a death. The rest (~0.1-0.2 s of imports
    and set-up) waits until a starting kernel has answered its first ``kernel_info_request``, and never past
    the start of its first cell (``after_ready``): frontends wait for that reply at every start and restart.
    """
    from .after_ready import defer
    from .autopsy import recorder

    recorder.load(ip)
    if not defer(ip, lambda: _load_parts(ip), shutting_down=recorder.shutdown_requested):
        _load_parts(ip)


def _load_parts(ip: Any) -> None:
    """Load the guard, ``%sentinel``'s subcommands, checkpoints and the fleet's memory-error count, in that order."""
    from .autopsy import recorder
    from .magics import install as install_magic
    from .magics import register_subcommand

    try:
        from .guard.extension import load as load_guard

        load_guard(ip)
        from .autopsy.group_budget import register as register_group_budget

        register_group_budget()  # %sentinel budget moves the kernel's own memory group, when it has one
        register_subcommand("check", _check, CHECK_USAGE)  # after the guard's, before checkpoints': the usage line's order
        from .resurrect.extension import load as load_checkpoints

        load_checkpoints(ip)
        from .fleet.kernel_side import load as load_fleet

        load_fleet(ip)  # memory errors into the store: the fleet's "deaths avoided"
        install_magic(ip)  # already there when the guard or checkpoints loaded; here for when neither could
    finally:
        recorder.parts_loaded()  # the recorder's sampler starts its own slower look-ups only now


def unload_ipython_extension(ip: Any) -> None:
    """Turn all three off again (``%unload_ext kernel_sentinel``)."""
    from .autopsy.recorder import unload as unload_recorder
    from .guard.extension import unload as unload_guard
    from .resurrect.extension import unload as unload_checkpoints

    from .fleet.kernel_side import unload as unload_fleet

    unload_fleet(ip)
    unload_checkpoints(ip)
    unload_guard(ip)
    unload_recorder(ip)
