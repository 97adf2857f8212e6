"""``kernel-sentinel checkpoints [--json]``: which kernels have checkpoints a new kernel could restore."""

from __future__ import annotations

import argparse
import json


def _checkpoints(args: argparse.Namespace) -> int:
    from .restore import format_list, list_checkpoints

    rows = list_checkpoints()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_list(rows))
        if rows:
            print("In a new kernel: %sentinel restore [KERNEL_ID]")
    return 0


def register_checkpoints(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoints", help="list the kernels whose variables are checkpointed (restore with %%sentinel restore)")
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    p.set_defaults(func=_checkpoints)
