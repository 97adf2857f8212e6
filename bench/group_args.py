"""The command line the benches that run kernels in memory groups share: ``--limit`` (at most 1G) and ``--rounds``."""

from __future__ import annotations

import argparse
import sys

from kernel_sentinel.sizes import parse_size


def parse_group_args(doc: str, rounds: int, argv: list[str] | None = None) -> tuple[argparse.Namespace, int] | None:
    """Return the parsed arguments and the group's limit in bytes; None (after a one-line error) for a limit over 1G.

    Nothing that exhausts memory runs in a group over 1 GiB (the project's safety rule), so the limit is capped here.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--limit", default="1G", help="the memory group's size (at most 1G)")
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args(argv)
    limit = parse_size(args.limit)
    if limit > 1 << 30:
        print("--limit: at most 1G (nothing that exhausts memory runs in a bigger group)", file=sys.stderr)
        return None
    return args, limit
