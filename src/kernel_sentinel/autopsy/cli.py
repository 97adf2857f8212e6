"""``kernel-sentinel why`` and ``kernel-sentinel deaths``: thin commands over the store and the renderers."""

from __future__ import annotations

import argparse
import sys

EX_USAGE = 64


def _why(args: argparse.Namespace) -> int:
    from . import death_report

    if args.kernel_id and args.last:
        print("kernel-sentinel why: give a KERNEL_ID or --last, not both", file=sys.stderr)
        return EX_USAGE
    report = death_report(args.kernel_id)
    if report is None:
        from ..store import home_dir, problem

        trouble = problem()  # an unreadable store is not an empty one: say which it is
        if trouble:
            print(f"kernel-sentinel why: {trouble}", file=sys.stderr)
            return 1
        which = f"kernel {args.kernel_id}" if args.kernel_id else "any kernel"
        print(f"kernel-sentinel why: no death of {which} recorded (store: {home_dir() / 'store.db'})", file=sys.stderr)
        return 1
    if args.json:
        from ..report.death_json import render

        print(render(report))
    else:
        from rich.console import Console

        from ..report.death_terminal import render

        Console().print(render(report))
    return 0


def _deaths(args: argparse.Namespace) -> int:
    from ..fleet.outbox import outbox_line, outbox_state
    from ..store import Store, StoreError, home_dir
    from .sweep import sweep

    if args.limit < 1:
        print("kernel-sentinel deaths: --limit must be at least 1", file=sys.stderr)
        return EX_USAGE
    try:
        sweep(home_dir())
    except Exception:
        pass
    try:
        with Store(home_dir() / "store.db", create=False) as store:
            rows = store.deaths(args.limit)
            state = outbox_state(store=store)  # the store just opened, not a second one
    except StoreError as exc:
        print(f"kernel-sentinel deaths: {exc}", file=sys.stderr)
        return 1
    line = outbox_line(state)  # records the shared database has not got (waiting, or refused): say so
    if line:
        print(f"kernel-sentinel deaths: {line}", file=sys.stderr)
    if args.json:
        import json

        print(json.dumps([r["report"] for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print("No kernel deaths recorded.")
        return 0
    from rich.console import Console

    from ..report.deaths_terminal import render

    Console().print(render(rows))
    return 0


def register_autopsy(sub: argparse._SubParsersAction) -> None:
    """Add ``why`` and ``deaths`` to the CLI."""
    p = sub.add_parser("why", help="why a kernel died: cause, cell and line, memory, remedy")
    p.add_argument("kernel_id", nargs="?", metavar="KERNEL_ID", help="a kernel id (or a unique prefix); default: the newest death")
    p.add_argument("--last", action="store_true", help="the newest death of any kernel (the default)")
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    p.set_defaults(func=_why)
    d = sub.add_parser("deaths", help="a table of recent kernel deaths")
    d.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    d.add_argument("--json", action="store_true", help="print JSON for tools")
    d.set_defaults(func=_deaths)
