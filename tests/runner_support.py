"""Helpers for the runner's tests: real notebooks written with nbformat, the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}

# Reset the kernel process's VmHWM (Linux clear_refs "5") and read it back: the cell's own, independent
# measurement of its peak RSS, compared with what the runner sampled from outside.
HWM_SETUP = (
    "import numpy as np\n"
    "def _status(field):\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith(field + ':'):\n"
    "            return int(line.split()[1]) * 1024\n"
    "def _reset_hwm():\n"
    "    global _HWM_BASE\n"
    "    with open('/proc/self/clear_refs', 'w') as f:\n"
    "        f.write('5')\n"
    "    _HWM_BASE = _status('VmRSS')\n"
    "def _hwm():\n"
    "    return f\"{_status('VmHWM')} {_HWM_BASE}\"\n"
)


def write_notebook(path: Path, cells: list[str | dict[str, Any]], *, kernelspec: bool = True) -> Path:
    """Write a v4 notebook of code cells (a dict cell may carry ``tags``) and return its path."""
    nb = nbformat.v4.new_notebook()
    if kernelspec:
        nb.metadata.kernelspec = dict(KERNELSPEC)
    for cell in cells:
        if isinstance(cell, dict):
            nb.cells.append(nbformat.v4.new_code_cell(cell["source"], metadata={"tags": cell.get("tags", [])}))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell))
    nbformat.write(nb, str(path))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``kernel-sentinel run ARGS`` as a user would, in a subprocess; return its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "kernel_sentinel", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def stdout_of(cell: dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream" and o["name"] == "stdout")
