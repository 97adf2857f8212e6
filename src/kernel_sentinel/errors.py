"""The exceptions kernel-sentinel raises where users see them."""

from __future__ import annotations


class MemoryBudgetError(MemoryError):
    """A cell asked for more memory than the kernel's budget allows; the kernel and its variables live on.

    Raised by the guard instead of letting the OOM killer SIGKILL the kernel. A ``MemoryError``, so
    existing ``except MemoryError`` code keeps working.
    """
