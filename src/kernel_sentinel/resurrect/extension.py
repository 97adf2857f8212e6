"""Load and unload checkpoints in an IPython shell: ``load(ip)`` is what the sentinel extension calls.

``KERNEL_SENTINEL_CHECKPOINT=on|off`` (e.g. in a kernelspec's ``env``) decides whether checkpoints start
on; ``%sentinel checkpoint on|off`` changes it later. ``%sentinel restore`` works either way.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .checkpoint import Checkpointer, parse_switch

DEFAULT_ON = True  # off the cell's critical path: bench/bench_default_cost.py

_ATTR = "_kernel_sentinel_checkpointer"


def checkpointer(ip: Any) -> Checkpointer | None:
    """Return the shell's checkpointer, or None when not loaded."""
    return getattr(ip, _ATTR, None)


def load(ip: Any) -> Checkpointer | None:
    """Attach a checkpointer to ``ip`` (once) and register its hooks and magics; return it (None on failure).

    Never raises: a bad setting prints one line and leaves checkpoints off, any other failure prints one
    line and leaves the kernel as it was. The kernel matters more than its checkpoints.
    """
    if ip is None:
        return None
    existing = checkpointer(ip)
    if existing is not None:
        return existing
    try:
        return _load(ip)
    except Exception as exc:
        print(f"kernel-sentinel: checkpoints off: {type(exc).__name__}: {exc}", file=sys.__stderr__)
        return None


def _load(ip: Any) -> Checkpointer:
    try:
        enabled = parse_switch(os.environ.get("KERNEL_SENTINEL_CHECKPOINT"), DEFAULT_ON)
    except ValueError as exc:
        print(f"[kernel-sentinel] {exc}; checkpoints are off")
        enabled = False
    history = getattr(getattr(ip, "history_manager", None), "input_hist_parsed", None)
    cp = Checkpointer(
        ip.user_ns,
        enabled=enabled,
        hidden=set(getattr(ip, "user_ns_hidden", {}) or {}),
        history=(lambda: list(history)) if history is not None else (lambda: None),
    )
    from .restore import restore_offer

    cp.offer = lambda: restore_offer(own=cp.incarnation, kernel_id=cp.kernel_id, session_key=cp.session_key)
    ip.events.register("pre_run_cell", cp.pre_run_cell)
    # First of the pre-run hooks, before the guard's: it stops a writer and waits for its memory to be let go,
    # so the guard's reading at the cell's start no longer counts it (a dying writer's copied pages refused a
    # 560 MiB cell that stock completes).
    hooks = getattr(ip.events, "callbacks", {}).get("pre_run_cell")
    if isinstance(hooks, list) and hooks and hooks[-1] == cp.pre_run_cell:
        hooks.insert(0, hooks.pop())
    ip.events.register("post_run_cell", cp.post_run_cell)
    setattr(ip, _ATTR, cp)
    cp.start()  # its thread, now: starting threads later, when memory may be short, can hang
    from .magics import install

    install(ip, checkpointer)
    return cp


def unload(ip: Any) -> None:
    """Unregister the hooks and wait for a checkpoint in flight."""
    cp = checkpointer(ip)
    if cp is None:
        return
    for event, fn in (("pre_run_cell", cp.pre_run_cell), ("post_run_cell", cp.post_run_cell)):
        try:
            ip.events.unregister(event, fn)
        except ValueError:
            pass
    cp.close()
    delattr(ip, _ATTR)
