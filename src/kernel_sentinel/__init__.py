"""kernel-sentinel: keeps Jupyter kernels alive when memory runs out, and explains every kernel death."""

from __future__ import annotations

from .errors import MemoryBudgetError
from .extension import load_ipython_extension, unload_ipython_extension

__version__ = "0.1.0"
__all__ = ["MemoryBudgetError", "__version__", "load_ipython_extension", "shrink", "unload_ipython_extension"]


def __getattr__(name: str) -> object:  # no typing import: the launcher starts here
    # shrink pulls in pandas: import it on first use, not on every `import kernel_sentinel.*`
    # (the launcher, the kernel and the CLI all import this package at start).
    if name == "shrink":
        from .advise.shrink import shrink

        return shrink
    raise AttributeError(f"module 'kernel_sentinel' has no attribute {name!r}")
