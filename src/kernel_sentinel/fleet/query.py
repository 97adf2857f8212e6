"""``kernel-sentinel fleet``'s numbers: deaths and memory errors across every server, grouped, and the cells
that kill most. Reads whichever store holds them (the shared PostgreSQL, else the local SQLite) through the
same portable SQL; returns plain dicts the renderers draw.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol

BY_KEYS = ("cause", "user", "notebook", "host", "library")
_DEATH_COLUMN = {"cause": "cause", "user": "username", "notebook": "notebook", "host": "host", "library": "library"}
# A memory error has no cause of death: it is the death the guard avoided.
_ERROR_COLUMN = {**_DEATH_COLUMN, "cause": "'memory_budget'"}
_DAY = {"sqlite": "CAST(died_at / 86400 AS INTEGER)", "postgresql": "CAST(floor(died_at / 86400) AS BIGINT)"}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
UNKNOWN = "(unknown)"


class Readable(Protocol):
    dialect: str

    def rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]: ...


def parse_since(text: str) -> float | None:
    """Return the span ``7d`` / ``12h`` / ``30m`` / ``2w`` in seconds (None for ``all``); ValueError otherwise."""
    if text.strip().lower() == "all":
        return None
    match = _SPAN.match(text.lower())
    if not match:
        raise ValueError(f"--since takes a span like 7d, 12h, 30m, 2w or 'all', not {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


def fleet_summary(
    store: Readable, *, since: str = "7d", by: str = "cause", top: int = 10, now: float | None = None
) -> dict[str, Any]:
    """Return the fleet contract's dict (``since``, ``deaths``, ``memory_errors``, ``top_cells``) plus
    ``by_day`` (deaths per day and cause, for the chart): one pass of GROUP BYs over the store."""
    if by not in BY_KEYS:
        raise ValueError(f"--by takes one of {', '.join(BY_KEYS)}, not {by!r}")
    span = parse_since(since)
    start = (now if now is not None else time.time()) - span if span is not None else 0.0
    deaths = _grouped(store, "deaths", _DEATH_COLUMN[by], "died_at", start)
    errors = _grouped(store, "memory_errors", _ERROR_COLUMN[by], "at", start)
    day = _DAY[store.dialect]
    by_day: dict[str, dict[str, int]] = {}
    for row in store.rows(
        f"SELECT {day} AS day, cause, count(*) AS n FROM deaths WHERE died_at >= ? GROUP BY {day}, cause", (start,)
    ):
        label = time.strftime("%Y-%m-%d", time.gmtime(int(row["day"]) * 86400))
        by_day.setdefault(label, {})[row["cause"]] = int(row["n"])
    cells = store.rows(
        "SELECT cell_key, sum(d) AS deaths, sum(m) AS memory_errors FROM ("
        " SELECT cell_key, 1 AS d, 0 AS m FROM deaths WHERE died_at >= ? AND cell_key IS NOT NULL"
        " UNION ALL"
        " SELECT cell_key, 0 AS d, 1 AS m FROM memory_errors WHERE at >= ? AND cell_key IS NOT NULL"
        ") AS t GROUP BY cell_key ORDER BY sum(d) + sum(m) DESC, sum(d) DESC, cell_key LIMIT ?",
        (start, start, top),
    )
    for cell in cells:  # one copy's code per top cell (by index), not every copy's text through the GROUP BY
        found = store.rows("SELECT cell_code FROM deaths WHERE cell_key = ? LIMIT 1", (cell["cell_key"],)) or \
            store.rows("SELECT cell_code FROM memory_errors WHERE cell_key = ? LIMIT 1", (cell["cell_key"],))
        cell["code"] = found[0]["cell_code"] if found else None
    return {
        "since": since,
        "since_epoch": start,
        "by_key": by,
        "deaths": {"total": sum(deaths.values()), "by": deaths},
        "memory_errors": {"total": sum(errors.values()), "by": errors},
        "top_cells": [
            {"code": r["code"], "deaths": int(r["deaths"]), "memory_errors": int(r["memory_errors"]),
             "key": r["cell_key"]}
            for r in cells
        ],
        "by_day": dict(sorted(by_day.items())),
        **({"refused": _refusals(store)} if store.dialect == "postgresql" else {}),
    }


def _refusals(store: Readable) -> dict[str, Any]:
    """Return the records the shared database refused, by server (each server's forwarder reports its own):
    ``{"records": N, "servers": [{"user", "host", "store", "refused", "given_up", "reason"}]}``, newest first."""
    # The newest report of each store wins, whichever role made it: a server moved to its right role reports
    # under that one, and the wrong role's old report must not keep naming records since sent.
    rows = store.rows(
        "SELECT * FROM (SELECT DISTINCT ON (host, store) username, host, store, refused, given_up, reason, updated_at"
        " FROM outbox_status ORDER BY host, store, updated_at DESC) AS newest WHERE refused > 0"
        " ORDER BY updated_at DESC"
    )
    servers = [{"user": r["username"], "host": r["host"], "store": r["store"], "refused": int(r["refused"]),
                "given_up": int(r["given_up"]), "reason": r["reason"]} for r in rows]
    return {"records": sum(s["refused"] for s in servers), "servers": servers}


def _grouped(store: Readable, table: str, column: str, time_column: str, start: float) -> dict[str, int]:
    group = "" if column.startswith("'") else f" GROUP BY {column}"  # PostgreSQL refuses GROUP BY a constant
    rows = store.rows(f"SELECT {column} AS k, count(*) AS n FROM {table} WHERE {time_column} >= ?{group}", (start,))
    counts = {(r["k"] if r["k"] not in (None, "") else UNKNOWN): int(r["n"]) for r in rows if r["n"]}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
