"""``kernel-sentinel ...``: parses arguments, calls the library, renders. No logic of its own.

Each subcommand is a ``register(subparsers)`` function that sets ``func`` on its parser; usage errors
exit 64 (EX_USAGE), as DESIGN.md's contract says.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from .advise.cli import register_check
from .autopsy.cli import register_autopsy
from .fleet.cli import register_fleet
from .kernelspec import register_install, register_uninstall
from .resurrect.cli import register_checkpoints
from .run.cli import register_run

EX_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 by default; the contract says 64
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _budget(args: argparse.Namespace) -> int:
    from .autopsy.kernel_group import own_group, sweep_now
    from .memory import snapshot

    for leftover in sweep_now():  # kernel memory groups SIGKILLed supervisors left behind
        print(f"kernel-sentinel: removed the empty leftover memory group {leftover}", file=sys.stderr)

    if args.pid is not None:
        import psutil

        if not psutil.pid_exists(args.pid):
            print(f"kernel-sentinel budget: no process {args.pid}", file=sys.stderr)
            return EX_USAGE
    # In a kernel with a group of its own, RLIMIT_DATA is the guard's fence, not a limit on the kernel.
    snap = snapshot(args.pid, rlimits=args.pid is None or own_group(args.pid) is None)
    if args.json:
        print(json.dumps(snap.to_dict(), indent=2))
    else:
        from rich.console import Console

        from .autopsy.kernel_group import is_kernel_group
        from .report.budget_terminal import render

        own = snap.budget is not None and is_kernel_group(snap.budget.source)
        Console().print(render(snap, own_group=own))
    return 0


def register_budget(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budget", help="how much memory this process (or PID) may still use, and who says so")
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    p.add_argument("--pid", type=int, help="another process instead of this one")
    p.set_defaults(func=_budget)


# One line per subcommand; each module owns its arguments.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [register_budget, register_run, register_install, register_uninstall, register_check, register_autopsy, register_checkpoints, register_fleet]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="kernel-sentinel", description="Keeps Jupyter kernels alive; explains every death.")
    parser.add_argument("--version", action="version", version=f"kernel-sentinel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
