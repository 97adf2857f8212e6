"""numpy's model: take a numpy call or array method, return the array it makes (shape, dtype, itemsize).

``np.zeros/ones/empty/full(_like)``, ``np.random.*`` (legacy and Generator), ``arange``, ``linspace``,
``eye``, ``outer``, ``meshgrid``, ``tile``, ``repeat``, ``dot``/``matmul``, the stacking functions,
elementwise ufuncs and reductions, ``np.load`` (.npy headers), ``np.memmap``/``open_memmap``; live
``ndarray`` objects by their shape and dtype.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from ..values import UNHANDLED, Const, Obj, Ref, broadcast, matmul, prod, reduce_obj
from ..estimate import dtype_itemsize
from . import LibraryModel

FLOAT_RANDOM = {"rand", "randn", "random", "random_sample", "ranf", "sample", "standard_normal", "normal",
                 "uniform", "exponential", "standard_exponential", "lognormal", "gamma", "beta", "laplace"}
INT_RANDOM = {"randint", "integers", "poisson", "binomial", "choice", "permutation", "random_integers"}
RANDOM_SIZE_POS = {"random": 0, "random_sample": 0, "ranf": 0, "sample": 0, "standard_normal": 0,
                    "standard_exponential": 0, "normal": 2, "uniform": 2, "exponential": 1, "lognormal": 2,
                    "gamma": 2, "beta": 2, "laplace": 2, "randint": 2, "integers": 2, "poisson": 1, "binomial": 2,
                    "choice": 1, "random_integers": 2}
ELEMENTWISE = {"sqrt", "exp", "log", "log1p", "log2", "log10", "abs", "absolute", "sin", "cos", "tan", "tanh",
                "square", "negative", "clip", "where", "maximum", "minimum", "add", "subtract", "multiply", "divide",
                "power", "floor", "ceil", "round", "isnan", "isfinite", "sign", "cumsum", "cumprod", "sort",
                "nan_to_num", "expm1", "arctan", "arcsin", "arccos", "hypot", "true_divide", "copy"}
REDUCE = {"sum", "mean", "std", "var", "max", "min", "prod", "median", "argmax", "argmin", "any", "all", "nansum",
           "nanmean", "nanmax", "nanmin", "nanstd", "norm"}


class NumpyModel(LibraryModel):
    """The numpy model."""

    MODULE = "numpy"

    def canonical(self, q: str) -> str:
        """Return one name for numpy's aliases (``numpy.random.mtrand.rand`` -> ``numpy.random.rand``)."""
        q = q.replace("numpy.random.mtrand.", "numpy.random.").replace("numpy.core.", "numpy.")
        return q.replace("numpy.random.RandomState.", "numpy.random.")

    def call(self, ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the value of a numpy call: a loaded file, a memmap, or a new array (recorded by ``ev.new``)."""
        if not q.startswith("numpy."):
            return UNHANDLED
        if q in ("numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile"):
            return load(ev, node, q, args, kw)
        if q in ("numpy.memmap", "numpy.lib.format.open_memmap"):
            return memmap(ev, node, q, args, kw)
        return ev.new(alloc(ev, q, name, node, args, kw), node)

    def method(self, ev: Any, base: Obj, attr: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return what an array's ``astype``, ``reshape`` or reduction makes; ``UNHANDLED`` for the rest."""
        if base.kind != "array":
            return UNHANDLED
        if attr == "astype":
            item, dt = ev.dtype_of(ev.arg(args, kw, 0, "dtype"))
            return ev.new(Obj("array", base.shape, item, dt), node)
        if attr == "reshape" and base.shape is not None:
            shape = ev.shape_of(args[0]) if len(args) == 1 else ev.shape_of(list(args))
            if shape and None not in shape and -1 not in shape:
                return Obj("array", shape, base.itemsize, base.dtype)
            if shape and shape.count(-1) == 1 and prod(base.shape):
                known = math.prod(d for d in shape if d != -1 and d is not None)
                if known:
                    return Obj("array", tuple(prod(base.shape) // known if d == -1 else d for d in shape),  # type: ignore[operator]
                               base.itemsize, base.dtype)
            return None
        if attr in REDUCE:
            return reduce_obj(base, ev.arg(args, kw, 0, "axis"))
        return UNHANDLED

    def live(self, value: Any, name: str) -> Obj | None:
        """Return an Obj for a live ndarray (its shape and dtype), already paid for."""
        mod = type(value).__module__ or ""
        if mod.startswith("numpy") and hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "nbytes"):
            return Obj("array", tuple(value.shape), int(value.dtype.itemsize), str(value.dtype), preexisting=True, label=name)
        return None

    def live_ref(self, value: Any) -> Ref | None:
        """Return ``numpy.random.Generator``/``RandomState`` for a live random generator."""
        if type(value).__name__ in ("Generator", "RandomState") and type(value).__module__.startswith("numpy"):
            return Ref(f"numpy.random.{type(value).__name__}")
        return None


MODEL = NumpyModel()


def alloc(ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
    """Return the array (or Ref, or list of arrays) a numpy allocating call makes, or None when unknown."""
    if q in ("numpy.random.default_rng", "numpy.random.Generator"):
        return Ref("numpy.random.Generator")
    if q == "numpy.random.RandomState":
        return Ref("numpy.random.RandomState")
    if q in ("numpy.zeros", "numpy.ones", "numpy.empty"):
        shape = ev.shape_of(ev.arg(args, kw, 0, "shape"))
        item, dt = ev.dtype_of(ev.arg(args, kw, 1, "dtype"))
        return Obj("array", shape, item, dt) if shape else None
    if q == "numpy.full":
        shape = ev.shape_of(ev.arg(args, kw, 0, "shape"))
        fill = ev.arg(args, kw, 1, "fill_value")
        default = "float64"
        if isinstance(fill, Const):
            default = "bool" if isinstance(fill.value, bool) else "int64" if isinstance(fill.value, int) else "float64"
        item, dt = ev.dtype_of(ev.arg(args, kw, 2, "dtype"), default)
        return Obj("array", shape, item, dt) if shape else None
    if q in ("numpy.zeros_like", "numpy.ones_like", "numpy.empty_like", "numpy.full_like", "numpy.copy",
             "numpy.array", "numpy.ascontiguousarray"):
        src = args[0] if args else None
        if isinstance(src, Obj) and src.kind == "array":
            if q == "numpy.array" and ev.arg(args, kw, None, "copy") == Const(False):
                return None
            d = ev.arg(args, kw, None, "dtype")
            item, dt = ev.dtype_of(d) if d is not None else (src.itemsize, src.dtype)
            return Obj("array", src.shape, item, dt)
        return None
    if q.startswith("numpy.random.") and name in FLOAT_RANDOM | INT_RANDOM:
        legacy = not q.startswith(("numpy.random.Generator.",))
        if name in ("rand", "randn"):
            shape = ev.shape_of(Const(tuple(a.value for a in args))) if args and all(isinstance(a, Const) for a in args) else None
            if args and shape is None:
                shape = ev.shape_of(list(args))
            return Obj("array", shape, 8, "float64") if shape else None
        pos = RANDOM_SIZE_POS.get(name)
        if name == "integers" or (name == "randint"):
            pos = 2
        if name == "random" and not legacy:
            pos = 0
        shape = ev.shape_of(ev.arg(args, kw, pos, "size"))
        if shape is None:
            return None
        if name in INT_RANDOM:
            item, dt = ev.dtype_of(ev.arg(args, kw, 3 if name in ("integers", "randint") else None, "dtype"), "int64")
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
        item, dt = ev.dtype_of(kw.get("dtype"), "int64" if isint else "float64")
        return Obj("array", (max(n, 0),), item, dt)
    if q == "numpy.linspace":
        num = ev.arg(args, kw, 2, "num")
        n = num.value if isinstance(num, Const) else 50 if num is None else None
        return Obj("array", (int(n),), 8, "float64") if isinstance(n, (int, float)) else None
    if q in ("numpy.eye", "numpy.identity"):
        n = ev.arg(args, kw, 0, "N", "n")
        m = ev.arg(args, kw, 1, "M") if q == "numpy.eye" else None
        if isinstance(n, Const) and isinstance(n.value, int):
            mm = m.value if isinstance(m, Const) and isinstance(m.value, int) else n.value
            item, dt = ev.dtype_of(kw.get("dtype"))
            return Obj("array", (n.value, mm), item, dt)
        return None
    if q == "numpy.outer" and len(args) >= 2 and all(isinstance(a, Obj) and a.shape for a in args[:2]):
        na, nb = prod(args[0].shape), prod(args[1].shape)
        return Obj("array", (na, nb), max(args[0].itemsize or 8, args[1].itemsize or 8), None)
    if q == "numpy.meshgrid" and args and all(isinstance(a, Obj) and a.shape for a in args):
        dims = tuple(prod(a.shape) for a in args)
        if len(dims) >= 2:
            dims = (dims[1], dims[0]) + dims[2:]
        grids = [ev.new(Obj("array", dims, a.itemsize, a.dtype), node) for a in args]
        return grids
    if q in ("numpy.tile",) and len(args) >= 2 and isinstance(args[0], Obj) and args[0].shape is not None:
        reps = ev.shape_of(args[1])
        if reps and prod(args[0].shape) is not None and prod(reps) is not None:
            return Obj("array", (prod(args[0].shape) * prod(reps),), args[0].itemsize, args[0].dtype)  # type: ignore[operator]
    if q == "numpy.repeat" and len(args) >= 2 and isinstance(args[0], Obj) and isinstance(args[1], Const):
        n = prod(args[0].shape) if args[0].shape else None
        if n is not None and isinstance(args[1].value, int):
            return Obj("array", (n * args[1].value,), args[0].itemsize, args[0].dtype)
    if q in ("numpy.dot", "numpy.matmul") and len(args) >= 2 and all(isinstance(a, Obj) for a in args[:2]):
        return matmul(args[0], args[1])
    if q in ("numpy.concatenate", "numpy.vstack", "numpy.hstack", "numpy.row_stack", "numpy.stack",
             "numpy.column_stack"):
        parts = args[0] if args else None
        if isinstance(parts, list) and parts and all(isinstance(p, Obj) and p.size for p in parts):
            total = sum(p.size for p in parts)  # type: ignore[misc]
            return Obj("array", None, None, None, total)
        return None
    if q.startswith("numpy.") and name in ELEMENTWISE:
        objs = [a for a in args if isinstance(a, Obj)]
        if objs and all(o.kind == "array" for o in objs):
            shape = objs[0].shape
            for o in objs[1:]:
                shape = broadcast(shape, o.shape)
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
    if q.startswith("numpy.") and name in REDUCE:
        if args and isinstance(args[0], Obj):
            return reduce_obj(args[0], ev.arg(args, kw, 1, "axis"))
        return None
    return None


def load(ev: Any, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
    """Return the array ``np.load`` makes of an existing .npy (its header); report a missing input."""
    p = ev.path_arg(args, kw)
    if p is None:
        return None
    full = ev.exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
    if full is None or q != "numpy.load" or full.suffix != ".npy":
        return None
    mmap = ev.arg(args, kw, 1, "mmap_mode")
    head = ev.ctx.npy_header(full)
    if head is None:
        return None
    shape, dt, nbytes = head
    obj = Obj("array", shape, dtype_itemsize(dt) or 8, dt)
    if isinstance(mmap, Const) and mmap.value:
        return Obj("array", shape, obj.itemsize, dt)  # mapped: pages come and go, like a view
    return ev.new(obj, node)


def memmap(ev: Any, node: ast.Call, q: str, args: list[Any], kw: dict[str, Any]) -> Any:
    """Return the memmap (file-backed: not counted in the budget); a new one's file is checked by the checks."""
    p = ev.path_arg(args, kw)
    if q == "numpy.memmap":
        dtype_v, mode_v, shape_v = ev.arg(args, kw, 1, "dtype"), ev.arg(args, kw, 2, "mode"), ev.arg(args, kw, 4, "shape")
        item, dt = ev.dtype_of(dtype_v, "uint8")
        default_mode = "r+"
    else:
        mode_v, dtype_v, shape_v = ev.arg(args, kw, 1, "mode"), ev.arg(args, kw, 2, "dtype"), ev.arg(args, kw, 3, "shape")
        item, dt = ev.dtype_of(dtype_v, "float64")
        default_mode = "r+"
    mode = mode_v.value if isinstance(mode_v, Const) else default_mode if mode_v is None else None
    shape = ev.shape_of(shape_v)
    if p is None:
        return None
    if mode in ("r", "r+", "c"):
        ev.exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
    if shape is None:
        return Obj("memmap", None, item, dt)
    obj = Obj("memmap", shape, item, dt)  # file-backed: its size is on disk, not in the budget
    size = obj.size
    if mode != "w+" or size is None:
        return obj
    ev.mapped_file(node, p, size, item)  # a check: does the file fit where it is?
    return obj
