"""The advisor: finds the lines that will kill a kernel before they run, and says what to write instead.

Pipeline: ``source`` (files -> cells) -> ``evaluate`` (what each name holds; ``models/``: what numpy's and
pandas' calls make) -> ``checks`` (what is wrong, and the remedy) -> ``records.Finding``; ``estimate``
sizes files and dtypes, ``live`` runs the same inside a kernel, ``shrink`` makes a DataFrame smaller.

Kinds of findings (``Finding.kind``; see ``values`` for the thresholds):

- ``big_allocation``: a numpy/pandas allocation whose size is known (literal shapes, constants assigned
  earlier, dtypes, live arrays) over half the budget (warning) or over all of it (error), or that would
  take the memory already held by other known big objects over the budget (error);
- ``big_read``: ``pd.read_csv``/``read_table``/``read_json``/``read_parquet`` of an existing file whose
  estimated in-memory size (a pandas read of a sample, scaled by file size) is over half the budget;
  the remedy has the ``chunksize`` that fits, ``dtype``/``usecols`` and, when even that will not fit,
  an out-of-core engine;
- ``missing_file``: a read of a path that does not exist (and that no earlier cell writes);
- ``memmap_exceeds_disk``: ``np.memmap(..., mode='w+')`` / ``open_memmap`` bigger than the free space
  of the target filesystem (SIGBUS when the writes reach the end of it);
- ``grows_in_loop``: ``df = pd.concat([df, ...])``, ``np.append``, string ``+=`` in a loop (quadratic
  copies), or a list collecting known-size objects in a loop of known length over half the budget;
- ``unbounded_growth``: a container that grows in ``while True:`` with no ``break``/``return``/``raise``;
- ``kept_by_out``: a cell's last expression is a new big object (``Out`` keeps it), or a displayed big
  variable is later deleted or rebound (the ``del`` frees nothing);
- ``held_after_use``: an object of a quarter of the budget or more that stays alive after its last use
  while later code allocates more (suggests ``del``);
- ``syntax_error``: a cell that is not valid Python (the other checks skip that cell).

Usage errors (exit 64 from the CLI) are about the command line or the files: a path that does not
exist, a directory, a file that is not a notebook or not UTF-8 Python, a bad ``--budget``. Everything
about the code inside a readable file, including syntax errors, is a finding (exit 1).
"""

from __future__ import annotations

from pathlib import Path

from .checks import analyze
from .findings import Finding
from .source import SourceError, load_cells
from .values import Context

__all__ = ["Context", "Finding", "SourceError", "check_file", "analyze"]


def check_file(path: str | Path, budget_bytes: int, budget_source: str = "memory budget",
               display_path: str | None = None) -> list[Finding]:
    """Return the findings for one notebook or .py file; raise SourceError (one line) if it cannot be read."""
    p = Path(path)
    cells = load_cells(p)
    ctx = Context(path=display_path or str(path), base_dir=p.resolve().parent, budget_bytes=budget_bytes,
                  budget_source=budget_source, notebook=p.suffix == ".ipynb")
    return analyze(cells, ctx)
