"""``kernel-sentinel fleet``: deaths and memory errors across every server writing to the store; also the
admin's one-time ``--setup`` of the shared PostgreSQL and ``--add-user NAME`` (a hub user's own role)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EX_USAGE = 64
PROG = "kernel-sentinel fleet"


def _open() -> tuple[Any, str, str | None]:
    """Return (a readable store, what it is, why this server's waiting records could not be sent): the shared
    database when configured, else the local SQLite."""
    from ..store import STORE_NAME, SharedStore, Store, StoreError, database_url, home_dir, redact
    from .forward import forward

    url = database_url()
    path = home_dir() / STORE_NAME
    if url:
        # What this machine still holds goes first; if the database is down, the read says so.
        sent = forward(path, url)
        return SharedStore(url), redact(url), sent.error
    if not path.exists():
        return None, str(path), None
    unset = "KERNEL_SENTINEL_DATABASE_URL is not set here"
    try:
        return Store(path), str(path), unset  # migrates an older local store, so its newest columns exist
    except StoreError:
        return Store(path, create=False), str(path), unset  # read-only folder: read as it is (or fail in one line)


def _fleet(args: argparse.Namespace) -> int:
    from ..store import StoreError
    from ..store import problem as store_problem
    from .outbox import outbox_line, outbox_state
    from .query import fleet_summary, parse_since

    try:
        parse_since(args.since)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        if args.setup:
            return _setup()
        if args.add_user:
            return _add_user(args.add_user)
        if args.retry_refused:
            _retry_refused()
        store, source, unsent = _open()
        try:
            summary = fleet_summary(store, since=args.since, by=args.by) if store is not None else _empty(args)
        finally:
            if store is not None:
                store.close()
    except StoreError as exc:
        # Still one line: the database's fault, then what this server holds back meanwhile.
        line = outbox_line(outbox_state())
        print(f"{PROG}: {exc}" + (f"; {line}" if line else ""), file=sys.stderr)
        return 1
    summary["source"] = source
    state = outbox_state()
    if state is not None:  # this server's records not in the view read above
        summary["outbox"] = {k: state[k] for k in ("waiting", "refused", "given_up", "reason")}
    line = outbox_line(state, unreachable=unsent, shared=summary.get("refused"))
    trouble = store_problem() if state is None else None  # read from PostgreSQL; this server's store unreadable
    if trouble:
        line = "; ".join(filter(None, [f"this server's {trouble}", line]))
    if line:  # every server's refused records (from the shared database) and this one's waiting ones
        print(f"{PROG}: {line}", file=sys.stderr)
    from ..records import FleetSummary
    from ..report import render

    record = FleetSummary.from_dict(summary)
    if args.html:
        try:
            fd = os.open(args.html, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it shows users' code
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(render(record, "html"))
        except OSError as exc:
            print(f"{PROG}: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if args.json:
        print(render(record, "json"))
    elif not args.html:
        from rich.console import Console

        Console().print(render(record, "terminal"))
    else:
        print(f"wrote {args.html}")
    return 0


def _retry_refused() -> None:
    """Queue this server's refused records again (sent by the forwarding pass that follows); say how many."""
    from ..store import STORE_NAME, Store, home_dir

    path = home_dir() / STORE_NAME
    if path.exists():
        with Store(path) as store:
            count = store.outbox_retry()
        print(f"{PROG}: {count} refused record{'s' if count != 1 else ''} of this server queued again", file=sys.stderr)


def _empty(args: argparse.Namespace) -> dict[str, Any]:
    return {"since": args.since, "by_key": args.by, "deaths": {"total": 0, "by": {}},
            "memory_errors": {"total": 0, "by": {}}, "top_cells": [], "by_day": {}}


def _setup() -> int:
    from ..store import StoreError, database_url, redact
    from .roles import setup

    url = database_url()
    if not url:
        raise StoreError("--setup needs KERNEL_SENTINEL_DATABASE_URL=postgresql://OWNER@HOST/DB (the local store needs none)")
    print(f"kernel-sentinel schema {setup(url)} ready at {redact(url)}")
    return 0


def _add_user(username: str) -> int:
    from ..store import StoreError, database_url
    from .roles import add_user

    url = database_url()
    if not url:
        raise StoreError("--add-user needs KERNEL_SENTINEL_DATABASE_URL=postgresql://OWNER@HOST/DB")
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise StoreError("--add-user reads the user's database password from the first line of stdin; it was empty")
    add_user(url, username, password)
    print(f"role {username} may now write and read its own records")
    return 0


def register_fleet(sub: argparse._SubParsersAction) -> None:
    """Add ``fleet`` to the CLI."""
    from .query import BY_KEYS

    p = sub.add_parser("fleet", help="deaths and memory errors across every server writing to the store")
    p.add_argument("--since", default="7d", help="how far back: 7d (default), 12h, 2w, all")
    p.add_argument("--by", choices=BY_KEYS, default="cause", help="group by (default: cause)")
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page with a chart of deaths by day")
    p.add_argument("--setup", action="store_true", help="create or migrate the shared PostgreSQL schema (as its owner)")
    p.add_argument("--add-user", metavar="NAME", help="give hub user NAME a database role that reads only its own rows "
                   "(password on stdin)")
    p.add_argument("--retry-refused", action="store_true", help="send this server's records the database refused "
                   "again (after fixing the cause, e.g. the server's database URL)")
    p.set_defaults(func=_fleet)
