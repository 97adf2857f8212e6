"""The checks: the cells' syntax trees, walked in order, plus a context -> findings.

One walk over all cells keeps a small abstract state: constants (``n = 20_000``), imported module
aliases (``np``, ``pd``), and objects whose size is known (arrays from literal shapes, DataFrames from
file estimates or from arrays, live objects in ``%sentinel check``). Every check reads that state; none
runs user code. I/O (file sizes, samples, free disk space) comes in through ``Context`` callables.

Thresholds (shares of the budget, one place so the docs and the tests agree):
- ``LARGE_SHARE`` 0.5: a single allocation or read over half the budget is a warning, over the whole
  budget an error (the kernel itself, pandas' parsing peak and any temporaries need the other half);
- ``LIVE_SHARE`` 0.1: an object of at least a tenth of the budget counts as "big" for the live total,
  for ``Out`` and for objects kept after their last use;
- ``HELD_SHARE`` 0.25: a big object kept alive after its last use is reported when it is at least a
  quarter of the budget and something of at least ``LIVE_SHARE`` is allocated afterwards.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sizes import format_bytes
from . import findings as F
from .estimate import (
    ReadEstimate,
    dtype_itemsize,
    estimate_npy,
    estimate_read,
    fitting_chunksize,
    format_int,
    fs_free,
    nice_floor,
)
from .findings import Finding
from .source import Cell

LARGE_SHARE = 0.5
# A notebook's code does not get the whole budget: the kernel itself (ipykernel with numpy and pandas
# imported: 80 MiB RSS measured here) is already there. Static checks compare with what is left; the
# live check gets the headroom from the running kernel and subtracts nothing.
KERNEL_OVERHEAD = 96 << 20
LIVE_SHARE = 0.10
HELD_SHARE = 0.25


@dataclass
class Context:
    """Everything the checks need besides the code: where paths resolve, the budget, and the I/O edges."""

    path: str
    base_dir: Path
    budget_bytes: int
    budget_source: str = "memory budget"
    notebook: bool = True  # IPython's Out cache exists (False for .py files run with python)
    namespace: dict[str, Any] | None = None  # live objects for %sentinel check
    read_estimator: Callable[[str, Path, dict[str, Any]], ReadEstimate | None] = estimate_read
    fs_info: Callable[[Path], tuple[int | None, str | None, str | None]] = fs_free
    npy_header: Callable[[Path], tuple[tuple[int, ...], str, int] | None] = estimate_npy


# ---- abstract values ------------------------------------------------------------------------------


@dataclass
class Const:
    value: Any


@dataclass
class Ref:
    """A module, function, class or instance we know by its qualified name (``numpy.random.Generator``)."""

    qual: str


@dataclass(eq=False)
class Obj:
    """An object whose size (or shape and dtype) is known."""

    kind: str  # array | frame | series | list | str
    shape: tuple[int | None, ...] | None = None
    itemsize: int | None = None
    dtype: str | None = None
    nbytes: int | None = None
    label: str = ""
    preexisting: bool = False  # lives in the kernel already (live check): already paid for
    fatal: bool = False  # reported as not fitting at all: later checks assume the user fixes that line
    rows: int | None = None

    @property
    def size(self) -> int | None:
        if self.nbytes is not None:
            return self.nbytes
        if self.shape is not None and self.itemsize is not None and all(d is not None for d in self.shape):
            return int(math.prod(self.shape)) * self.itemsize  # type: ignore[arg-type]
        return None


Pos = tuple[int, int]  # (cell sequence number, line): orders events across cells


@dataclass
class Binding:
    name: str
    obj: Obj
    defined: Pos
    cell: int | None
    last_use: Pos
    last_use_cell: int | None
    last_use_line: int
    displayed: tuple[int | None, int] | None = None  # (cell, line) where it was the cell's result


@dataclass
class Alloc:
    size: int
    node: ast.AST
    obj: Obj


# qualified names
NP, PD = "numpy", "pandas"
_FLOAT_RANDOM = {"rand", "randn", "random", "random_sample", "ranf", "sample", "standard_normal", "normal",
                 "uniform", "exponential", "standard_exponential", "lognormal", "gamma", "beta", "laplace"}
_INT_RANDOM = {"randint", "integers", "poisson", "binomial", "choice", "permutation", "random_integers"}
_RANDOM_SIZE_POS = {"random": 0, "random_sample": 0, "ranf": 0, "sample": 0, "standard_normal": 0,
                    "standard_exponential": 0, "normal": 2, "uniform": 2, "exponential": 1, "lognormal": 2,
                    "gamma": 2, "beta": 2, "laplace": 2, "randint": 2, "integers": 2, "poisson": 1, "binomial": 2,
                    "choice": 1, "random_integers": 2}
_ELEMENTWISE = {"sqrt", "exp", "log", "log1p", "log2", "log10", "abs", "absolute", "sin", "cos", "tan", "tanh",
                "square", "negative", "clip", "where", "maximum", "minimum", "add", "subtract", "multiply", "divide",
                "power", "floor", "ceil", "round", "isnan", "isfinite", "sign", "cumsum", "cumprod", "sort",
                "nan_to_num", "expm1", "arctan", "arcsin", "arccos", "hypot", "true_divide", "copy"}
_REDUCE = {"sum", "mean", "std", "var", "max", "min", "prod", "median", "argmax", "argmin", "any", "all", "nansum",
           "nanmean", "nanmax", "nanmin", "nanstd", "norm"}
_READERS = {"read_csv", "read_table", "read_json", "read_parquet", "read_feather", "read_excel", "read_pickle",
            "read_hdf", "read_fwf", "read_orc", "read_stata", "read_sas", "read_spss", "read_xml"}
_PATH_KW = ("filepath_or_buffer", "path_or_buf", "path", "io", "fname", "file", "filename", "filepath", "path_or_buffer")
_WRITE_HINTS = ("to_", "save", "write", "dump", "download", "retrieve", "urlretrieve", "copy", "move", "extract",
                "unpack", "savez", "tofile", "mkdir", "touch", "symlink", "rename")


def _prod(shape: tuple[int | None, ...]) -> int | None:
    if any(d is None for d in shape):
        return None
    return int(math.prod(shape))  # type: ignore[arg-type]


def _broadcast(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        else:
            return None  # would raise: not our business
    return tuple(out)


class Analyzer:
    """Walks cells in order and collects findings; one instance per file."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.budget = max(1, ctx.budget_bytes)
        overhead = 0 if ctx.namespace is not None else min(KERNEL_OVERHEAD, ctx.budget_bytes // 4)
        self.usable = max(1, ctx.budget_bytes - overhead)  # over this: an error (will not fit)
        self.overhead = overhead
        self.env: dict[str, Any] = {}
        self.findings: list[Finding] = []
        self.bindings: dict[str, Binding] = {}
        self.closed: list[tuple[Binding, Pos, str]] = []  # (binding, when it ended, how: "del" | "rebind")
        self.alloc_log: list[tuple[Pos, int, Obj]] = []
        self.produced: set[str] = set()  # paths some cell writes (so reading them later is fine)
        self.shell_text = ""
        self.cell: Cell | None = None
        self.seq = 0
        self.loops: list[ast.AST] = []
        self.loop_iters: list[int | None] = []
        self.stmt_allocs: list[Alloc] = []
        self.in_function = 0
        self.cells_by_index: dict[int | None, Cell] = {}
        self.catching: list[set[str]] = []  # exception names caught by the enclosing try statements
        if ctx.namespace:
            self._seed(ctx.namespace)

    # -- driver --------------------------------------------------------------------------------

    def run(self, cells: list[Cell]) -> list[Finding]:
        """Return the findings for ``cells`` (one file), in cell and line order."""
        self.shell_text = "\n".join(
            line for c in cells for line in c.original.splitlines() if line.lstrip().startswith(("!", "%"))
        )
        self.cells_by_index = {c.index: c for c in cells}
        parsed = []
        for seq, cell in enumerate(cells):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                line = exc.lineno or 1
                self._add(cell, line, F.SYNTAX_ERROR, f"this cell is not valid Python: {exc.msg}",
                          "fix the syntax; the other checks skipped this cell", severity="error")
                tree = None
            parsed.append((seq, cell, tree))
        for seq, cell, tree in parsed:
            if tree is None:
                continue
            self.seq, self.cell = seq, cell
            self._produced_paths(tree)
            body = tree.body
            for i, stmt in enumerate(body):
                self._guarded(stmt, last=(i == len(body) - 1))
        self._held_after_use()
        self.findings.sort(key=lambda f: (f.cell if f.cell is not None else -1, f.line, f.kind))
        return self.findings

    def _guarded(self, stmt: ast.stmt, last: bool) -> None:
        """Check one top-level statement; a construct the checker cannot follow is skipped, never a crash."""
        try:
            self.stmt(stmt, last=last)
        except (RecursionError, ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
                ZeroDivisionError, AssertionError):
            self.stmt_allocs = []
            self.loops, self.loop_iters, self.in_function, self.catching = [], [], 0, []

    def _seed(self, ns: dict[str, Any]) -> None:
        """Turn a live namespace into abstract values: modules, constants, arrays and frames with sizes."""
        import types

        for name, value in list(ns.items()):
            if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython"):
                continue
            if isinstance(value, types.ModuleType):
                self.env[name] = Ref(value.__name__)
            elif isinstance(value, (bool, int, float, str)) or (
                isinstance(value, tuple) and all(isinstance(v, (int, float, str)) for v in value) and len(value) < 64
            ):
                self.env[name] = Const(value)
            else:
                obj = live_obj(value, name)
                if obj is not None:
                    self.env[name] = obj
                elif callable(value) and getattr(value, "__module__", None):
                    mod = value.__module__ or ""
                    if mod.startswith(("numpy", "pandas")):
                        self.env[name] = Ref(_canonical(f"{mod.split('.')[0]}.{getattr(value, '__name__', name)}"))
                elif type(value).__name__ in ("Generator", "RandomState") and type(value).__module__.startswith("numpy"):
                    self.env[name] = Ref(f"numpy.random.{type(value).__name__}")

    # -- findings ------------------------------------------------------------------------------

    def _add(self, cell: Cell | None, line: int, kind: str, message: str, remedy: str, *, estimate: int | None = None,
             severity: str = "error", basis: str | None = None, details: dict[str, Any] | None = None,
             cell_index: int | None | str = "current") -> None:
        c = cell if cell is not None else self.cell
        index = c.index if cell_index == "current" and c is not None else cell_index
        if cell_index != "current":
            c = self.cells_by_index.get(cell_index)  # type: ignore[arg-type]
        code = None
        if c is not None:
            lines = c.original.split("\n")
            code = lines[line - 1].strip() if 0 < line <= len(lines) else None
        self.findings.append(Finding(
            path=self.ctx.path, cell=index, line=line, kind=kind, message=message, remedy=remedy,
            estimate_bytes=int(estimate) if estimate is not None else None, budget_bytes=self.ctx.budget_bytes,
            severity=severity, basis=basis, code=code, details=details or {},
        ))

    def _pos(self, node: ast.AST) -> Pos:
        return (self.seq, getattr(node, "lineno", 0))

    # -- statements ----------------------------------------------------------------------------

    def stmt(self, node: ast.stmt, last: bool = False) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            self._import(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            saved = (dict(self.env), self.loops, self.loop_iters)
            self.loops, self.loop_iters = [], []
            self.in_function += 1
            for s in node.body:
                self.stmt(s)
            self.in_function -= 1
            self.env, self.loops, self.loop_iters = saved
            self.env[node.name] = None
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            self._loop(node)
        elif isinstance(node, (ast.If,)):
            self._simple(node.test, node)
            for s in node.body + node.orelse:
                self.stmt(s)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self._simple(item.context_expr, node)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, None, node)
            for s in node.body:
                self.stmt(s)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            caught = {ast.unparse(h.type) if h.type is not None else "" for h in node.handlers}
            self.catching.append(caught)
            for s in node.body:
                self.stmt(s)
            self.catching.pop()
            for s in [h for hd in node.handlers for h in hd.body] + node.orelse + node.finalbody:
                self.stmt(s)
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self._end_binding(t.id, self._pos(node), "del")
                    self.env.pop(t.id, None)
        elif isinstance(node, ast.Assign):
            self._assign(node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._assign(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno,
                                    col_offset=node.col_offset))
        elif isinstance(node, ast.AugAssign):
            self._augassign(node)
        elif isinstance(node, ast.Expr):
            self.stmt_allocs = []
            value = self.ev(node.value)
            self._alloc_check(node)
            self._loop_append(node)
            if last and self.ctx.notebook and not self.loops and not self.in_function:
                self._out_check(node, value)
        elif isinstance(node, (ast.Return,)) and node.value is not None:
            self._simple(node.value, node)
        elif isinstance(node, ast.Match) if hasattr(ast, "Match") else False:
            for case in node.cases:  # type: ignore[attr-defined]
                for s in case.body:
                    self.stmt(s)

    def _simple(self, expr: ast.expr, node: ast.stmt) -> Any:
        self.stmt_allocs = []
        value = self.ev(expr)
        self._alloc_check(node)
        return value

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    self.env[a.asname] = Ref(a.name)
                else:
                    self.env[a.name.split(".")[0]] = Ref(a.name.split(".")[0])
        else:
            mod = node.module or ""
            for a in node.names:
                self.env[a.asname or a.name] = Ref(_canonical(f"{mod}.{a.name}"))

    def _assign(self, node: ast.Assign) -> None:
        self.stmt_allocs = []
        self._grows_check(node)
        value = self.ev(node.value)
        self._alloc_check(node)
        for t in node.targets:
            self._bind(t, value, node)

    def _bind(self, target: ast.expr, value: Any, node: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self._end_binding(target.id, self._pos(node), "rebind")
            self.env[target.id] = value
            if isinstance(value, Obj) and not self.in_function and value.size and value.kind != "memmap":
                self.bindings[target.id] = Binding(target.id, value, self._pos(node), self.cell.index if self.cell else None,
                                                   self._pos(node), self.cell.index if self.cell else None, node.lineno)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values: list[Any] | None = None
            if isinstance(value, Const) and isinstance(value.value, (tuple, list)) and len(value.value) == len(target.elts):
                values = [Const(v) for v in value.value]
            elif isinstance(value, list) and len(value) == len(target.elts):
                values = value
            for i, elt in enumerate(target.elts):
                self._bind(elt, values[i] if values else None, node)
        else:
            self.ev(target)

    def _end_binding(self, name: str, pos: Pos, how: str) -> None:
        b = self.bindings.pop(name, None)
        if b is None:
            return
        self.closed.append((b, pos, how))
        if b.displayed and how in ("del", "rebind") and self.ctx.notebook:
            size = b.obj.size or 0
            if size >= LIVE_SHARE * self.budget and not b.obj.preexisting:
                cell_i, line = b.displayed
                verb = "`del " + name + "`" if how == "del" else f"assigning a new value to `{name}`"
                self._add(None, line, F.KEPT_BY_OUT,
                          f"`{name}` ({format_bytes(size)}) was shown as this cell's result, so IPython's Out cache keeps it: "
                          f"{verb} later (cell {self.cell.index if self.cell else '?'}, line {pos[1]}) frees nothing",
                          f"end this cell with `{name}.head()` or a `;` (`{name};`) instead of `{name}`, or run "
                          f"`%reset -f out` after {verb}", estimate=size, severity="warning", cell_index=cell_i)

    def _augassign(self, node: ast.AugAssign) -> None:
        self.stmt_allocs = []
        target = node.target
        cur = self.env.get(target.id) if isinstance(target, ast.Name) else None
        value = self.ev(node.value)
        self._alloc_check(node)
        if not isinstance(target, ast.Name):
            self.ev(target)
            return
        self._use(target.id, node)
        if self.loops:
            if isinstance(cur, Const) and isinstance(cur.value, str) and isinstance(node.op, ast.Add) and not self.in_function:
                src = ast.unparse(node.value)
                self._add(None, node.lineno, F.GROWS_IN_LOOP,
                          f"`{target.id} += ...` builds a string inside a loop: every step copies all of `{target.id}` so far "
                          "(quadratic time, and the string grows with every iteration)",
                          f"collect the pieces and join once: `parts.append({src})` in the loop, then "
                          f"`{target.id} = ''.join(parts)` after it", severity="warning")
            if isinstance(cur, Const) and not isinstance(cur.value, str):
                self.env[target.id] = None  # a counter: unknown after the loop
            return
        if isinstance(cur, Const) and isinstance(value, Const):
            self.env[target.id] = self._const_binop(node.op, cur.value, value.value)
        elif isinstance(cur, Obj):
            pass  # in-place on arrays: no new memory
        else:
            self.env[target.id] = None

    def _loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        iters: int | None = None
        if isinstance(node, (ast.For, ast.AsyncFor)):
            it = self._simple(node.iter, node)
            if isinstance(it, Const) and isinstance(it.value, (range, tuple, list, str)):
                iters = len(it.value)
            self._bind(node.target, None, node)
        else:
            self._simple(node.test, node)
            self._unbounded_check(node)
        # names changed in the body are unknown inside and after the loop (their value depends on the turn)
        changed = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for n in ast.walk(node):
            if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
                if isinstance(self.env.get(n.target.id), Const) and not isinstance(self.env[n.target.id].value, str):
                    self.env[n.target.id] = None
        self.loops.append(node)
        self.loop_iters.append(iters)
        for s in node.body:
            self.stmt(s)
        self.loops.pop()
        self.loop_iters.pop()
        for s in node.orelse:
            self.stmt(s)
        for name in changed:
            if isinstance(self.env.get(name), Const) and not isinstance(self.env[name].value, str):
                self.env[name] = None

    # -- expressions ---------------------------------------------------------------------------

    def qual(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            v = self.env.get(node.id)
            if isinstance(v, Ref):
                return v.qual
            if node.id in ("open", "len", "int", "float", "range", "str", "max", "min", "round", "abs", "list", "tuple",
                           "sum") and node.id not in self.env:
                return f"builtins.{node.id}"
            return None
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value)
            return _canonical(f"{base}.{node.attr}") if base else None
        return None

    def _use(self, name: str, node: ast.AST) -> None:
        b = self.bindings.get(name)
        if b is not None and not self.in_function:
            b.last_use = self._pos(node)
            b.last_use_cell = self.cell.index if self.cell else None
            b.last_use_line = getattr(node, "lineno", b.last_use_line)

    def _new(self, obj: Obj | None, node: ast.AST) -> Obj | None:
        """Record a freshly allocated object of known size made by ``node``."""
        if isinstance(obj, Obj) and obj.size:
            obj.label = obj.label or ast.unparse(node)
            self.stmt_allocs.append(Alloc(obj.size, node, obj))
        return obj

    def ev(self, node: ast.expr) -> Any:
        """Return the abstract value of ``node`` (Const, Ref, Obj, list of values, or None if unknown)."""
        try:
            return self._ev(node)
        except RecursionError:
            return None

    def _ev(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return Const(node.value)
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self._use(node.id, node)
            return self.env.get(node.id)
        if isinstance(node, (ast.Tuple, ast.List)):
            vals = [self.ev(e) for e in node.elts]
            if all(isinstance(v, Const) for v in vals):
                return Const(tuple(v.value for v in vals) if isinstance(node, ast.Tuple) else [v.value for v in vals])
            return vals  # a mix of known and unknown parts (a shape like (n, m) with m unknown)
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                elif isinstance(v, ast.FormattedValue):
                    x = self.ev(v.value)
                    if not isinstance(x, Const) or v.format_spec is not None:
                        return None
                    parts.append(str(x.value))
            return Const("".join(parts))
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand)
            if isinstance(v, Const) and isinstance(node.op, ast.USub) and isinstance(v.value, (int, float)):
                return Const(-v.value)
            if isinstance(v, Obj) and v.size:
                return self._new(Obj(v.kind, v.shape, v.itemsize if not isinstance(node.op, ast.Not) else 1,
                                     v.dtype, None if v.shape else v.nbytes), node)
            return None
        if isinstance(node, ast.Compare):
            vals = [self.ev(node.left)] + [self.ev(c) for c in node.comparators]
            objs = [v for v in vals if isinstance(v, Obj)]
            if objs and objs[0].shape is not None:
                return self._new(Obj("array", objs[0].shape, 1, "bool"), node)
            return None
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self.ev(v)
            return None
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for g in node.generators:
                self.ev(g.iter)
            return None
        if isinstance(node, ast.Dict):
            vals = [self.ev(v) for v in node.values]
            keys = [self.ev(k) if k is not None else None for k in node.keys]
            return {"__dict__": list(zip(keys, vals))}
        if isinstance(node, ast.IfExp):
            self.ev(node.test)
            a, b = self.ev(node.body), self.ev(node.orelse)
            return a if a == b else None
        if isinstance(node, (ast.Lambda,)):
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.ev(child)
        return None

    def _const_binop(self, op: ast.operator, a: Any, b: Any) -> Const | None:
        try:
            if isinstance(op, ast.Pow) and isinstance(b, (int, float)) and abs(b) > 64:
                return None
            if isinstance(op, ast.Mult) and (isinstance(a, str) or isinstance(b, str)):
                return None  # "-" * 80 is fine but we never need it
            if isinstance(op, ast.Div) and isinstance(a, str) and isinstance(b, str):
                return Const(os.path.join(a, b))  # Path(a) / b
            fn = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y,
                  ast.Div: lambda x, y: x / y, ast.FloorDiv: lambda x, y: x // y, ast.Mod: lambda x, y: x % y,
                  ast.Pow: lambda x, y: x**y}.get(type(op))
            if fn is None or isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
                return None
            if isinstance(op, ast.Mod) and isinstance(a, str):
                return Const(a % b)
            return Const(fn(a, b))
        except Exception:
            return None

    def _binop(self, node: ast.BinOp) -> Any:
        a, b = self.ev(node.left), self.ev(node.right)
        if isinstance(a, Const) and isinstance(b, Const):
            return self._const_binop(node.op, a.value, b.value)
        if isinstance(node.op, ast.MatMult) and isinstance(a, Obj) and isinstance(b, Obj):
            return self._new(_matmul(a, b), node)
        oa, ob = (a if isinstance(a, Obj) else None), (b if isinstance(b, Obj) else None)
        if oa is None and ob is None:
            return None
        if oa is not None and ob is not None:
            if oa.kind in ("frame", "series") or ob.kind in ("frame", "series"):
                big = oa if (oa.size or 0) >= (ob.size or 0) else ob
                return self._new(Obj(big.kind, big.shape, big.itemsize, big.dtype, big.size, rows=big.rows), node)
            shape = _broadcast(oa.shape, ob.shape)
            item = max(oa.itemsize or 8, ob.itemsize or 8)
            if isinstance(node.op, ast.Div):
                item = max(item, 8) if (oa.itemsize or 8) >= 8 else item
            return self._new(Obj("array", shape, item, None), node) if shape is not None else None
        o = oa or ob
        assert o is not None
        item = o.itemsize
        if isinstance(node.op, ast.Div) and item is not None and item < 8 and o.dtype and o.dtype.startswith(("int", "uint", "bool")):
            item = 8
        if o.kind in ("frame", "series"):
            return self._new(Obj(o.kind, o.shape, o.itemsize, o.dtype, o.size, rows=o.rows), node)
        if o.kind == "array":
            return self._new(Obj("array", o.shape, item, o.dtype), node)
        return None

    def _attribute(self, node: ast.Attribute) -> Any:
        base = self.ev(node.value)
        if isinstance(base, Obj):
            if node.attr == "T" and base.shape is not None:
                return Obj(base.kind, tuple(reversed(base.shape)), base.itemsize, base.dtype, base.nbytes)
            if node.attr == "shape" and base.shape is not None and all(d is not None for d in base.shape):
                return Const(tuple(base.shape))
            if node.attr in ("size",) and base.shape is not None and _prod(base.shape) is not None:
                return Const(_prod(base.shape))
            if node.attr in ("nbytes",) and base.size:
                return Const(base.size)
            if node.attr == "values":
                return base
            return None
        if isinstance(base, Ref):
            return Ref(_canonical(f"{base.qual}.{node.attr}"))
        return None

    def _subscript(self, node: ast.Subscript) -> Any:
        base = self.ev(node.value)
        idx = node.slice
        if isinstance(base, Const):
            i = self.ev(idx)
            if isinstance(i, Const):
                try:
                    return Const(base.value[i.value])
                except Exception:
                    return None
            return None
        if not isinstance(base, Obj) or base.kind != "array" or base.shape is None:
            self.ev(idx)
            return None
        elts = idx.elts if isinstance(idx, ast.Tuple) else [idx]
        shape: list[int | None] = []
        dims = list(base.shape)
        for e in elts:
            if isinstance(e, ast.Slice) and e.lower is None and e.upper is None and e.step is None:
                if not dims:
                    return None
                shape.append(dims.pop(0))
            elif (isinstance(e, ast.Constant) and e.value is None) or self.qual(e) == "numpy.newaxis":
                shape.append(1)
            elif isinstance(e, ast.Constant) and isinstance(e.value, int):
                if not dims:
                    return None
                dims.pop(0)
            else:
                self.ev(e)
                return None  # fancy or partial indexing: size unknown (at most the base)
        return Obj("array", tuple(shape + dims), base.itemsize, base.dtype)  # a view: nothing new

    # -- calls ---------------------------------------------------------------------------------

    def _args(self, node: ast.Call) -> tuple[list[Any], dict[str, Any]]:
        args = [self.ev(a) for a in node.args if not isinstance(a, ast.Starred)]
        kw = {k.arg: self.ev(k.value) for k in node.keywords if k.arg}
        return args, kw

    def _call(self, node: ast.Call) -> Any:
        q = self.qual(node.func)
        method_base = None
        if q is None and isinstance(node.func, ast.Attribute):
            method_base = self.ev(node.func.value)
        args, kw = self._args(node)
        if q:
            return self._known_call(q, node, args, kw)
        if isinstance(method_base, Obj):
            return self._method(method_base, node.func.attr, node, args, kw)  # type: ignore[union-attr]
        self._write_call(node, args)
        return None

    def _arg(self, args: list[Any], kw: dict[str, Any], pos: int | None, *names: str) -> Any:
        for n in names:
            if n in kw:
                return kw[n]
        if pos is not None and pos < len(args):
            return args[pos]
        return None

    def _shape(self, v: Any) -> tuple[int | None, ...] | None:
        if isinstance(v, Const):
            x = v.value
            if isinstance(x, bool):
                return None
            if isinstance(x, (int, float)) and float(x).is_integer():
                return (int(x),)
            if isinstance(x, (tuple, list)) and all(isinstance(d, (int, float)) and float(d).is_integer() for d in x):
                return tuple(int(d) for d in x)
        if isinstance(v, list):  # a tuple mixing known and unknown dims
            dims = []
            for d in v:
                if isinstance(d, Const) and isinstance(d.value, (int, float)) and float(d.value).is_integer():
                    dims.append(int(d.value))
                else:
                    dims.append(None)
            return tuple(dims)
        return None

    def _dtype(self, v: Any, default: str = "float64") -> tuple[int | None, str | None]:
        if v is None:
            return dtype_itemsize(default), default
        if isinstance(v, Const):
            if isinstance(v.value, str):
                return dtype_itemsize(v.value), v.value
            return None, None
        if isinstance(v, Ref):
            name = v.qual.rsplit(".", 1)[-1]
            if v.qual.startswith("builtins."):
                name = {"int": "int64", "float": "float64", "bool": "bool", "complex": "complex128"}.get(name, name)
            return dtype_itemsize(name), name
        return None, None

    def _known_call(self, q: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        name = q.rsplit(".", 1)[-1]
        # builtins on constants
        if q.startswith("builtins."):
            if name == "open":
                self._read_path(node, q, args, kw)
                return None
            if all(isinstance(a, Const) for a in args) and not kw:
                try:
                    fn = {"len": len, "int": int, "float": float, "range": range, "str": str, "max": max, "min": min,
                          "round": round, "abs": abs, "tuple": tuple, "list": list, "sum": sum}[name]
                    vals = [a.value for a in args]
                    if name == "range" and len(range(*vals)) > 10**9:
                        return Const(range(*vals))
                    return Const(fn(*vals))
                except Exception:
                    return None
            if name == "len" and args and isinstance(args[0], Obj):
                o = args[0]
                if o.rows is not None:
                    return Const(o.rows)
                if o.shape and o.shape[0] is not None:
                    return Const(o.shape[0])
            return None
        if q in ("os.path.join", "posixpath.join") and args and all(isinstance(a, Const) and isinstance(a.value, str) for a in args):
            return Const(os.path.join(*[a.value for a in args]))
        if q in ("pathlib.Path", "pathlib.PurePath") and args and all(isinstance(a, Const) and isinstance(a.value, str) for a in args):
            return Const(os.path.join(*[a.value for a in args]))
        if q in ("os.path.expanduser",) and args and isinstance(args[0], Const):
            return Const(os.path.expanduser(args[0].value))
        if q.startswith("math.") and all(isinstance(a, Const) for a in args):
            try:
                import math as m

                return Const(getattr(m, name)(*[a.value for a in args]))
            except Exception:
                return None
        if q.startswith(PD + ".") and name in _READERS:
            return self._read(node, q, args, kw)
        if q in ("numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile"):
            return self._np_load(node, q, args, kw)
        if q in ("numpy.memmap", "numpy.lib.format.open_memmap"):
            return self._memmap(node, q, args, kw)
        if q.startswith(("numpy.", "pandas.")):
            return self._new(self._np_alloc(q, name, node, args, kw), node)
        self._write_call(node, args)
        return None

    def _np_alloc(self, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        if q in ("numpy.random.default_rng", "numpy.random.Generator"):
            return Ref("numpy.random.Generator")
        if q == "numpy.random.RandomState":
            return Ref("numpy.random.RandomState")
        if q in ("numpy.zeros", "numpy.ones", "numpy.empty"):
            shape = self._shape(self._arg(args, kw, 0, "shape"))
            item, dt = self._dtype(self._arg(args, kw, 1, "dtype"))
            return Obj("array", shape, item, dt) if shape else None
        if q == "numpy.full":
            shape = self._shape(self._arg(args, kw, 0, "shape"))
            fill = self._arg(args, kw, 1, "fill_value")
            default = "float64"
            if isinstance(fill, Const):
                default = "bool" if isinstance(fill.value, bool) else "int64" if isinstance(fill.value, int) else "float64"
            item, dt = self._dtype(self._arg(args, kw, 2, "dtype"), default)
            return Obj("array", shape, item, dt) if shape else None
        if q in ("numpy.zeros_like", "numpy.ones_like", "numpy.empty_like", "numpy.full_like", "numpy.copy",
                 "numpy.array", "numpy.ascontiguousarray"):
            src = args[0] if args else None
            if isinstance(src, Obj) and src.kind == "array":
                if q == "numpy.array" and self._arg(args, kw, None, "copy") == Const(False):
                    return None
                d = self._arg(args, kw, None, "dtype")
                item, dt = self._dtype(d) if d is not None else (src.itemsize, src.dtype)
                return Obj("array", src.shape, item, dt)
            return None
        if q.startswith("numpy.random.") and name in _FLOAT_RANDOM | _INT_RANDOM:
            legacy = not q.startswith(("numpy.random.Generator.",))
            if name in ("rand", "randn"):
                shape = self._shape(Const(tuple(a.value for a in args))) if args and all(isinstance(a, Const) for a in args) else None
                if args and shape is None:
                    shape = self._shape(list(args))
                return Obj("array", shape, 8, "float64") if shape else None
            pos = _RANDOM_SIZE_POS.get(name)
            if name == "integers" or (name == "randint"):
                pos = 2
            if name == "random" and not legacy:
                pos = 0
            shape = self._shape(self._arg(args, kw, pos, "size"))
            if shape is None:
                return None
            if name in _INT_RANDOM:
                item, dt = self._dtype(self._arg(args, kw, 3 if name in ("integers", "randint") else None, "dtype"), "int64")
                if name == "choice" and args and isinstance(args[0], Const) and isinstance(args[0].value, (list, tuple)):
                    vals = args[0].value
                    if vals and all(isinstance(v, str) for v in vals):
                        item, dt = 4 * max(len(v) for v in vals), "<U"
                return Obj("array", shape, item, dt)
            return Obj("array", shape, 8, "float64")
        if q == "numpy.arange":
            nums = [a.value for a in args if isinstance(a, Const)]
            if len(nums) != len(args) or not nums:
                return None
            try:
                n = len(range(*[int(x) for x in nums])) if all(float(x).is_integer() for x in nums) else \
                    int(math.ceil((nums[1] - nums[0]) / (nums[2] if len(nums) > 2 else 1))) if len(nums) > 1 else int(nums[0])
            except Exception:
                return None
            isint = all(isinstance(x, int) for x in nums)
            item, dt = self._dtype(kw.get("dtype"), "int64" if isint else "float64")
            return Obj("array", (max(n, 0),), item, dt)
        if q == "numpy.linspace":
            num = self._arg(args, kw, 2, "num")
            n = num.value if isinstance(num, Const) else 50 if num is None else None
            return Obj("array", (int(n),), 8, "float64") if isinstance(n, (int, float)) else None
        if q in ("numpy.eye", "numpy.identity"):
            n = self._arg(args, kw, 0, "N", "n")
            m = self._arg(args, kw, 1, "M") if q == "numpy.eye" else None
            if isinstance(n, Const) and isinstance(n.value, int):
                mm = m.value if isinstance(m, Const) and isinstance(m.value, int) else n.value
                item, dt = self._dtype(kw.get("dtype"))
                return Obj("array", (n.value, mm), item, dt)
            return None
        if q == "numpy.outer" and len(args) >= 2 and all(isinstance(a, Obj) and a.shape for a in args[:2]):
            na, nb = _prod(args[0].shape), _prod(args[1].shape)
            return Obj("array", (na, nb), max(args[0].itemsize or 8, args[1].itemsize or 8), None)
        if q == "numpy.meshgrid" and args and all(isinstance(a, Obj) and a.shape for a in args):
            dims = tuple(_prod(a.shape) for a in args)
            if len(dims) >= 2:
                dims = (dims[1], dims[0]) + dims[2:]
            grids = [self._new(Obj("array", dims, a.itemsize, a.dtype), node) for a in args]
            return grids
        if q in ("numpy.tile",) and len(args) >= 2 and isinstance(args[0], Obj) and args[0].shape is not None:
            reps = self._shape(args[1])
            if reps and _prod(args[0].shape) is not None and _prod(reps) is not None:
                return Obj("array", (_prod(args[0].shape) * _prod(reps),), args[0].itemsize, args[0].dtype)  # type: ignore[operator]
        if q == "numpy.repeat" and len(args) >= 2 and isinstance(args[0], Obj) and isinstance(args[1], Const):
            n = _prod(args[0].shape) if args[0].shape else None
            if n is not None and isinstance(args[1].value, int):
                return Obj("array", (n * args[1].value,), args[0].itemsize, args[0].dtype)
        if q in ("numpy.dot", "numpy.matmul") and len(args) >= 2 and all(isinstance(a, Obj) for a in args[:2]):
            return _matmul(args[0], args[1])
        if q in ("numpy.concatenate", "numpy.vstack", "numpy.hstack", "numpy.row_stack", "numpy.stack",
                 "numpy.column_stack", "pandas.concat"):
            parts = args[0] if args else None
            if isinstance(parts, list) and parts and all(isinstance(p, Obj) and p.size for p in parts):
                total = sum(p.size for p in parts)  # type: ignore[misc]
                kind = "frame" if q == "pandas.concat" else "array"
                return Obj(kind, None, None, None, total)
            return None
        if q.startswith("numpy.") and name in _ELEMENTWISE:
            objs = [a for a in args if isinstance(a, Obj)]
            if objs and all(o.kind == "array" for o in objs):
                shape = objs[0].shape
                for o in objs[1:]:
                    shape = _broadcast(shape, o.shape)
                item = max(o.itemsize or 8 for o in objs)
                if name in ("sqrt", "exp", "log", "log1p", "log2", "log10", "sin", "cos", "tan", "tanh", "divide"):
                    item = max(item, 8)
                if name in ("isnan", "isfinite"):
                    item = 1
                return Obj("array", shape, item, None) if shape is not None else None
            if objs and objs[0].kind in ("frame", "series"):
                o = objs[0]
                return Obj(o.kind, o.shape, o.itemsize, o.dtype, o.size, rows=o.rows)
            return None
        if q.startswith("numpy.") and name in _REDUCE:
            if args and isinstance(args[0], Obj):
                return _reduce(args[0], self._arg(args, kw, 1, "axis"))
            return None
        if q in ("pandas.DataFrame", "pandas.Series"):
            data = self._arg(args, kw, 0, "data")
            kind = "frame" if name == "DataFrame" else "series"
            if isinstance(data, Obj) and data.size:
                rows = data.shape[0] if data.shape else data.rows
                return Obj(kind, data.shape, data.itemsize, data.dtype, data.size, rows=rows)
            if isinstance(data, dict) and "__dict__" in data:
                vals = [v for _, v in data["__dict__"]]
                objs = [v for v in vals if isinstance(v, Obj) and v.size]
                if objs:
                    rows = objs[0].shape[0] if objs[0].shape else objs[0].rows
                    # plain Python lists/constants beside known columns: one 8-byte slot per row each
                    extra = (len(vals) - len(objs)) * 8 * (rows or 0)
                    return Obj(kind, None, None, None, sum(o.size for o in objs) + extra, rows=rows)  # type: ignore[misc]
            return None
        if q == "pandas.date_range":
            n = self._arg(args, kw, 2, "periods")
            if isinstance(n, Const) and isinstance(n.value, int):
                return Obj("array", (n.value,), 8, "datetime64")
        return None

    def _method(self, base: Obj, attr: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        if attr in ("copy", "cumsum", "cumprod", "fillna", "abs", "round", "clip", "flatten", "ravel"):
            if attr == "ravel":
                return Obj(base.kind, (_prod(base.shape),) if base.shape else None, base.itemsize, base.dtype, base.nbytes)
            return self._new(Obj(base.kind, base.shape, base.itemsize, base.dtype, base.nbytes, rows=base.rows), node)
        if attr == "astype" and base.kind == "array":
            item, dt = self._dtype(self._arg(args, kw, 0, "dtype"))
            return self._new(Obj("array", base.shape, item, dt), node)
        if attr == "reshape" and base.kind == "array" and base.shape is not None:
            shape = self._shape(args[0]) if len(args) == 1 else self._shape(list(args))
            if shape and None not in shape and -1 not in shape:
                return Obj("array", shape, base.itemsize, base.dtype)
            if shape and shape.count(-1) == 1 and _prod(base.shape):
                known = math.prod(d for d in shape if d != -1 and d is not None)
                if known:
                    return Obj("array", tuple(_prod(base.shape) // known if d == -1 else d for d in shape),  # type: ignore[operator]
                               base.itemsize, base.dtype)
            return None
        if attr in _REDUCE and base.kind == "array":
            return _reduce(base, self._arg(args, kw, 0, "axis"))
        if attr == "dot" and args and isinstance(args[0], Obj):
            return self._new(_matmul(base, args[0]), node)
        if attr in ("to_numpy",):
            return base
        self._write_call(node, args)
        return None

    # -- reads, writes and files ---------------------------------------------------------------

    def _path_arg(self, args: list[Any], kw: dict[str, Any]) -> str | None:
        v = self._arg(args, kw, 0, *_PATH_KW)
        if isinstance(v, Const) and isinstance(v.value, str):
            return v.value
        return None

    def _resolve(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else self.ctx.base_dir / path

    def _write_call(self, node: ast.Call, args: list[Any]) -> None:
        fn = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id if isinstance(node.func, ast.Name) else ""
        if any(h in fn.lower() for h in _WRITE_HINTS):
            for a in list(args) + [self.ev(k.value) for k in node.keywords]:
                if isinstance(a, Const) and isinstance(a.value, str):
                    self.produced.add(os.path.normpath(str(self._resolve(a.value))))

    def _produced_paths(self, tree: ast.AST) -> None:
        """Remember files this cell writes (``open(p, 'w')``, ``df.to_csv(p)``) so later reads of them are fine."""
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open":
                mode = n.args[1] if len(n.args) > 1 else next((k.value for k in n.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax"):
                    p = self.ev(n.args[0]) if n.args else None
                    if isinstance(p, Const) and isinstance(p.value, str):
                        self.produced.add(os.path.normpath(str(self._resolve(p.value))))

    def _exists_or_report(self, node: ast.Call, p: str, what: str) -> Path | None:
        """Return the resolved path if it exists; report a missing input (unless the notebook makes it)."""
        if "://" in p or any(ch in p for ch in "*?[") or p.startswith(("s3:", "gs:", "hdfs:")):
            return None
        full = self._resolve(p)
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
        self._add(None, node.lineno, F.MISSING_FILE,
                  f"{what} reads {p!r}, which does not exist (looked for {str(full)!r})",
                  f"{hint}Check the path before the heavy work starts: "
                  f"`assert Path({p!r}).exists(), 'missing input'`", severity="error")
        return None

    def _read_path(self, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> None:
        p = self._path_arg(args, kw)
        mode = self._arg(args, kw, 1, "mode")
        if p is None or (isinstance(mode, Const) and isinstance(mode.value, str) and set(mode.value) & set("wax")):
            return
        self._exists_or_report(node, p, "`open`")

    def _np_load(self, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
        p = self._path_arg(args, kw)
        if p is None:
            return None
        full = self._exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
        if full is None or q != "numpy.load" or full.suffix != ".npy":
            return None
        mmap = self._arg(args, kw, 1, "mmap_mode")
        head = self.ctx.npy_header(full)
        if head is None:
            return None
        shape, dt, nbytes = head
        obj = Obj("array", shape, dtype_itemsize(dt) or 8, dt)
        if isinstance(mmap, Const) and mmap.value:
            return Obj("array", shape, obj.itemsize, dt)  # mapped: pages come and go, like a view
        return self._new(obj, node)

    def _read(self, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
        reader = q.rsplit(".", 1)[-1]
        p = self._path_arg(args, kw)
        if p is None:
            return None
        full = self._exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
        if full is None or not full.is_file():
            return None
        literal = {k: v.value for k, v in kw.items() if isinstance(v, Const)}
        for k, v in kw.items():
            if isinstance(v, dict) and "__dict__" in v and all(isinstance(a, Const) and isinstance(b, Const) for a, b in v["__dict__"]):
                literal[k] = {a.value: b.value for a, b in v["__dict__"]}
        if "chunksize" in kw or literal.get("iterator"):
            return None  # already streamed
        if reader not in ("read_csv", "read_table", "read_json", "read_parquet"):
            return None
        est = self.ctx.read_estimator(reader, full, literal)
        if est is None or est.bytes is None:
            return None
        nbytes, rows = est.bytes, est.rows
        nrows = literal.get("nrows")
        if isinstance(nrows, int) and rows and nrows < rows:
            nbytes, rows = int(est.bytes * nrows / rows), nrows
        obj = Obj("frame", None, None, None, nbytes, label=ast.unparse(node), rows=rows)
        self._new(obj, node)
        if nbytes > LARGE_SHARE * self.budget:
            self._big_read(node, reader, p, est, nbytes)
            obj.fatal = nbytes > self.usable
            self.stmt_allocs = [a for a in self.stmt_allocs if a.obj is not obj]  # reported here, not as an allocation
            self.alloc_log.append((self._pos(node), nbytes, obj))
        return obj

    def _big_read(self, node: ast.Call, reader: str, p: str, est: ReadEstimate, nbytes: int) -> None:
        over = nbytes > self.usable
        fn = ast.unparse(node.func)
        details: dict[str, Any] = {"rows": est.rows, "bytes_per_row": round(est.bytes_per_row or 0, 1),
                                   "file_bytes": est.file_bytes}
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
            top = sorted(est.columns, key=lambda c: -c.bytes)[:3]
            share = ", ".join(f"{c.name!r} {format_bytes(c.bytes)}" for c in top)
            lines.append(f"load only the columns you use: `usecols=[...]` (biggest: {share})")
        if over and (shrunk is None or shrunk * nbytes / max(1, est.bytes) > LARGE_SHARE * self.budget):
            lines.append(f"or let an out-of-core engine do the work and load only the result: "
                         f"`duckdb.sql(\"SELECT ... FROM '{p}' GROUP BY ...\").df()` or "
                         f"`pl.scan_{'csv' if reader in ('read_csv', 'read_table') else reader[5:]}({p!r}).filter(...).collect()`")
            details["out_of_core"] = True
        verdict = self._over_text() if over else (f"over {int(LARGE_SHARE * 100)}% of the budget "
                                                  f"({format_bytes(self.ctx.budget_bytes)}, {self.ctx.budget_source})")
        rows = f"~{est.rows:,} rows, " if est.rows else ""
        self._add(None, node.lineno, F.BIG_READ,
                  f"`{fn}({p!r})` needs about {format_bytes(nbytes)} in memory ({rows}file {format_bytes(est.file_bytes)}), "
                  f"{verdict}",
                  "; ".join(lines) or "read less of it", estimate=nbytes, severity="error" if over else "warning",
                  basis=est.basis, details=details)

    def _memmap(self, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
        p = self._path_arg(args, kw)
        if q == "numpy.memmap":
            dtype_v, mode_v, shape_v = self._arg(args, kw, 1, "dtype"), self._arg(args, kw, 2, "mode"), self._arg(args, kw, 4, "shape")
            item, dt = self._dtype(dtype_v, "uint8")
            default_mode = "r+"
        else:
            mode_v, dtype_v, shape_v = self._arg(args, kw, 1, "mode"), self._arg(args, kw, 2, "dtype"), self._arg(args, kw, 3, "shape")
            item, dt = self._dtype(dtype_v, "float64")
            default_mode = "r+"
        mode = mode_v.value if isinstance(mode_v, Const) else default_mode if mode_v is None else None
        shape = self._shape(shape_v)
        if p is None:
            return None
        if mode in ("r", "r+", "c"):
            self._exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
        if shape is None:
            return Obj("memmap", None, item, dt)
        obj = Obj("memmap", shape, item, dt)  # file-backed: its size is on disk, not in the budget
        size = obj.size
        if mode != "w+" or size is None:
            return obj
        full = self._resolve(p)
        free, mount, fstype = self.ctx.fs_info(full.parent)
        existing = full.stat().st_size if full.exists() else 0
        if free is not None and size > free + existing:
            where = f"{mount} ({fstype})" if mount else str(full.parent)
            self._add(None, node.lineno, F.MEMMAP_DISK,
                      f"`{ast.unparse(node.func)}({p!r}, mode='w+')` maps {format_bytes(size)} but {where} has only "
                      f"{format_bytes(free)} free: the file is sparse, so this line succeeds, and the kernel dies with "
                      "SIGBUS when the writes reach the end of the free space",
                      f"put the file on a filesystem with at least {format_bytes(size)} free, or make it smaller "
                      f"({'float32 halves it; ' if item == 8 else ''}process it in blocks); check first: "
                      f"`shutil.disk_usage({os.path.dirname(p) or '.'!r}).free`",
                      estimate=size, severity="error", basis=f"shape x itemsize; free space by statvfs of {where}",
                      details={"free_bytes": free, "mount": mount, "fstype": fstype})
        elif fstype in ("tmpfs", "ramfs") and size > LARGE_SHARE * self.budget:
            self._add(None, node.lineno, F.BIG_ALLOCATION,
                      f"`{p}` is on {fstype} ({mount}): a memmap there is memory, not disk, and its {format_bytes(size)} "
                      "count against the memory budget (and stay charged after the kernel dies)",
                      "put the file on a real disk (not /dev/shm or a tmpfs /tmp)", estimate=size,
                      severity="error" if size > self.usable else "warning")
        return obj

    # -- checks on statements ------------------------------------------------------------------

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
            self.alloc_log.append((self._pos(node), a.size, a.obj))
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
        shape = f"{_shape_text(o.shape)} {o.dtype or ''} ".replace("  ", " ") if o.shape else ""
        self._add(None, node.lineno, F.BIG_ALLOCATION,
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
            tips.append(f"or keep it on disk: `np.memmap(path, dtype=..., mode='w+', shape={_shape_text(o.shape) if o.shape else '...'})` "
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
        self._add(None, node.lineno, F.KEPT_BY_OUT,
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
        self._add(None, node.lineno, F.GROWS_IN_LOOP,
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
        self._add(None, node.lineno, F.GROWS_IN_LOOP,
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
                self._add(None, n.lineno, F.UNBOUNDED_GROWTH,
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
            self._add(None, b.last_use_line, F.HELD_AFTER_USE,
                      f"`{name}` ({format_bytes(size)}) is last used here ({where}) but stays alive to the end, while later "
                      f"code allocates up to {format_bytes(peak)} more",
                      f"free it after its last use: `del {name}`" + (" (and do not leave it as a cell's last expression, "
                                                                    "or `Out` keeps it)" if self.ctx.notebook else ""),
                      estimate=size, severity="warning", cell_index=b.last_use_cell)


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


def _canonical(q: str) -> str:
    """Return one name for numpy/pandas aliases (``numpy.random.mtrand.rand`` -> ``numpy.random.rand``)."""
    q = q.replace("numpy.random.mtrand.", "numpy.random.").replace("numpy.core.", "numpy.")
    q = q.replace("numpy.random.RandomState.", "numpy.random.")
    if q.startswith("numpy.random.Generator.") and q.rsplit(".", 1)[-1] not in _FLOAT_RANDOM | _INT_RANDOM:
        return q
    q = q.replace("pandas.core.frame.", "pandas.").replace("pandas.io.parsers.", "pandas.")
    return q


def _shape_text(shape: tuple | None) -> str:
    if not shape:
        return "?"
    inner = ", ".join("?" if d is None else format_int(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _matmul(a: Obj, b: Obj) -> Obj | None:
    if a.shape is None or b.shape is None or len(a.shape) < 1 or len(b.shape) < 1:
        return None
    if len(a.shape) == 1 and len(b.shape) == 1:
        return None
    rows = a.shape[:-1]
    cols = b.shape[-1:] if len(b.shape) >= 2 else ()
    return Obj("array", tuple(rows) + tuple(cols), max(a.itemsize or 8, b.itemsize or 8), None)


def _reduce(o: Obj, axis: Any) -> Obj | None:
    if o.shape is None:
        return None
    if axis is None:
        return None  # a scalar
    if isinstance(axis, Const) and isinstance(axis.value, int):
        ax = axis.value % len(o.shape) if o.shape else 0
        return Obj("array", tuple(d for i, d in enumerate(o.shape) if i != ax), o.itemsize, o.dtype)
    return None


def live_obj(value: Any, name: str = "") -> Obj | None:
    """Return an Obj for a live numpy array, pandas object or big list, marked as already paid for."""
    mod = type(value).__module__ or ""
    try:
        if mod.startswith("numpy") and hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "nbytes"):
            return Obj("array", tuple(value.shape), int(value.dtype.itemsize), str(value.dtype), preexisting=True, label=name)
        if mod.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series"):
            from .estimate import frame_footprint

            df = value if type(value).__name__ == "DataFrame" else value.to_frame()
            kind = "frame" if type(value).__name__ == "DataFrame" else "series"
            return Obj(kind, None, None, None, frame_footprint(df), preexisting=True, label=name, rows=len(value))
    except Exception:  # an object whose size cannot be read is simply unknown
        return None
    return None


def analyze(cells: list[Cell], ctx: Context) -> list[Finding]:
    """Return the findings for one file's cells under ``ctx`` (the pure entry point of the checks)."""
    return Analyzer(ctx).run(cells)
