"""The autopsy's evidence gathering as the server uses it: only when there is something to gather.

The server gathers evidence with the autopsy's own functions (``autopsy.gather``), exactly as the supervisor,
the sweep and the provisioner do; these wrappers add the server's one difference: a stock kernel usually has
no flight record, and its absence is not news worth a note in every report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def gather_flight(ev: Any, home: Path) -> None:
    """Add the kernel process's flight record to the evidence when it left one (a stock kernel usually did not)."""
    from ..autopsy.flight import record_paths
    from ..autopsy.gather import gather_flight as gather

    rec, _fault = record_paths(home, ev.kernel_id, ev.pid)
    if rec.exists():
        gather(ev, home)


def gather_kernel_log(ev: Any, started_at: float | None) -> None:
    """Add what the kernel log says about the process (OOM lines for its pid and memcg), from its start on."""
    from ..autopsy.gather import boot_usec
    from ..autopsy.gather import gather_kernel_log as gather

    gather(ev, boot_usec(started_at))


def read_flight(home: Path, kernel_id: str, pid: int) -> dict[str, Any]:
    """Return the regions of a live kernel's flight record ({} when it has none)."""
    from ..autopsy.flight import read_record, record_paths

    rec, _fault = record_paths(home, kernel_id, pid)
    if not rec.exists():
        return {}
    flight, _notes = read_record(rec)
    return flight
