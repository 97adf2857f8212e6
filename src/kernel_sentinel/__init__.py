"""kernel-sentinel: keeps Jupyter kernels alive when memory runs out, and explains every kernel death."""

from __future__ import annotations

from .advise.shrink import shrink
from .errors import MemoryBudgetError
from .extension import load_ipython_extension, unload_ipython_extension

__version__ = "0.1.0"
__all__ = ["MemoryBudgetError", "__version__", "load_ipython_extension", "shrink", "unload_ipython_extension"]
