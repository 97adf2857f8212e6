"""The import direction of the package, read from the AST of every module (lazy imports inside functions included).

- ``report/`` imports ``records`` and nothing else of the package (the standard library and rich besides);
- ``records``, ``sizes``, ``identity`` and ``memory/`` are leaves: they import nothing above them;
- no import cycles anywhere in the package.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import kernel_sentinel

ROOT = Path(kernel_sentinel.__file__).parent
PKG = "kernel_sentinel"


def module_name(path: Path) -> str:
    """Return the dotted name of a file under the package (``report/__init__.py`` -> ``kernel_sentinel.report``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PKG, *parts])


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Return every module ``name`` imports, anywhere in its body: our modules by full name, others by top-level name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in MODULES else source)
    return {m if m.startswith(PKG) else m.split(".")[0] for m in out}


GRAPH = {name: imports_of(name) for name in MODULES}


def ours(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m.startswith(PKG + ".") or m == PKG}


def in_part(name: str, part: str) -> bool:
    full = f"{PKG}.{part}"
    return name == full or name.startswith(full + ".")


def third_party(name: str) -> set[str]:
    return {m for m in GRAPH[name] if not m.startswith(PKG) and m not in sys.stdlib_module_names and m != "__future__"}


def test_the_graph_is_read() -> None:
    assert f"{PKG}.report.death_json" in GRAPH and f"{PKG}.records" in GRAPH[f"{PKG}.report.death_json"]
    assert len(GRAPH) > 60


@pytest.mark.parametrize("name", [m for m in MODULES if in_part(m, "report")])
def test_report_imports_records_only(name: str) -> None:
    bad = {m for m in ours(name) if not (in_part(m, "records") or in_part(m, "report"))}
    assert not bad, f"{name} imports {sorted(bad)}: renderers take records"
    assert third_party(name) <= {"rich"}, f"{name} imports {sorted(third_party(name))}"


def test_the_executor_renders_nothing() -> None:
    """``run/execute.py`` runs a notebook; the CLI picks the renderers (issue 12: it called one itself)."""
    assert not {m for m in ours("kernel_sentinel.run.execute") if in_part(m, "report")}


LEAVES = {"records": {"sizes"}, "sizes": set(), "identity": set(), "errors": set(), "memory": {"sizes", "errors"}}


@pytest.mark.parametrize("part", sorted(LEAVES))
def test_leaves_import_nothing_above_them(part: str) -> None:
    for name in (m for m in MODULES if in_part(m, part)):
        bad = {m for m in ours(name) if not in_part(m, part) and not any(in_part(m, ok) for ok in LEAVES[part])}
        assert not bad, f"{name} imports {sorted(bad)}"


def cycles() -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(ours(v)):
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in ours(v):
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


# Cycles in another stream's files, reported to them in docs/TEAM.md ("Notes between streams"); this test
# fails again when one is fixed (take it out) or a new one appears.
KNOWN_CYCLES = [
    [f"{PKG}.fleet.forward", f"{PKG}.store"],  # fleet: store.py kicks the forwarder, which imports store
]


def test_no_import_cycles() -> None:
    assert sorted(cycles()) == sorted(KNOWN_CYCLES)


def test_the_cycle_finder_finds_a_cycle() -> None:
    saved = dict(GRAPH)
    try:
        GRAPH[f"{PKG}.sizes"] = GRAPH[f"{PKG}.sizes"] | {f"{PKG}.records"}  # records imports sizes: now a circle
        assert [f"{PKG}.records", f"{PKG}.sizes"] in cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
