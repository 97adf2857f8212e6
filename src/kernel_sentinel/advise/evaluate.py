"""The evaluator: take a file's cells, walk them in order, return what each name holds (no user code runs).

One walk over all cells keeps a small abstract state: constants (``n = 20_000``), imported module
aliases (``np``, ``pd``), and objects whose size is known (arrays from literal shapes, DataFrames from
file estimates or from arrays, live objects in ``%sentinel check``). What a library's calls make is its
model's answer (``models/``); what is wrong with it is the checks' (``checks.py``, through the hooks at
the end of ``Evaluator``). I/O (file sizes, samples, free disk space) comes in through ``Context``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from . import findings as F
from .estimate import ReadEstimate, dtype_itemsize
from .findings import Finding
from .models import MODELS, MODULES, canonical, live_obj, live_ref, model_of
from .source import Cell
from .values import KERNEL_OVERHEAD, UNHANDLED, Alloc, Binding, Const, Context, Obj, Pos, Ref, broadcast, matmul, prod

PATH_KW = ("filepath_or_buffer", "path_or_buf", "path", "io", "fname", "file", "filename", "filepath", "path_or_buffer")
WRITE_HINTS = ("to_", "save", "write", "dump", "download", "retrieve", "urlretrieve", "copy", "move", "extract",
                "unpack", "savez", "tofile", "mkdir", "touch", "symlink", "rename")


class Evaluator:
    """Walks cells in order, keeping what each name holds; collects findings the checks add."""

    def __init__(self, ctx: Context) -> None:
        """Start an empty walk for one file under ``ctx`` (a live namespace is read in first)."""
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
                self.add(cell, line, F.SYNTAX_ERROR, f"this cell is not valid Python: {exc.msg}",
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
                    if mod.startswith(MODULES):
                        self.env[name] = Ref(canonical(f"{mod.split('.')[0]}.{getattr(value, '__name__', name)}"))
                elif live_ref(value) is not None:
                    self.env[name] = live_ref(value)

    # -- findings ------------------------------------------------------------------------------

    def add(self, cell: Cell | None, line: int, kind: str, message: str, remedy: str, *, estimate: int | None = None,
            severity: str = "error", basis: str | None = None, details: dict[str, Any] | None = None,
            cell_index: int | None | str = "current") -> None:
        """Record a finding at ``line`` of the current cell (or of ``cell_index``), with that line's code."""
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

    def pos(self, node: ast.AST) -> Pos:
        """Return where ``node`` is, in walk order (cell sequence number, line)."""
        return (self.seq, getattr(node, "lineno", 0))

    # -- statements ----------------------------------------------------------------------------

    def stmt(self, node: ast.stmt, last: bool = False) -> None:
        """Walk one statement: bind names, evaluate expressions, run the checks on it."""
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
                    self._end_binding(t.id, self.pos(node), "del")
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
        """Return the value of an expression evaluated as a statement of its own (its allocations checked)."""
        self.stmt_allocs = []
        value = self.ev(expr)
        self._alloc_check(node)
        return value

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        """Bind imported modules and names to the qualified names they stand for."""
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    self.env[a.asname] = Ref(a.name)
                else:
                    self.env[a.name.split(".")[0]] = Ref(a.name.split(".")[0])
        else:
            mod = node.module or ""
            for a in node.names:
                self.env[a.asname or a.name] = Ref(canonical(f"{mod}.{a.name}"))

    def _assign(self, node: ast.Assign) -> None:
        """Evaluate an assignment and bind its targets (growth-in-loop and allocation checks on it)."""
        self.stmt_allocs = []
        self._grows_check(node)
        value = self.ev(node.value)
        self._alloc_check(node)
        for t in node.targets:
            self._bind(t, value, node)

    def _bind(self, target: ast.expr, value: Any, node: ast.stmt) -> None:
        """Bind ``target`` to ``value``; remember sized objects bound at top level (for held-after-use)."""
        if isinstance(target, ast.Name):
            self._end_binding(target.id, self.pos(node), "rebind")
            self.env[target.id] = value
            if isinstance(value, Obj) and not self.in_function and value.size and value.kind != "memmap":
                self.bindings[target.id] = Binding(target.id, value, self.pos(node), self.cell.index if self.cell else None,
                                                   self.pos(node), self.cell.index if self.cell else None, node.lineno)
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
        """Close the binding of ``name`` (``del`` or rebinding), for the checks that look back."""
        b = self.bindings.pop(name, None)
        if b is None:
            return
        self.closed.append((b, pos, how))
        self._dropped(b, name, pos, how)

    def _augassign(self, node: ast.AugAssign) -> None:
        """Evaluate ``x op= y``: constants fold, arrays stay (in place), strings grown in a loop are reported."""
        self.stmt_allocs = []
        target = node.target
        cur = self.env.get(target.id) if isinstance(target, ast.Name) else None
        value = self.ev(node.value)
        self._alloc_check(node)
        if not isinstance(target, ast.Name):
            self.ev(target)
            return
        self.use(target.id, node)
        if self.loops:
            if isinstance(cur, Const) and isinstance(cur.value, str) and isinstance(node.op, ast.Add) and not self.in_function:
                self._string_grows(node, target.id)
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
        """Walk a loop once: its length when known; names it changes become unknown."""
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
        """Return the qualified name ``node`` stands for (``np.random.rand`` -> ``numpy.random.rand``), or None."""
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
            return canonical(f"{base}.{node.attr}") if base else None
        return None

    def use(self, name: str, node: ast.AST) -> None:
        """Note a use of ``name`` (for held-after-use)."""
        b = self.bindings.get(name)
        if b is not None and not self.in_function:
            b.last_use = self.pos(node)
            b.last_use_cell = self.cell.index if self.cell else None
            b.last_use_line = getattr(node, "lineno", b.last_use_line)

    def new(self, obj: Obj | None, node: ast.AST) -> Obj | None:
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
        """Return the abstract value of ``node`` (may recurse deeply: ``ev`` guards that)."""
        if isinstance(node, ast.Constant):
            return Const(node.value)
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.use(node.id, node)
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
                return self.new(Obj(v.kind, v.shape, v.itemsize if not isinstance(node.op, ast.Not) else 1,
                                     v.dtype, None if v.shape else v.nbytes), node)
            return None
        if isinstance(node, ast.Compare):
            vals = [self.ev(node.left)] + [self.ev(c) for c in node.comparators]
            objs = [v for v in vals if isinstance(v, Obj)]
            if objs and objs[0].shape is not None:
                return self.new(Obj("array", objs[0].shape, 1, "bool"), node)
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
        """Return the constant ``a op b``, or None when it is not worth (or safe) computing."""
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
        """Return the value of a binary operation: folded constants, broadcast arrays, frames."""
        a, b = self.ev(node.left), self.ev(node.right)
        if isinstance(a, Const) and isinstance(b, Const):
            return self._const_binop(node.op, a.value, b.value)
        if isinstance(node.op, ast.MatMult) and isinstance(a, Obj) and isinstance(b, Obj):
            return self.new(matmul(a, b), node)
        oa, ob = (a if isinstance(a, Obj) else None), (b if isinstance(b, Obj) else None)
        if oa is None and ob is None:
            return None
        if oa is not None and ob is not None:
            if oa.kind in ("frame", "series") or ob.kind in ("frame", "series"):
                big = oa if (oa.size or 0) >= (ob.size or 0) else ob
                return self.new(Obj(big.kind, big.shape, big.itemsize, big.dtype, big.size, rows=big.rows), node)
            shape = broadcast(oa.shape, ob.shape)
            item = max(oa.itemsize or 8, ob.itemsize or 8)
            if isinstance(node.op, ast.Div):
                item = max(item, 8) if (oa.itemsize or 8) >= 8 else item
            return self.new(Obj("array", shape, item, None), node) if shape is not None else None
        o = oa or ob
        assert o is not None
        item = o.itemsize
        if isinstance(node.op, ast.Div) and item is not None and item < 8 and o.dtype and o.dtype.startswith(("int", "uint", "bool")):
            item = 8
        if o.kind in ("frame", "series"):
            return self.new(Obj(o.kind, o.shape, o.itemsize, o.dtype, o.size, rows=o.rows), node)
        if o.kind == "array":
            return self.new(Obj("array", o.shape, item, o.dtype), node)
        return None

    def _attribute(self, node: ast.Attribute) -> Any:
        """Return the value of ``x.attr``: a sized object's ``T``/``shape``/``size``/``nbytes``, or a qualified name."""
        base = self.ev(node.value)
        if isinstance(base, Obj):
            if node.attr == "T" and base.shape is not None:
                return Obj(base.kind, tuple(reversed(base.shape)), base.itemsize, base.dtype, base.nbytes)
            if node.attr == "shape" and base.shape is not None and all(d is not None for d in base.shape):
                return Const(tuple(base.shape))
            if node.attr in ("size",) and base.shape is not None and prod(base.shape) is not None:
                return Const(prod(base.shape))
            if node.attr in ("nbytes",) and base.size:
                return Const(base.size)
            if node.attr == "values":
                return base
            return None
        if isinstance(base, Ref):
            return Ref(canonical(f"{base.qual}.{node.attr}"))
        return None

    def _subscript(self, node: ast.Subscript) -> Any:
        """Return the value of ``x[...]``: constants indexed, array views (no new memory)."""
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
        """Return the values of a call's positional and keyword arguments."""
        args = [self.ev(a) for a in node.args if not isinstance(a, ast.Starred)]
        kw = {k.arg: self.ev(k.value) for k in node.keywords if k.arg}
        return args, kw

    def _call(self, node: ast.Call) -> Any:
        """Return the value of a call: a known function's (library models), or a sized object's method."""
        q = self.qual(node.func)
        method_base = None
        if q is None and isinstance(node.func, ast.Attribute):
            method_base = self.ev(node.func.value)
        args, kw = self._args(node)
        if q:
            return self._known_call(q, node, args, kw)
        if isinstance(method_base, Obj):
            return self._method(method_base, node.func.attr, node, args, kw)  # type: ignore[union-attr]
        self.write_call(node, args)
        return None

    def arg(self, args: list[Any], kw: dict[str, Any], pos: int | None, *names: str) -> Any:
        """Return the argument given by keyword (any of ``names``) or at position ``pos``, or None."""
        for n in names:
            if n in kw:
                return kw[n]
        if pos is not None and pos < len(args):
            return args[pos]
        return None

    def shape_of(self, v: Any) -> tuple[int | None, ...] | None:
        """Return a shape from a value (an int, a tuple, a tuple with unknown parts), or None."""
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

    def dtype_of(self, v: Any, default: str = "float64") -> tuple[int | None, str | None]:
        """Return (itemsize, dtype name) of a dtype argument (``default`` when absent), (None, None) if unknown."""
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
        """Return the value of a call to a known name: builtins, paths and math here, libraries by their model."""
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
        model = model_of(q)
        if model is not None:
            return model.call(self, q, name, node, args, kw)
        self.write_call(node, args)
        return None

    def _method(self, base: Obj, attr: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the value of a method of a sized object: copies, the library model's methods, ``dot``."""
        if attr in ("copy", "cumsum", "cumprod", "fillna", "abs", "round", "clip", "flatten", "ravel"):
            if attr == "ravel":
                return Obj(base.kind, (prod(base.shape),) if base.shape else None, base.itemsize, base.dtype, base.nbytes)
            return self.new(Obj(base.kind, base.shape, base.itemsize, base.dtype, base.nbytes, rows=base.rows), node)
        for model in MODELS:
            value = model.method(self, base, attr, node, args, kw)
            if value is not UNHANDLED:
                return value
        if attr == "dot" and args and isinstance(args[0], Obj):
            return self.new(matmul(base, args[0]), node)
        if attr in ("to_numpy",):
            return base
        self.write_call(node, args)
        return None

    # -- reads, writes and files ---------------------------------------------------------------

    def path_arg(self, args: list[Any], kw: dict[str, Any]) -> str | None:
        """Return a reader's path argument when it is a known string."""
        v = self.arg(args, kw, 0, *PATH_KW)
        if isinstance(v, Const) and isinstance(v.value, str):
            return v.value
        return None

    def resolve(self, p: str) -> Path:
        """Return ``p`` resolved against the file's folder (``~`` expanded)."""
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else self.ctx.base_dir / path

    def write_call(self, node: ast.Call, args: list[Any]) -> None:
        """Remember paths a call that looks like a write (``to_csv``, ``save``...) produces."""
        fn = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id if isinstance(node.func, ast.Name) else ""
        if any(h in fn.lower() for h in WRITE_HINTS):
            for a in list(args) + [self.ev(k.value) for k in node.keywords]:
                if isinstance(a, Const) and isinstance(a.value, str):
                    self.produced.add(os.path.normpath(str(self.resolve(a.value))))

    def _produced_paths(self, tree: ast.AST) -> None:
        """Remember files this cell writes (``open(p, 'w')``, ``df.to_csv(p)``) so later reads of them are fine."""
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open":
                mode = n.args[1] if len(n.args) > 1 else next((k.value for k in n.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax"):
                    p = self.ev(n.args[0]) if n.args else None
                    if isinstance(p, Const) and isinstance(p.value, str):
                        self.produced.add(os.path.normpath(str(self.resolve(p.value))))

    def _read_path(self, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> None:
        """Report ``open(p)`` of a missing file (reads only)."""
        p = self.path_arg(args, kw)
        mode = self.arg(args, kw, 1, "mode")
        if p is None or (isinstance(mode, Const) and isinstance(mode.value, str) and set(mode.value) & set("wax")):
            return
        self.exists_or_report(node, p, "`open`")

    # -- the checks' hooks (the checks override them; a bare evaluator checks nothing) -----------

    def exists_or_report(self, node: ast.Call, p: str, what: str) -> Path | None:
        """Return the resolved path of an input when it exists (the checks also report a missing one)."""
        full = self.resolve(p)
        return full if full.exists() else None

    def big_read(self, node: ast.Call, reader: str, p: str, est: ReadEstimate, obj: Obj) -> None:
        """A file read into memory, of ``obj.nbytes`` (the checks report one over half the budget)."""

    def mapped_file(self, node: ast.Call, p: str, size: int, itemsize: int | None) -> None:
        """A file mapped for writing (``mode='w+'``), ``size`` bytes (the checks compare with free space)."""

    def _dropped(self, b: Binding, name: str, pos: Pos, how: str) -> None:
        """A binding closed by ``del`` or rebinding (the checks look at whether Out still holds it)."""

    def _string_grows(self, node: ast.AugAssign, name: str) -> None:
        """``name += ...`` on a string inside a loop."""

    def _alloc_check(self, node: ast.stmt) -> None:
        """The statement ``node`` is evaluated: its allocations are in ``stmt_allocs`` (the checks clear them)."""
        self.stmt_allocs = []

    def _grows_check(self, node: ast.Assign) -> None:
        """An assignment in a loop, before it is evaluated."""

    def _out_check(self, node: ast.Expr, value: Any) -> None:
        """A cell's last expression, which IPython's Out cache keeps."""

    def _loop_append(self, node: ast.Expr) -> None:
        """An expression statement inside a loop (``x.append(...)``)."""

    def _unbounded_check(self, node: ast.While) -> None:
        """A ``while`` loop, before its body."""

    def _held_after_use(self) -> None:
        """The walk is over (the checks look back at what stayed alive)."""
