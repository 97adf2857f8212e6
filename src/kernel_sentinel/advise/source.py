"""Notebooks and .py files -> cells of plain Python with their positions, ready for the AST checks."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Cell magics whose body is still Python that runs in the kernel's namespace.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "memit", "sentinel", "debug"}
_MAGIC_LINE = re.compile(r"^(\s*)(%|!)")
_ASSIGNED_MAGIC = re.compile(r"^(\s*[\w.,\s]+=\s*)(%|!)")


class SourceError(Exception):
    """A file that cannot be read as a notebook or Python source; the message is one line for the user."""


@dataclass(frozen=True)
class Cell:
    """One unit of code: a notebook code cell (``index`` in the notebook's cell list) or a whole .py file."""

    index: int | None
    source: str  # Python with IPython magics blanked out; same line numbers as the original
    original: str


def python_source(text: str) -> str:
    """Return ``text`` with IPython syntax made inert, keeping every line where it was.

    Line magics and shell escapes become ``pass`` (indentation kept, so blocks stay valid); the right
    side of ``x = !ls`` / ``x = %who_ls`` becomes ``None``. A cell magic whose body is Python (``%%time``)
    loses only its first line; any other cell magic (``%%bash``, ``%%sql``) is not Python at all, so the
    whole cell becomes empty.
    """
    lines = text.split("\n")
    if lines and lines[0].lstrip().startswith("%%"):
        name = lines[0].lstrip()[2:].split(maxsplit=1)[0] if lines[0].lstrip()[2:].strip() else ""
        if name not in _PYTHON_CELL_MAGICS:
            return "\n" * (len(lines) - 1)
        lines[0] = ""
    out = []
    for line in lines:
        m = _ASSIGNED_MAGIC.match(line)
        if m and not line.lstrip().startswith(("%", "!")):
            out.append(m.group(1) + "None")
            continue
        m = _MAGIC_LINE.match(line)
        if m:
            out.append(m.group(1) + "pass")
            continue
        stripped = line.rstrip()
        if stripped.endswith("?") and not stripped.lstrip().startswith("#") and re.match(r"^\s*[\w.]+\?{1,2}$", stripped):
            out.append(line[: len(line) - len(line.lstrip())] + "pass")  # `obj?` help syntax
            continue
        out.append(line)
    return "\n".join(out)


def load_cells(path: str | os.PathLike[str]) -> list[Cell]:
    """Return the code cells of a notebook, or a .py file as one cell; raise SourceError with one line."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file")
    if p.is_dir():
        raise SourceError(f"{p}: is a directory (give notebooks or .py files)")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SourceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if p.suffix == ".ipynb":
        return _notebook_cells(p, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{p}: not UTF-8 text, so not Python source") from None
    return [Cell(index=None, source=python_source(text), original=text)]


def _notebook_cells(p: Path, raw: bytes) -> list[Cell]:
    import json

    import nbformat

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{p}: not a notebook (not valid JSON: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise SourceError(f"{p}: not a notebook (no cells)")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as exc:  # nbformat raises many types for malformed documents
        raise SourceError(f"{p}: not a readable notebook ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        text = cell.get("source") or ""
        if isinstance(text, list):
            text = "".join(text)
        cells.append(Cell(index=index, source=python_source(text), original=text))
    return cells
