"""Reading, checking and parameterising a notebook before it runs; marking its cells after. Pure except ``load``.

Every problem with the input becomes a ``RunUsageError`` whose message is the one line the CLI prints
before exiting 64: a user who typed the wrong path must not get a traceback.
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any

import nbformat
from nbformat import NotebookNode

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
META_KEY = "kernel_sentinel"  # cell.metadata[META_KEY] and nb.metadata[META_KEY] carry what we measured


class RunUsageError(ValueError):
    """The input cannot be run as asked; the message is one line for the user (exit 64)."""


def load(path: str) -> NotebookNode:
    """Return the notebook at ``path`` as nbformat v4, or raise RunUsageError saying what is wrong with it."""
    if not os.path.exists(path):
        raise RunUsageError(f"no such notebook: {path}")
    if os.path.isdir(path):
        raise RunUsageError(f"{path} is a directory, not a notebook")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunUsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RunUsageError(f"{path} is not a notebook: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise RunUsageError(f"{path} is not a notebook: JSON without 'cells' and 'nbformat'")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunUsageError(f"{path} is not a valid notebook: {first}") from None
    return nb


def check_kernel(nb: NotebookNode, path: str) -> str:
    """Return the notebook's language ("python"), or raise RunUsageError when it cannot be run here.

    Why a missing kernelspec is an error and not a silent default to python3: the runner only protects
    Python kernels, and a notebook with no kernelspec and no language_info says nothing about what it
    is written in; guessing would run an R or Julia notebook's cells as Python and report nonsense.
    papermill refuses such notebooks too. ``language_info.name == "python"`` alone is accepted: it is
    written by every Python kernel that ever ran the notebook, so the language is known.
    """
    spec = nb.metadata.get("kernelspec") or {}
    info = nb.metadata.get("language_info") or {}
    language = (spec.get("language") or info.get("name") or "").lower()
    if not language and str(spec.get("name", "")).lower().startswith("python"):
        language = "python"
    if not spec and not info:
        raise RunUsageError(
            f"{path} has no kernelspec metadata, so its language is unknown; "
            'add metadata.kernelspec {"name": "python3", "language": "python"} (saving it in Jupyter does)'
        )
    if language != "python":
        raise RunUsageError(
            f"{path} is a {language or 'unknown-language'} notebook "
            f"(kernelspec {spec.get('name', '?')!r}); kernel-sentinel run executes Python notebooks only"
        )
    return language


def parse_value(text: str) -> Any:
    """Return the Python value a ``-p NAME VALUE`` string means, the way papermill reads it."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def defined_names(source: str) -> set[str]:
    """Return the names a parameters cell assigns at top level (``x = 1``, ``y: int = 2``, ``a, b = ...``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        # IPython magics make a cell invalid Python; fall back to the plain "name = ..." lines.
        return set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source, flags=re.M))
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        while targets:
            t = targets.pop()
            if isinstance(t, ast.Name):
                names.add(t.id)
            elif isinstance(t, (ast.Tuple, ast.List)):
                targets.extend(t.elts)
    return names


def inject_parameters(nb: NotebookNode, params: list[tuple[str, str]]) -> int | None:
    """Insert papermill's "injected-parameters" cell after the "parameters" cell; return its index.

    Raises RunUsageError for a name the parameters cell does not define: a typo in ``-p`` must not run
    the whole notebook with the default. A previous injected cell (re-running an output) is replaced.
    """
    if not params:
        return None
    index = next(
        (i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PARAMETERS_TAG in c.metadata.get("tags", [])),
        None,
    )
    names = [name for name, _ in params]
    if index is None:
        raise RunUsageError(f"unknown parameter {names[0]!r}: the notebook has no cell tagged {PARAMETERS_TAG!r}")
    known = defined_names(nb.cells[index].source)
    for name in names:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise RunUsageError(f"unknown parameter {name!r}: the parameters cell defines {listed}")
    lines = ["# Parameters (injected by kernel-sentinel run)"]
    lines += [f"{name} = {parse_value(value)!r}" for name, value in params]
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]
    index = next(i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, cell)
    return index + 1


def is_runnable(cell: NotebookNode) -> bool:
    """Return True for a code cell nbclient will send to the kernel (not empty)."""
    return cell.cell_type == "code" and bool(cell.source.strip())


def mark_not_run(cell: NotebookNode) -> None:
    """Clear a cell that never ran this time: no stale outputs or count, status "not_run"."""
    cell.outputs = []
    cell.execution_count = None
    cell.metadata.pop("execution", None)
    cell.metadata[META_KEY] = {"status": "not_run"}
