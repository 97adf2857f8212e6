"""``kernel-sentinel check PATH... [--budget SIZE] [--json]``: the advisor's subcommand."""

from __future__ import annotations

import argparse
import sys

EX_USAGE = 64


def _check(args: argparse.Namespace) -> int:
    from ..sizes import SizeError, parse_size
    from . import SourceError, check_file

    budget, source = _budget()
    if args.budget is not None:
        try:
            budget = parse_size(args.budget, of=budget)
        except SizeError as exc:
            print(f"kernel-sentinel check: {exc}", file=sys.stderr)
            return EX_USAGE
        source = f"--budget {args.budget}"
    if budget is None:
        print("kernel-sentinel check: no memory budget could be read here; give one with --budget 8G", file=sys.stderr)
        return EX_USAGE
    findings, failed, checked = [], False, 0
    for path in args.paths:
        try:
            findings.extend(check_file(path, budget, source))
            checked += 1
        except SourceError as exc:
            print(f"kernel-sentinel check: {exc}", file=sys.stderr)
            failed = True
    if not checked:
        return EX_USAGE
    if args.json:
        from ..report.findings_json import render

        print(render(findings))
    else:
        from rich.console import Console

        from ..report.findings_terminal import render

        Console(highlight=False, soft_wrap=True).print(render(findings, budget, source, checked))
    if failed:  # findings of the readable files were printed; the unreadable ones make it a usage error
        return EX_USAGE
    return 1 if findings else 0


def _budget() -> tuple[int | None, str]:
    from ..memory import snapshot

    snap = snapshot()
    return snap.budget_bytes, snap.source


def register_check(sub: argparse._SubParsersAction) -> None:
    """Add ``check`` to the CLI (one line in cli.REGISTRARS)."""
    p = sub.add_parser("check", help="find the lines that will kill a kernel (memory, missing files), before running",
                       description="Static checks of notebooks and .py files against a memory budget. "
                       "Exit 0: no findings; 1: findings; 64: usage error (bad option, unreadable file).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="notebooks (.ipynb) or Python files")
    p.add_argument("--budget", metavar="SIZE", help="memory budget: 512M, 8G, or 80%% of this machine's budget "
                   "(default: what `kernel-sentinel budget` says)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    p.set_defaults(func=_check)
