"""Library models: take a call into a library (``numpy.zeros``, ``pandas.read_csv``), return the abstract value it makes.

One module per library here, each defining ``MODEL``, a ``LibraryModel``; they are found by listing this
package, so modelling one more library (polars, duckdb) is one new file. A model knows its library's
names (``canonical``), what its calls allocate (``call``), its objects' methods (``method``), and how
big a live object of it is (``live``); the checks stay library-neutral.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from typing import Any

from ..values import UNHANDLED, Obj, Ref


class LibraryModel:
    """What the evaluator asks a library about; every answer defaults to "not mine" (``UNHANDLED``/None)."""

    MODULE = ""  # the top-level module name: calls under ``MODULE.`` go to ``call``

    def canonical(self, q: str) -> str:
        """Return one qualified name for the library's aliases (``numpy.core.zeros`` -> ``numpy.zeros``)."""
        return q

    def call(self, ev: Any, q: str, name: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the value of calling ``q`` (under ``MODULE.``), recording allocations through ``ev.new``."""
        return UNHANDLED

    def method(self, ev: Any, base: Obj, attr: str, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> Any:
        """Return the value of ``base.attr(...)`` when it is this library's object's method, else ``UNHANDLED``."""
        return UNHANDLED

    def live(self, value: Any, name: str) -> Obj | None:
        """Return an ``Obj`` for a live object of this library (already paid for), or None."""
        return None

    def live_ref(self, value: Any) -> Ref | None:
        """Return a ``Ref`` for a live non-sized object the evaluator should know by name (a random generator)."""
        return None


def input_file(ev: Any, node: ast.Call, args: list[Any], kw: dict[str, Any]) -> tuple[str, Any] | None:
    """Return (path as written, resolved path) of a reader's existing input file; None (a missing one reported)."""
    p = ev.path_arg(args, kw)
    if p is None:
        return None
    full = ev.exists_or_report(node, p, f"`{ast.unparse(node.func)}`")
    if full is None or not full.is_file():
        return None
    return p, full


def limited(nbytes: int, rows: int | None, limit: Any) -> tuple[int, int | None]:
    """Return (bytes, rows) of a whole-file estimate cut to the first ``limit`` rows (``nrows=``/``n_rows=``)."""
    if isinstance(limit, int) and rows and limit < rows:
        return int(nbytes * limit / rows), limit
    return nbytes, rows


def read_frame(ev: Any, node: ast.Call, reader: str, p: str, est: Any, nbytes: int, rows: int | None) -> Obj:
    """Record the frame a read makes (``ev.new``) and hand it to the checks (over half the budget: reported)."""
    obj = Obj("frame", None, None, None, nbytes, label=ast.unparse(node), rows=rows)
    ev.new(obj, node)
    ev.big_read(node, reader, p, est, obj)
    return obj


def _discover() -> tuple[LibraryModel, ...]:
    """Return the ``MODEL`` of every module in this package, by module name."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        model = getattr(module, "MODEL", None)
        if isinstance(model, LibraryModel):
            found.append(model)
    return tuple(found)


MODELS: tuple[LibraryModel, ...] = _discover()
MODULES: tuple[str, ...] = tuple(m.MODULE for m in MODELS)


def model_of(q: str) -> LibraryModel | None:
    """Return the model of the library ``q`` is in (``numpy.random.rand`` -> numpy's), or None."""
    for m in MODELS:
        if q.startswith(m.MODULE + "."):
            return m
    return None


def canonical(q: str) -> str:
    """Return one name for every library's aliases (``numpy.random.mtrand.rand`` -> ``numpy.random.rand``)."""
    for m in MODELS:
        q = m.canonical(q)
    return q


def live_obj(value: Any, name: str = "") -> Obj | None:
    """Return an Obj for a live array, frame or other sized library object, marked as already paid for."""
    for m in MODELS:
        try:
            obj = m.live(value, name)
        except Exception:  # an object whose size cannot be read is simply unknown
            return None
        if obj is not None:
            return obj
    return None


def live_ref(value: Any) -> Ref | None:
    """Return the Ref a library model gives a live object (a numpy random generator), or None."""
    for m in MODELS:
        ref = m.live_ref(value)
        if ref is not None:
            return ref
    return None
