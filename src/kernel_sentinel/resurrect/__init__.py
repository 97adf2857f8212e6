"""Resurrect: cheap per-cell checkpoints of a kernel's variables, and restoring them after a death."""

from .checkpoint import Checkpointer, scan_namespace, write_checkpoint
from .restore import RestoreReport, list_checkpoints, load_checkpoint

__all__ = ["Checkpointer", "RestoreReport", "list_checkpoints", "load_checkpoint", "scan_namespace", "write_checkpoint"]
