"""Before a cell runs: refuse the few calls that cannot be stopped once started and will not fit; size duckdb.

Some native calls never return to the interpreter until they are done (pandas' C parser, a polars join),
so the watchdog's SIGINT cannot stop them, and some abort the process when malloc returns NULL at the
fence (polars: "memory allocation of N bytes failed", SIGABRT; pandas' parser segfaulted once in three).
The only safe moment to stop them is before they start (FACTS.md, "Native code that gets NULL from
malloc"). This module decides that, from the cell's source, the live namespace and the real headroom:

- ``pd.read_csv(path)`` / ``read_table`` / ``read_json`` ..., and polars' ``pl.read_csv`` / ``read_parquet`` /
  ``read_ipc`` / ``read_ndjson`` or a plain ``pl.scan_*(path).collect()``, whose size in memory (the advisor's
  estimate from a sample of the file read with that library, ``advise.live.check_cell_source``) is more than
  the headroom left now;
- a polars cross join (``a.join(b, how="cross")``) of frames already in the namespace whose output
  (rows_a * rows_b * bytes per row) is more than the headroom.

A refusal is a ``MemoryBudgetError`` raised in place of the cell (nothing of it runs), naming the
chunksize or the streaming engine that fits. Estimates err toward allowing: a refusal needs an estimate
above the whole headroom, and anything this module cannot size runs (the fence and the watchdog remain).

duckdb is not refused but sized: every duckdb connection the kernel holds gets ``memory_limit`` set to
most of the headroom, so duckdb spills to disk or raises its own "Out of Memory Error" instead of meeting
the fence in the middle of a query. A limit the user set lower is never raised.

Cost on an ordinary cell: five substring tests of the source (``triggered``); nothing else runs unless
the cell names a reader, a scan, ``join`` or duckdb.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ..sizes import format_bytes

TRIGGER = re.compile(r"read_(?:csv|table|json|fwf|parquet|feather|excel|ipc|ndjson)|scan_(?:csv|parquet|ipc|ndjson)"
                     r"|\bjoin\b|duckdb|\.sql\b")
_WORDS = ("read_", "scan_", "join", "duckdb", ".sql")  # substring tests first: a regex over a long cell costs ~1 ms


def triggered(code: str) -> bool:
    """Return True when ``code`` names a call this module looks at (microseconds, on any cell)."""
    return any(word in code for word in _WORDS) and TRIGGER.search(code) is not None
DUCKDB_SHARE = 0.75  # of the headroom at the cell's start: duckdb's own structures and the result need the rest
DUCKDB_FLOOR = 64 << 20


@dataclass
class Refusal:
    """Why a cell is not run: what it would need, what is left, which library, and what fits instead."""

    library: str
    what: str  # the call, as written
    estimate_bytes: int
    headroom_bytes: int
    budget_bytes: int | None
    budget_source: str
    line: int
    remedy: str
    basis: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        """Return the error's one line: the call, its estimate against the headroom, and the remedy."""
        return (
            f"not started: `{self.what}` would need about {format_bytes(self.estimate_bytes)}, "
            f"and only {format_bytes(self.headroom_bytes)} of the {format_bytes(self.budget_bytes)} budget "
            f"({self.budget_source}) is free; {self.library} cannot be stopped once it runs out. "
            f"{self.remedy} The kernel and its variables are intact."
        )

    def evidence(self, cell: int | None, code: str) -> dict[str, Any]:
        """Return the guard's evidence dict for this refusal (``trigger`` "prerun")."""
        return {
            "trigger": "prerun",
            "library": self.library,
            "call": self.what,
            "requested_bytes": self.estimate_bytes,
            "headroom_bytes": self.headroom_bytes,
            "budget_bytes": self.budget_bytes,
            "budget_source": self.budget_source,
            "cell": cell,
            "code": code,
            "line": self.line,
            "remedy": self.remedy,
            "basis": self.basis,
            **{f"detail_{k}": v for k, v in self.details.items()},
        }


def headroom(guard: Any) -> tuple[int, int | None, str] | None:
    """Return (bytes free under the budget now, the budget, its source) from the guard; None when unknown."""
    try:
        status = guard.status()
    except Exception:
        return None
    budget, usage = status.get("budget_bytes"), status.get("usage_bytes")
    if not budget or usage is None:
        return None
    free = status.get("headroom_bytes")
    free = budget - usage if free is None else max(int(free), budget - usage)  # the larger: err toward allowing
    return max(0, int(free)), int(budget), str(status.get("budget_source") or "budget")


def check(code: str, namespace: dict[str, Any], room: tuple[int, int | None, str], ip: Any = None) -> Refusal | None:
    """Return the refusal for ``code`` about to run with ``room`` left, or None when it may run (or is unknown).

    ``ip`` (the shell) lets the advisor size file readers with the live namespace.
    """
    if not triggered(code):
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None  # IPython syntax (magics) or a real error: IPython reports it, not us
    found = _polars_cross_join(tree, namespace, room)
    if found is not None:
        return found
    if ip is not None and ("read_" in code or "scan_" in code):
        return _big_read(ip, code, room)
    return None


_NATIVE = (
    ("polars", re.compile(r"\bpl\.|polars|\.collect\(|\.lazy\(|\bjoin\(")),
    ("pandas", re.compile(r"read_(?:csv|table|fwf)\b")),
    ("duckdb", re.compile(r"duckdb|\.sql\(")),
)


def native_libraries(code: str, loaded: Any = sys.modules) -> list[str]:
    """Return the libraries (among ``loaded``; None: any) this code calls that may die on a refused allocation.

    The autopsy uses the list (from the flight record, or from the cell's code) to name the library when
    such a cell kills the kernel (polars aborts, pandas' C parser may segfault).
    """
    return [name for name, pattern in _NATIVE if (loaded is None or name in loaded) and pattern.search(code)]


# -- pandas (and other) file readers: the advisor's estimate ------------------------------------------


TEXT_READERS = ("read_csv", "read_table", "read_json", "read_fwf", "read_ndjson")
TEXT_EXPANSION = 64  # no text file's read takes more memory than this many times its size (below)


def fits_unsampled(reader: str, size: int, suffix: str, free: int) -> bool:
    """Return True when a text file of ``size`` bytes fits in ``free`` whatever it holds, so it need not be sampled.

    The sample read costs about what reading a small file does (28 ms of a 92 ms ``pl.read_csv`` of 10 MB, more
    with pandas): the pre-run check would double a notebook's small reads. The bound: a number 1-2 characters
    long with its separator becomes 8 bytes (4-8x), an empty field a float64 NaN (8x), a short distinct string
    a Python object with its pointer (~59 bytes for "ab,": 20x, x1.6 for the parser's leftover chunks): 64x
    leaves twice that. Compressed files and binary formats (parquet: 1 MB held 1.2 GB) are always sampled.
    """
    from ..advise.estimate import COMPRESSED  # (only cells that name a reader get here)

    if reader.rsplit(".", 1)[-1] not in TEXT_READERS or suffix in COMPRESSED:
        return False
    return size * TEXT_EXPANSION <= free


def _big_read(ip: Any, code: str, room: tuple[int, int | None, str]) -> Refusal | None:
    free, budget, source = room
    try:
        from ..advise import findings as F
        from ..advise.estimate import estimate_read
        from ..advise.live import check_cell_source

        def estimator(reader: str, path: Any, kwargs: dict[str, Any]) -> Any:
            try:
                if fits_unsampled(reader, path.stat().st_size, path.suffix, free):
                    return None
            except OSError:
                return None
            return estimate_read(reader, path, kwargs)

        found = check_cell_source(ip, code, budget=(free, f"free now under the {source}"), read_estimator=estimator)
    except Exception:
        return None  # the advisor could not size it: let it run under the fence
    for f in found:
        if f.kind != F.BIG_READ or f.severity != "error" or not f.estimate_bytes or f.estimate_bytes <= free:
            continue
        what = (f.code or "").strip() or "the read"
        remedy = f.remedy[:1].upper() + f.remedy[1:].rstrip(".") + "." if f.remedy else "Read it in chunks (`chunksize=`)."
        if f.details.get("engine") == "polars":
            library = "polars"
        elif "read_csv" in what or "read_table" in what:
            library = "pandas' C parser"
        else:
            library = "the file reader"
        return Refusal(
            library=library,
            what=what,
            estimate_bytes=int(f.estimate_bytes),
            headroom_bytes=free,
            budget_bytes=budget,
            budget_source=source,
            line=f.line,
            remedy=remedy,
            basis=f.basis or "",
            details={k: v for k, v in f.details.items() if k in ("chunksize", "out_of_core")},
        )
    return None


# -- polars cross joins ---------------------------------------------------------------------------


def _polars_cross_join(tree: ast.AST, ns: dict[str, Any], room: tuple[int, int | None, str]) -> Refusal | None:
    polars = sys.modules.get("polars")
    if polars is None:
        return None
    free, budget, source = room
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"):
            continue
        how = next((k.value for k in node.keywords if k.arg == "how"), None)
        if not (isinstance(how, ast.Constant) and how.value == "cross"):
            continue
        name = ast.unparse(node.func.value)
        lazy = isinstance(ns.get(name), polars.LazyFrame)
        if lazy and not _collected_whole(node, parents):
            continue  # a lazy join allocates nothing, and one aggregated or filtered before collect() need not fit
        other = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "other"), None)
        left, right = _frame_size(node.func.value, ns, polars), _frame_size(other, ns, polars)
        if left is None or right is None:
            continue
        rows = left[0] * right[0]
        nbytes = rows * (left[1] + right[1])
        if nbytes <= free:
            continue
        fits = max(1, free // 2 // max(1, right[0] * (left[1] + right[1])))  # left rows per slice, half the room
        slices = f"{name}.slice(offset, {fits:_})" if lazy else f"for part in {name}.iter_slices({fits:_}): ..."
        remedy = (
            f"Filter both sides before joining, or join in slices of the left frame (`{slices}`, each slice's "
            f"output about {format_bytes(fits * right[0] * (left[1] + right[1]))}), or let polars' streaming "
            f"engine write the result out of core: `{name}{'' if lazy else '.lazy()'}.join(..., how='cross')"
            f".sink_parquet('out.parquet')`."
        )
        what = ast.unparse(node)
        return Refusal(
            library="polars",
            what=what,
            estimate_bytes=int(nbytes),
            headroom_bytes=free,
            budget_bytes=budget,
            budget_source=source,
            line=getattr(node, "lineno", 1),
            remedy=remedy,
            basis=f"{left[0]:,} x {right[0]:,} rows, {left[1] + right[1]} bytes per output row",
            details={"rows": rows, "slice_rows": fits},
        )
    return None


def _collected_whole(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """Return True when the lazy query ``node`` is collected in this expression with every row and column kept.

    ``lz.join(lz, how="cross").collect()`` materializes the join; ``... .select(pl.len()).collect(engine="streaming")``
    streams it through an aggregation in little memory (a stock kernel runs it: refusing it was worse than stock).
    """
    from ..advise.models.polars import KEEPS_ALL

    while True:
        attribute = parents.get(id(node))
        call = parents.get(id(attribute)) if isinstance(attribute, ast.Attribute) else None
        if not (isinstance(call, ast.Call) and call.func is attribute):
            return False  # assigned, passed on, or the end of the expression: nothing collected here
        if attribute.attr == "collect":  # type: ignore[union-attr]
            return True
        if attribute.attr not in KEEPS_ALL:  # type: ignore[union-attr]
            return False
        node = call


def _frame_size(node: ast.AST | None, ns: dict[str, Any], polars: Any) -> tuple[int, int] | None:
    """Return (rows, bytes per row) of a polars frame named in the namespace; None when not cheaply known."""
    if not isinstance(node, ast.Name):
        return None
    obj = ns.get(node.id)
    try:
        if isinstance(obj, polars.DataFrame):
            rows = obj.height
            width = obj.estimated_size() / rows if rows else 8 * max(1, obj.width)
            return rows, max(1, int(width))
        if isinstance(obj, polars.LazyFrame):
            plan = obj.explain(optimized=False)
            if not plan.lstrip().startswith("DF "):
                return None  # a scan of files: counting its rows would read them
            frame = obj.collect()  # an in-memory frame: collecting it copies nothing big
            rows = frame.height
            width = frame.estimated_size() / rows if rows else 8 * max(1, frame.width)
            return rows, max(1, int(width))
    except Exception:
        return None
    return None


# -- duckdb: its own memory limit from the guard's headroom ---------------------------------------


class DuckdbSizer:
    """Sets ``memory_limit`` on the kernel's duckdb connections from the headroom (main thread only)."""

    def __init__(self) -> None:
        self._set: dict[int, int] = {}  # id(connection) -> the limit we set on it

    def apply(self, code: str, ns: dict[str, Any], free: int) -> int | None:
        """Return the limit set (bytes) when the cell uses duckdb, else None; never raises a lower user limit."""
        duckdb = sys.modules.get("duckdb")
        if duckdb is None or not uses_duckdb(code):
            return None
        target = max(DUCKDB_FLOOR, int(free * DUCKDB_SHARE))
        conns = duckdb_connections(ns)
        applied = None
        for conn in conns:
            try:
                # A cursor is a connection of its own to the same database (memory_limit is the database's):
                # the user's connection may hold an unfinished result that any statement on it would end.
                cur = conn.cursor()
            except Exception:
                continue
            try:
                current = _duckdb_limit(cur)
                ours = self._set.get(id(conn))
                if current is not None and current < target and current != ours:
                    continue  # the user's own, tighter limit
                cur.execute(f"SET memory_limit = '{target // (1 << 20)}MiB'")
                self._set[id(conn)] = _duckdb_limit(cur) or target
                applied = target
            except Exception:
                continue
            finally:
                try:
                    cur.close()
                except Exception:
                    pass
        return applied


def uses_duckdb(code: str | None) -> bool:
    """Return True when duckdb is loaded and ``code`` names it (its module or a relation's ``.sql``)."""
    return bool(code) and "duckdb" in sys.modules and ("duckdb" in code or ".sql" in code)  # type: ignore[operator]


def duckdb_connections(ns: dict[str, Any], named_in: str | None = None, default: bool = True) -> list[Any]:
    """Return duckdb's default connection (if ``default``) and the connections in ``ns`` (only those
    ``named_in`` names, if given)."""
    duckdb = sys.modules.get("duckdb")
    if duckdb is None:
        return []
    conns = []
    if default:
        try:
            conns.append(duckdb.default_connection())
        except Exception:
            pass
    conn_type = getattr(duckdb, "DuckDBPyConnection", None)
    if conn_type is not None:
        conns.extend(v for k, v in list(ns.items())
                     if isinstance(v, conn_type) and (named_in is None or k in named_in))
    return conns


def shrink_duckdb_pool(conn: Any) -> None:
    """Make duckdb give back the blocks it keeps cached: lower ``memory_limit`` for a moment, then restore it."""
    try:
        cur = conn.cursor()
    except Exception:
        return
    try:
        rows = cur.execute("SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'").fetchall()
        if not rows:
            return
        try:
            cur.execute(f"SET memory_limit = '{DUCKDB_FLOOR >> 20}MiB'")  # evicts what is not pinned
        except Exception:
            pass
        cur.execute(f"SET memory_limit = '{rows[0][0]}'")
    except Exception:
        pass
    finally:
        try:
            cur.close()
        except Exception:
            pass


def _duckdb_limit(conn: Any) -> int | None:
    rows = conn.execute("SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'").fetchall()
    if not rows:
        return None
    row = rows[0]
    from ..sizes import SizeError, parse_size

    text = str(row[0]).replace("iB", "").replace(" ", "")
    try:
        return parse_size(text)
    except SizeError:
        return None
