"""``%sentinel check`` inside a kernel: the same checks, with the live namespace and the live budget.

In a running kernel the budget is the headroom left *now* (what the memory reader says is still
available), and the sizes of existing arrays and DataFrames are read from the objects themselves, so
``D = X[:, None, :] - X[None, :, :]`` is sized from ``X.shape`` and ``X.dtype``.

- ``check_cell_source(ip, code)``: findings for code about to run (the guard can call it before a cell);
- ``check_history(ip)``: findings about the session so far: big results held only by ``Out``, big
  variables not used for several cells, and the checks over the cells already run;
- ``magic_check(magics, args)``: ``%sentinel check [PATH...]``, registered in ``kernel_sentinel.magics``
  (on import here; lazily by ``kernel_sentinel.extension``).

In these findings ``path`` is ``<cell>`` or ``<session>`` and ``cell`` is the execution count (``In[n]``).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

from ..magics import register_subcommand
from ..sizes import format_bytes
from . import findings as F
from .checks import analyze
from .findings import Finding
from .models import live_obj
from .source import Cell, SourceError, python_source
from .values import HELD_SHARE, LIVE_SHARE, Context

IDLE_CELLS = 3  # a big variable untouched for this many cells is worth a `del`


def live_budget() -> tuple[int, str]:
    """Return (bytes still available to this kernel now, where that number comes from)."""
    from ..memory import snapshot
    from ..sizes import SizeError, parse_size

    snap = snapshot(rlimits=False)  # the guard's own fence is an rlimit: not a limit of the machine
    available = snap.available_bytes
    source = f"free now under the {snap.source} limit"
    env = os.environ.get("KERNEL_SENTINEL_MEMORY_LIMIT")
    if env:
        try:
            limit = parse_size(env, of=snap.budget_bytes)
            own = limit - (snap.process.rss_bytes or 0)
            if available is None or own < available:
                available, source = max(0, own), "free now under KERNEL_SENTINEL_MEMORY_LIMIT"
        except SizeError:
            pass
    if available is None:
        available = 0
    return max(1, int(available)), source


def _context(ip: Any, path: str, budget: tuple[int, str] | None, read_estimator: Any = None) -> Context:
    nbytes, source = budget or live_budget()
    ctx = Context(path=path, base_dir=Path(os.getcwd()), budget_bytes=nbytes, budget_source=source,
                  notebook=True, namespace=dict(ip.user_ns))
    if read_estimator is not None:
        ctx.read_estimator = read_estimator
    return ctx


def check_cell_source(
    ip: Any, code: str, *, budget: tuple[int, str] | None = None, read_estimator: Any = None
) -> list[Finding]:
    """Return the findings for ``code`` as if it ran next in this kernel (live namespace, live headroom).

    ``read_estimator`` replaces ``estimate.estimate_read`` (the pre-run check skips files too small to matter).
    """
    count = getattr(ip, "execution_count", None)
    cell = Cell(index=count, source=python_source(code), original=code)
    return analyze([cell], _context(ip, "<cell>", budget, read_estimator))


def _names_in(code: str) -> set[str]:
    try:
        tree = ast.parse(python_source(code))
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_]\w*", code))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def check_history(ip: Any, *, budget: tuple[int, str] | None = None) -> list[Finding]:
    """Return findings about the session so far: ``Out`` holding big results, big idle variables."""
    nbytes, source = budget or live_budget()
    from ..memory import snapshot

    total = snapshot(rlimits=False).budget_bytes or nbytes  # "big" is a share of the whole budget
    ns = ip.user_ns
    history = list(ns.get("In", []))
    count = len(history) - 1
    found: list[Finding] = []
    out = ns.get("Out", {}) or {}
    bound = {id(v) for k, v in ns.items() if not k.startswith("_") and k not in ("In", "Out")}
    for n, value in sorted(out.items()):
        obj = live_obj(value)
        size = obj.size if obj else None
        if not size or size < LIVE_SHARE * total:
            continue
        named = id(value) in bound
        how = "also a variable, so `del` of that variable frees nothing" if named else "no variable names it"
        code = history[n] if 0 <= n < len(history) else ""
        line = max(1, len(code.rstrip().splitlines()))
        found.append(Finding(
            path="<session>", cell=n, line=line, kind=F.KEPT_BY_OUT,
            message=f"`Out[{n}]` holds a {format_bytes(size)} {type(value).__name__} ({how})",
            remedy=f"`del Out[{n}]` (and `_`, `__`, `___` if recent), or `%reset -f out`; end such cells with `;`",
            estimate_bytes=size, budget_bytes=total, severity="warning", code=(code.rstrip().splitlines() or [""])[-1]))
    last_use: dict[str, int] = {}
    for n, code in enumerate(history):
        for name in _names_in(code or ""):
            last_use[name] = n
    for name, value in ns.items():
        if name.startswith("_") or name in ("In", "Out"):
            continue
        obj = live_obj(value, name)
        size = obj.size if obj else None
        if not size or size < HELD_SHARE * total:
            continue
        n = last_use.get(name)
        if n is None or count - n < IDLE_CELLS:
            continue
        found.append(Finding(
            path="<session>", cell=n, line=1, kind=F.HELD_AFTER_USE,
            message=f"`{name}` ({format_bytes(size)}) has not been used since In[{n}], {count - n} cells ago",
            remedy=f"`del {name}` if you are done with it (save it first: `{name}.to_parquet(...)` / `np.save(...)`)",
            estimate_bytes=size, budget_bytes=total, severity="warning"))
    return found


def magic_check(magics: Any, args: list[str]) -> None:
    """``%sentinel check`` (the session so far) or ``%sentinel check PATH...`` (files, against the live headroom)."""
    from ..report.findings_text import render

    ip = magics.shell
    budget = live_budget()
    if not args:
        found = check_history(ip, budget=budget)
    else:
        from .source import load_cells

        found = []
        for arg in args:
            try:
                cells = load_cells(arg)
            except SourceError as exc:
                print(f"%sentinel check: {exc}")
                return
            p = Path(arg)
            ctx = Context(path=arg, base_dir=p.resolve().parent, budget_bytes=budget[0], budget_source=budget[1],
                       notebook=p.suffix == ".ipynb")
            found.extend(analyze(cells, ctx))
    scope = "this session" if not args else len(args)
    print(render(found, budget[0], budget[1], scope).rstrip())


register_subcommand("check", magic_check, "check [PATH...]")
