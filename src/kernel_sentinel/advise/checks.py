"""The checks and their remedies: take the evaluator's walk of a file, return the kernel killers found in it.

``Analyzer`` is the evaluator (``evaluate.py``) with the checks filled into its hooks: big allocations,
big reads, missing inputs, memmaps bigger than their disk, growth in loops, unbounded growth, results
kept by ``Out``, big objects held after their last use. Each finding says what to write instead.
``analyze(cells, ctx)`` is the pure entry point. Thresholds (shares of the budget) are in ``values``.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from pathlib import Path
from typing import Any

from ..sizes import format_bytes
from . import findings as F
from .estimate import ReadEstimate, fitting_chunksize, format_int, nice_floor
from .evaluate import Evaluator
from .findings import Finding
from .models import live_obj
from .source import Cell
from .values import HELD_SHARE, LARGE_SHARE, LIVE_SHARE, Alloc, Binding, Const, Context, Obj, Pos, Ref, shape_text

__all__ = ["HELD_SHARE", "LARGE_SHARE", "LIVE_SHARE", "Analyzer", "Context", "analyze", "live_obj"]


class Analyzer(Evaluator):
    """The evaluator with the checks: walks cells in order and collects findings; one instance per file."""

    def _dropped(self, b: Binding, name: str, pos: Pos, how: str) -> None:
        """Report a big result shown as a cell's value and later deleted or rebound: Out still holds it."""
        if b.displayed and how in ("del", "rebind") and self.ctx.notebook:
            size = b.obj.size or 0
            if size >= LIVE_SHARE * self.budget and not b.obj.preexisting:
                cell_i, line = b.displayed
                verb = "`del " + name + "`" if how == "del" else f"assigning a new value to `{name}`"
                self.add(None, line, F.KEPT_BY_OUT,
                         f"`{name}` ({format_bytes(size)}) was shown as this cell's result, so IPython's Out cache keeps it: "
                         f"{verb} later (cell {self.cell.index if self.cell else '?'}, line {pos[1]}) frees nothing",
                         f"end this cell with `{name}.head()` or a `;` (`{name};`) instead of `{name}`, or run "
                         f"`%reset -f out` after {verb}", estimate=size, severity="warning", cell_index=cell_i)

    def _string_grows(self, node: ast.AugAssign, name: str) -> None:
        """Report ``s += ...`` on a string inside a loop: quadratic copies."""
        src = ast.unparse(node.value)
        self.add(None, node.lineno, F.GROWS_IN_LOOP,
                 f"`{name} += ...` builds a string inside a loop: every step copies all of `{name}` so far "
                 "(quadratic time, and the string grows with every iteration)",
                 f"collect the pieces and join once: `parts.append({src})` in the loop, then "
                 f"`{name} = ''.join(parts)` after it", severity="warning")

    def exists_or_report(self, node: ast.Call, p: str, what: str) -> Path | None:
        """Return the resolved path if it exists; report a missing input (unless the notebook makes it)."""
        if "://" in p or any(ch in p for ch in "*?[") or p.startswith(("s3:", "gs:", "hdfs:")):
            return None
        full = self.resolve(p)
        if full.exists():
            return full
        norm = os.path.normpath(str(full))
        if norm in self.produced or (self.shell_text and os.path.basename(p) in self.shell_text):
            return None
        parent = full.parent
        hint = ""
        if parent.is_dir():
            try:
                names = os.listdir(parent)
            except OSError:
                names = []
            close = difflib.get_close_matches(full.name, names, n=1, cutoff=0.6)
            if close:
                suggestion = os.path.join(os.path.dirname(p), close[0])
                hint = f"did you mean {suggestion!r}? "
        else:
            hint = f"the folder {str(parent)!r} does not exist either. "
        self.add(None, node.lineno, F.MISSING_FILE,
                 f"{what} reads {p!r}, which does not exist (looked for {str(full)!r})",
                 f"{hint}Check the path before the heavy work starts: "
                 f"`assert Path({p!r}).exists(), 'missing input'`", severity="error")
        return None

    def _report_big_read(self, node: ast.Call, reader: str, p: str, est: ReadEstimate, nbytes: int) -> None:
        """Report a read over half the budget, with the remedies that fit: chunks, dtypes, columns, out-of-core."""
        over = nbytes > self.usable
        fn = ast.unparse(node.func)
        details: dict[str, Any] = {"rows": est.rows, "bytes_per_row": round(est.bytes_per_row or 0, 1),
                                   "file_bytes": est.file_bytes}
        if est.engine == "polars":
            self._report_polars_read(node, reader, p, est, nbytes, over, details)
            return
        lines = []
        chunkable = reader in ("read_csv", "read_table") or (reader == "read_json" and "lines=True" in ast.unparse(node))
        if chunkable and est.bytes_per_row:
            cs = fitting_chunksize(est.bytes_per_row, self.usable)
            details["chunksize"] = cs
            call = ast.Call(func=node.func, args=node.args,
                            keywords=[k for k in node.keywords if k.arg != "chunksize"] +
                            [ast.keyword(arg="chunksize", value=ast.Constant(cs))])
            text = ast.unparse(call).replace(f"chunksize={cs}", f"chunksize={format_int(cs)}")
            lines.append(f"read it in chunks: `for chunk in {text}: ...` "
                         f"(each chunk about {format_bytes(cs * est.bytes_per_row)}; aggregate or filter it, keep only the result)")
        shrink_cols = [c for c in est.columns if c.suggestion]
        shrunk = est.shrunk_bytes
        if shrink_cols and shrunk is not None and shrunk < nbytes * 0.9:
            shrunk_scaled = int(shrunk * nbytes / max(1, est.bytes))
            dates = [c.name for c in shrink_cols if c.suggestion.startswith("datetime")]  # type: ignore[union-attr]
            typed = [c for c in shrink_cols if not c.suggestion.startswith("datetime")]  # type: ignore[union-attr]
            args = []
            if typed:
                args.append("dtype={" + ", ".join(f"{c.name!r}: {c.suggestion!r}" for c in typed[:8]) + "}")
            if dates:
                args.append(f"parse_dates={dates!r}")
            details["dtype"] = {c.name: c.suggestion for c in typed}
            details["parse_dates"] = dates
            details["shrunk_bytes"] = shrunk_scaled
            lines.append(f"with `{', '.join(args)}` it needs about {format_bytes(shrunk_scaled)}")
        if est.columns:
            lines.append(f"load only the columns you use: `usecols=[...]` (biggest: {_biggest_columns(est)})")
        if over and (shrunk is None or shrunk * nbytes / max(1, est.bytes) > LARGE_SHARE * self.budget):
            lines.append(f"or let an out-of-core engine do the work and load only the result: "
                         f"`duckdb.sql(\"SELECT ... FROM '{p}' GROUP BY ...\").df()` or "
                         f"`pl.scan_{'csv' if reader in ('read_csv', 'read_table') else reader[5:]}({p!r}).filter(...).collect()`")
            details["out_of_core"] = True
        self._add_big_read(node, f"{fn}({p!r})", est, nbytes, over, "; ".join(lines) or "read less of it", details)

    def _add_big_read(self, node: ast.Call, call: str, est: ReadEstimate, nbytes: int, over: bool, remedy: str,
                      details: dict[str, Any]) -> None:
        """Add the big-read finding: the call, what it needs against the file, over the budget or half of it."""
        verdict = self._over_text() if over else (f"over {int(LARGE_SHARE * 100)}% of the budget "
                                                  f"({format_bytes(self.ctx.budget_bytes)}, {self.ctx.budget_source})")
        rows = f"~{est.rows:,} rows, " if est.rows else ""
        self.add(None, node.lineno, F.BIG_READ,
                 f"`{call}` needs about {format_bytes(nbytes)} in memory ({rows}file {format_bytes(est.file_bytes)}), "
                 f"{verdict}",
                 remedy, estimate=nbytes, severity="error" if over else "warning", basis=est.basis, details=details)

    def _report_polars_read(self, node: ast.Call, reader: str, p: str, est: ReadEstimate, nbytes: int, over: bool,
                            details: dict[str, Any]) -> None:
        """Report a polars read over half the budget, with polars' own remedies: streaming, batches, columns."""
        scan = f"pl.scan_{reader[5:]}({p!r})"
        details["engine"] = "polars"
        lines = [f"let polars' streaming engine read it and keep only the result: "
                 f"`{scan}.filter(...).group_by(...).agg(...).collect(engine='streaming')`, or write it out of core "
                 f"with `{scan}.sink_parquet('out.parquet')`"]
        details["out_of_core"] = True
        if est.bytes_per_row:
            rows = fitting_chunksize(est.bytes_per_row, self.usable)
            details["chunksize"] = rows
            lines.append(f"or take it in batches: `for part in {scan}.collect_batches(chunk_size={format_int(rows)}): ...` "
                         f"(each about {format_bytes(rows * est.bytes_per_row)}; keep only what you need of each)")
        if len(est.columns) > 1:
            lines.append(f"load only the columns you use: `columns=[...]` (biggest: {_biggest_columns(est)})")
        call = ast.unparse(node)
        self._add_big_read(node, call if len(call) <= 120 else call[:117] + "...", est, nbytes, over, "; ".join(lines),
                           details)

    def big_read(self, node: ast.Call, reader: str, p: str, est: ReadEstimate, obj: Obj) -> None:
        """Report a read over half the budget once, as a read (not again as an allocation)."""
        nbytes = obj.nbytes or 0
        if nbytes > LARGE_SHARE * self.budget:
            self._report_big_read(node, reader, p, est, nbytes)
            obj.fatal = nbytes > self.usable
            self.stmt_allocs = [a for a in self.stmt_allocs if a.obj is not obj]  # reported here, not as an allocation
            self.alloc_log.append((self.pos(node), nbytes, obj))

    def mapped_file(self, node: ast.Call, p: str, size: int, itemsize: int | None) -> None:
        """Report a file mapped for writing that its filesystem cannot hold (SIGBUS), or one on tmpfs (memory)."""
        item = itemsize
        full = self.resolve(p)
        free, mount, fstype = self.ctx.fs_info(full.parent)
        existing = full.stat().st_size if full.exists() else 0
        if free is not None and size > free + existing:
            where = f"{mount} ({fstype})" if mount else str(full.parent)
            self.add(None, node.lineno, F.MEMMAP_DISK,
                     f"`{ast.unparse(node.func)}({p!r}, mode='w+')` maps {format_bytes(size)} but {where} has only "
                     f"{format_bytes(free)} free: the file is sparse, so this line succeeds, and the kernel dies with "
                     "SIGBUS when the writes reach the end of the free space",
                     f"put the file on a filesystem with at least {format_bytes(size)} free, or make it smaller "
                     f"({'float32 halves it; ' if item == 8 else ''}process it in blocks); check first: "
                     f"`shutil.disk_usage({os.path.dirname(p) or '.'!r}).free`",
                     estimate=size, severity="error", basis=f"shape x itemsize; free space by statvfs of {where}",
                     details={"free_bytes": free, "mount": mount, "fstype": fstype})
        elif fstype in ("tmpfs", "ramfs") and size > LARGE_SHARE * self.budget:
            self.add(None, node.lineno, F.BIG_ALLOCATION,
                     f"`{p}` is on {fstype} ({mount}): a memmap there is memory, not disk, and its {format_bytes(size)} "
                     "count against the memory budget (and stay charged after the kernel dies)",
                     "put the file on a real disk (not /dev/shm or a tmpfs /tmp)", estimate=size,
                     severity="error" if size > self.usable else "warning")

    def _live_total(self, exclude: set[int]) -> tuple[int, list[str]]:
        seen: set[int] = set()
        total, names = 0, []
        for name, b in self.bindings.items():
            o = b.obj
            if id(o) in seen or id(o) in exclude or o.preexisting or o.fatal or not o.size:
                continue
            seen.add(id(o))
            if o.size >= LIVE_SHARE * self.budget:
                total += o.size
                names.append(f"`{name}` {format_bytes(o.size)}")
        return total, names

    def _alloc_check(self, node: ast.stmt) -> None:
        allocs = self.stmt_allocs
        self.stmt_allocs = []
        if not allocs:
            return
        big = max(allocs, key=lambda a: a.size)
        for a in allocs:
            self.alloc_log.append((self.pos(node), a.size, a.obj))
        live, names = self._live_total({id(a.obj) for a in allocs})
        if big.size > self.usable:
            severity, verdict = "error", self._over_text()
            big.obj.fatal = True
        elif big.size > LARGE_SHARE * self.budget:
            severity, verdict = "warning", f"over {int(LARGE_SHARE * 100)}% of the budget ({format_bytes(self.ctx.budget_bytes)}, {self.ctx.budget_source})"
        elif big.size >= LIVE_SHARE * self.budget and live + big.size > self.usable:
            severity = "error"
            verdict = (f"and with {', '.join(names)} still alive that is {format_bytes(live + big.size)}, over the budget "
                       f"({format_bytes(self.ctx.budget_bytes)}, {self.ctx.budget_source})")
        else:
            return
        o = big.obj
        what = ast.unparse(big.node)
        if len(what) > 80:
            what = what[:77] + "..."
        shape = f"{shape_text(o.shape)} {o.dtype or ''} ".replace("  ", " ") if o.shape else ""
        self.add(None, node.lineno, F.BIG_ALLOCATION,
                 f"`{what}` allocates {shape}{format_bytes(big.size)}, {verdict}",
                 self._alloc_remedy(big, names), estimate=big.size, severity=severity,
                 basis="shape x itemsize" if o.shape else "sum of known parts")

    def _np_alias(self) -> str:
        """Return the name this notebook imported numpy as (``np`` if it did not)."""
        for name, v in self.env.items():
            if isinstance(v, Ref) and v.qual == "numpy":
                return name
        return "np"

    def _over_text(self) -> str:
        text = f"more than the budget ({format_bytes(self.ctx.budget_bytes)}, {self.ctx.budget_source})"
        if self.overhead:
            text += f" leaves after the kernel itself (~{format_bytes(self.overhead)})"
        return text

    def _alloc_remedy(self, big: Alloc, live_names: list[str]) -> str:
        o, node = big.obj, big.node
        tips = []
        if big.size <= self.usable and live_names:
            tips.append(f"free what you no longer need first (`del {live_names[0].split('`')[1]}`)")
        if isinstance(node, ast.Call) and o.itemsize == 8 and o.dtype in ("float64", None) and o.kind == "array":
            np_alias = self._np_alias()
            if isinstance(node.func, ast.Attribute) and self.qual(node.func) and self.qual(node.func).startswith("numpy"):  # type: ignore[union-attr]
                call = ast.Call(func=node.func, args=node.args,
                                keywords=[k for k in node.keywords if k.arg != "dtype"] +
                                [ast.keyword(arg="dtype", value=ast.Attribute(ast.Name(np_alias), "float32"))])
                if "random" not in ast.unparse(node.func) or "Generator" in (self.qual(node.func) or "") and \
                        node.func.attr in ("random", "standard_normal"):  # type: ignore[union-attr]
                    tips.append(f"float32 halves it ({format_bytes(big.size // 2)}): `{ast.unparse(call)}`")
                else:
                    tips.append(f"float32 halves it ({format_bytes(big.size // 2)}): add `.astype({np_alias}.float32)` "
                                "per block, or generate in float32")
        if o.shape and len(o.shape) >= 2 and o.shape[0]:
            row = big.size // o.shape[0]
            block = max(1, nice_floor(self.budget * LIVE_SHARE / max(1, row)))
            if block < o.shape[0]:
                tips.append(f"work in blocks of rows: `for start in range(0, {format_int(o.shape[0])}, {format_int(block)}): ...` "
                            f"({format_bytes(block * row)} per block)")
        if isinstance(node, ast.BinOp) and o.shape and len(o.shape) >= 3:
            tips.append("this broadcast materializes the full intermediate; for pairwise distances use "
                        "`scipy.spatial.distance.cdist` or `sklearn.metrics.pairwise_distances_chunked`")
        if big.size > self.usable:
            tips.append(f"or keep it on disk: `np.memmap(path, dtype=..., mode='w+', shape={shape_text(o.shape) if o.shape else '...'})` "
                        "on a filesystem with enough free space")
        return "; ".join(tips) or "make it smaller, or compute it in pieces"

    def _out_check(self, node: ast.Expr, value: Any) -> None:
        if not isinstance(value, Obj) or not value.size or value.preexisting:
            return
        if self.cell is not None and self.cell.original.rstrip().endswith(";"):
            return
        if isinstance(node.value, ast.Name):
            b = self.bindings.get(node.value.id)
            if b is not None and b.obj is value:
                b.displayed = (self.cell.index if self.cell else None, node.lineno)
            return
        if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) and \
                node.value.func.attr in ("head", "tail", "sample", "describe", "info"):
            return
        if value.size < LIVE_SHARE * self.budget:
            return
        expr = ast.unparse(node.value)
        peek = "result.head()" if value.kind in ("frame", "series") else "result[:5]"
        self.add(None, node.lineno, F.KEPT_BY_OUT,
                 f"this cell ends with `{expr[:60]}`, a new {format_bytes(value.size)} object: IPython keeps it in `Out` "
                 "(and `_`) for the rest of the session, even though no variable names it",
                 f"assign it (`result = {expr[:60]}`) and show `{peek}`, or end the line with `;`",
                 estimate=value.size, severity="warning")

    def _grows_check(self, node: ast.Assign) -> None:
        """``df = pd.concat([df, part])`` / ``a = np.append(a, x)`` inside a loop: copies everything every turn."""
        if not self.loops or len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return
        name = node.targets[0].id
        call = node.value
        if not isinstance(call, ast.Call):
            return
        q = self.qual(call.func) or ""
        meth = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        grows = False
        piece = None
        if q in ("pandas.concat", "numpy.concatenate", "numpy.vstack", "numpy.hstack", "numpy.row_stack",
                 "numpy.column_stack", "numpy.append", "numpy.r_") and call.args:
            first = call.args[0]
            elts = first.elts if isinstance(first, (ast.List, ast.Tuple)) else [first]
            if q == "numpy.append":
                elts = call.args[:2]
            names = [e.id for e in elts if isinstance(e, ast.Name)]
            if name in names:
                grows = True
                rest = [e for e in elts if not (isinstance(e, ast.Name) and e.id == name)]
                piece = ast.unparse(rest[0]) if rest else "part"
        elif meth == "append" and isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) \
                and call.func.value.id == name and isinstance(self.env.get(name), Obj):
            grows, piece = True, ast.unparse(call.args[0]) if call.args else "part"
        if not grows:
            return
        fn = ast.unparse(call.func)
        iters = self.loop_iters[-1] if self.loop_iters else None
        joiner = f"{self._np_alias()}.concatenate(parts)" if q.startswith("numpy.") else "pd.concat(parts)"
        if q == "pandas.concat":
            joiner = f"{fn}(parts, ignore_index=True)" if any(k.arg == "ignore_index" for k in call.keywords) else f"{fn}(parts)"
        details = {"iterations": iters}
        self.add(None, node.lineno, F.GROWS_IN_LOOP,
                 f"`{name} = {fn}(...{name}...)` inside a loop copies all of `{name}` on every turn: quadratic time, and "
                 f"twice the final size in memory at the last step" + (f" ({iters:,} turns)" if iters else ""),
                 f"collect the pieces in a list and join once after the loop: `parts.append({piece})` in the loop, "
                 f"then `{name} = {joiner}`", severity="warning", details=details)

    def _loop_append(self, node: ast.Expr) -> None:
        """``results.append(np.zeros(...))`` in a loop of known length: the list ends up holding all of them."""
        call = node.value
        if not (self.loops and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "append" and call.args and not self.in_function):
            return
        iters = self.loop_iters[-1]
        if iters is None:
            return
        self.stmt_allocs = []
        piece = self.ev(call.args[0])
        self.stmt_allocs = []
        if not isinstance(piece, Obj) or not piece.size:
            return
        total = piece.size * iters
        if total <= LARGE_SHARE * self.budget:
            return
        lst = ast.unparse(call.func.value)
        self.add(None, node.lineno, F.GROWS_IN_LOOP,
                 f"`{lst}` collects {iters:,} objects of {format_bytes(piece.size)}: {format_bytes(total)} by the end of the loop, "
                 f"{'more than' if total > self.usable else 'over half of'} the budget ({format_bytes(self.ctx.budget_bytes)})",
                 f"keep only what you need from each turn (a sum, a few rows: `{lst}.append(<summary of it>)`), "
                 "or write each piece to disk (`np.save` / `to_parquet`) and reload the ones you need",
                 estimate=total, severity="error" if total > self.usable else "warning", details={"iterations": iters})

    def _unbounded_check(self, node: ast.While) -> None:
        test = node.test
        if not (isinstance(test, ast.Constant) and bool(test.value)):
            return
        ends_by_exception = {"", "StopIteration", "EOFError", "Exception", "BaseException", "KeyboardInterrupt"}
        if any(caught_text == "" or set(re.findall(r"\w+", caught_text)) & ends_by_exception
               for caught in self.catching for caught_text in caught):
            return  # a `while True` inside try/except StopIteration (or broader) ends by that exception
        for n in _walk_same_loop(node):
            if isinstance(n, (ast.Break, ast.Return, ast.Raise)):
                return
            if isinstance(n, ast.Call) and self.qual(n.func) in ("sys.exit", "builtins.exit", "os._exit"):
                return
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "next" and len(n.args) == 1:
                return  # next(it) without a default ends the loop with StopIteration
        for n in _walk_same_loop(node):
            grow = None
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("append", "extend", "add", "update") \
                    and isinstance(n.func.value, (ast.Name, ast.Attribute)):
                grow = ast.unparse(n.func.value)
            elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add) and isinstance(n.target, ast.Name):
                cur = self.env.get(n.target.id)
                if isinstance(cur, Const) and isinstance(cur.value, (str, bytes, list)):
                    grow = n.target.id  # a counter (`n += 1`) does not grow memory
            if grow:
                self.add(None, n.lineno, F.UNBOUNDED_GROWTH,
                         f"`{grow}` grows on every turn of `while True:` (line {node.lineno}) and nothing in the loop ever "
                         "leaves it: it grows until the kernel is killed",
                         f"give the loop an end (`for _ in range(limit):` or a `break`), and keep `{grow}` bounded, e.g. "
                         f"`collections.deque(maxlen=10_000)`", severity="error")
                return

    def _held_after_use(self) -> None:
        events = self.bindings.items()
        for name, b in events:
            size = b.obj.size or 0
            if size < HELD_SHARE * self.budget or b.obj.preexisting or b.obj.fatal:
                continue
            later = [(pos, s, o) for pos, s, o in self.alloc_log
                     if pos > b.last_use and o is not b.obj and not o.fatal and s >= LIVE_SHARE * self.budget]
            if not later:
                continue
            peak = max(s for _, s, _ in later)
            where = f"cell {b.last_use_cell} line {b.last_use_line}" if b.last_use_cell is not None else f"line {b.last_use_line}"
            self.add(None, b.last_use_line, F.HELD_AFTER_USE,
                     f"`{name}` ({format_bytes(size)}) is last used here ({where}) but stays alive to the end, while later "
                     f"code allocates up to {format_bytes(peak)} more",
                     f"free it after its last use: `del {name}`" + (" (and do not leave it as a cell's last expression, "
                                                                    "or `Out` keeps it)" if self.ctx.notebook else ""),
                     estimate=size, severity="warning", cell_index=b.last_use_cell)


def _biggest_columns(est: ReadEstimate) -> str:
    """Return the three biggest columns of a read's estimate with their sizes: the ones worth leaving out."""
    top = sorted(est.columns, key=lambda c: -c.bytes)[:3]
    return ", ".join(f"{c.name!r} {format_bytes(c.bytes)}" for c in top)


def _walk_same_loop(loop: ast.AST):
    """Yield nodes of ``loop``'s body, not descending into nested loops or functions (their breaks are theirs)."""
    stack = list(loop.body)  # type: ignore[attr-defined]
    while stack:
        n = stack.pop()
        yield n
        for c in ast.iter_child_nodes(n):
            if isinstance(c, (ast.For, ast.While, ast.AsyncFor, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                if isinstance(c, (ast.For, ast.While, ast.AsyncFor)):
                    # a nested loop's body still grows things, but its break is not ours
                    stack.extend(x for x in ast.walk(c) if not isinstance(x, (ast.Break,)))
                continue
            stack.append(c)


def analyze(cells: list[Cell], ctx: Context) -> list[Finding]:
    """Return the findings for one file's cells under ``ctx`` (the pure entry point of the checks)."""
    return Analyzer(ctx).run(cells)
