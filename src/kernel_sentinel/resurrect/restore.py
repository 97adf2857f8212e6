"""Restore: load the newest consistent checkpoint into a (fresh) kernel's namespace and say what happened.

Which checkpoint: an explicit kernel id's newest; else the newest of the same session (notebook path)
written by another kernel; else the newest of any other kernel. A manifest that is missing or unreadable
is reported and the one before it is used; a blob that is missing, truncated or fails its hash loses
only the variables stored in it: everything else is restored, and the report says what was not.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sizes import format_bytes
from .blobs import BlobStore, ManifestRef, all_sessions, checkpoints_root, session_dirname
from .detect import blob_id, deserialize, deserialize_chunks

RESTORE_RESERVE = 64 << 20  # what must stay free under the budget after a restore


@dataclass
class RestoreReport:
    """What a restore did: from which checkpoint, what came back, what did not and why."""

    manifest: str | None = None
    kernel_id: str | None = None
    execution_count: int | None = None
    created: float | None = None
    restored: list[dict[str, Any]] = field(default_factory=list)  # names, type, nbytes
    failed: list[dict[str, Any]] = field(default_factory=list)  # names, type, reason (stored but not loadable)
    not_saved: list[dict[str, Any]] = field(default_factory=list)  # names, type, reason, cells
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0

    @property
    def found(self) -> bool:
        return self.manifest is not None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        """Return the report a user reads after ``%sentinel restore``."""
        if not self.found:
            return "\n".join(["No checkpoint to restore.", *self.notes])
        when = time.strftime("%H:%M:%S", time.localtime(self.created)) if self.created else "?"
        speed = f", {self.bytes_read / self.seconds / 1e9:.1f} GB/s" if self.seconds > 0 and self.bytes_read > 1 << 20 else ""
        lines = [f"Restored from kernel {self.kernel_id}'s checkpoint after cell [{self.execution_count}] ({when}): "
                 f"{len(self.restored)} variables, {format_bytes(self.bytes_read)} in {self.seconds:.2f} s{speed}."]
        lines += [f"  note: {n}" for n in self.notes]
        if self.restored:
            lines.append("  restored: " + ", ".join(
                f"{' = '.join(r['names'])} ({r['type']}, {format_bytes(r['nbytes'])})" for r in self.restored))
        for f in self.failed:
            lines.append(f"  could not load {' = '.join(f['names'])} ({f['type']}): {f['reason']}")
        for u in self.not_saved:
            cell = u["cells"][-1] if u.get("cells") else None
            where = (f"created by cell [{cell['execution_count']}]: {_first_line(cell['code'])}" if cell
                     else "the cell that created it is unknown")
            lines.append(f"  not restored: {' = '.join(u['names'])} ({u['type']}: {u['reason']}); {where}")
        if self.rerunnable():
            lines.append("  `%sentinel restore --rerun` re-runs those cells to recreate them.")
        return "\n".join(lines)

    def rerunnable(self) -> list[dict[str, Any]]:
        """Return the cells that recreate what was not restored, in execution order, each once."""
        seen: dict[Any, dict[str, Any]] = {}
        for item in [*self.not_saved, *self.failed]:
            for cell in item.get("cells") or []:
                seen.setdefault((cell.get("execution_count"), cell.get("code")), cell)
        return sorted(seen.values(), key=lambda c: c.get("execution_count") or 0)


def _first_line(code: str) -> str:
    lines = [ln for ln in (code or "").strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[0][:80] + (" ..." if len(lines) > 1 or len(lines[0]) > 80 else "")


def candidates(
    root: Path, *, kernel_id: str | None = None, session_key: str | None = None, exclude: str | None = None
) -> list[ManifestRef]:
    """Return manifests to try, best first (pure listing; reads no manifest).

    ``exclude`` is the restoring kernel's own incarnation (``<kernel id>@<pid>``) or kernel id: its own
    checkpoints are never what it wants back.
    """
    stores = all_sessions(root)
    refs = [r for s in stores for r in s.manifests()]
    if exclude:
        refs = [r for r in refs if exclude not in (r.incarnation, r.kernel_id)]
    if kernel_id:
        refs = [r for r in refs if kernel_id in (r.kernel_id, r.incarnation)]
    refs.sort(key=lambda r: (r.mtime, r.seq), reverse=True)
    if session_key and not kernel_id:
        wanted = root / session_dirname(session_key, "")
        same = [r for r in refs if r.session_dir == wanted]
        if same:
            return same  # only this notebook's own: another notebook's variables would be a surprise
    return refs


def list_checkpoints(home: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Return one row per kernel with checkpoints: kernel id, session, newest cell, time, variables, size."""
    root = checkpoints_root(home) if home is not None else checkpoints_root()
    rows = []
    for store in all_sessions(root):
        by_kernel: dict[str, ManifestRef] = {}
        for ref in store.manifests():
            by_kernel[ref.incarnation] = ref  # oldest first: the last one wins
        for kid, ref in by_kernel.items():
            try:
                m = json.loads(ref.path.read_text())
            except (OSError, ValueError):
                m = {}
            rows.append({
                "kernel_id": ref.kernel_id, "pid": m.get("pid"), "session": m.get("session"), "seq": ref.seq, "execution_count": m.get("execution_count"),
                "created": m.get("created", ref.mtime), "variables": sum(len(o["names"]) for o in m.get("objects", [])),
                "bytes": sum(o.get("nbytes", 0) for o in m.get("objects", [])), "manifest": str(ref.path),
            })
    rows.sort(key=lambda r: r["created"] or 0, reverse=True)
    return rows


def format_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No checkpoints."
    out = ["Checkpoints (newest first):"]
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])) if r["created"] else "?"
        out.append(f"  {r['kernel_id']}  {when}  after cell [{r['execution_count']}]  {r['variables']} variables, "
                   f"{format_bytes(r['bytes'])}  {r['session'] or ''}".rstrip())
    return "\n".join(out)


def load_checkpoint(
    ns: dict[str, Any],
    *,
    home: str | os.PathLike[str] | None = None,
    kernel_id: str | None = None,
    session_key: str | None = None,
    exclude: str | None = None,
    verify: bool = True,
    available: int | None = None,
) -> RestoreReport:
    """Restore the newest consistent checkpoint into ``ns``; return the report (never raises for bad data).

    ``available``: bytes left under the kernel's memory budget. What would not fit is left out (the
    biggest first) and reported, rather than restored into an out-of-memory kill.
    """
    started = time.monotonic()
    root = checkpoints_root(home) if home is not None else checkpoints_root()
    report = RestoreReport()
    refs = candidates(root, kernel_id=kernel_id, session_key=session_key, exclude=exclude)
    if not refs:
        report.notes.append(f"no checkpoints under {root}" + (f" for kernel {kernel_id}" if kernel_id else ""))
        return report
    manifest, ref = None, None
    # a newest manifest named by latest.json but gone: say so (it was deleted or never reached the disk)
    newest = refs[0]
    latest = BlobStore(newest.session_dir).latest(newest.incarnation)
    if latest and latest.get("seq", 0) > newest.seq:
        report.notes.append(f"checkpoint {latest['seq']} of kernel {newest.kernel_id} (after cell "
                            f"[{latest.get('execution_count')}]) is missing; using checkpoint {newest.seq}")
    for candidate in refs:
        try:
            manifest = json.loads(candidate.path.read_text())
            if not isinstance(manifest, dict) or "objects" not in manifest:
                raise ValueError("not a checkpoint manifest")
            ref = candidate
            break
        except (OSError, ValueError) as exc:
            report.notes.append(f"could not read {candidate.path.name} of kernel {candidate.kernel_id} "
                                f"({type(exc).__name__}: {str(exc)[:80]}); trying the one before")
            manifest = None
    if manifest is None or ref is None:
        report.notes.append("no readable checkpoint manifest")
        return report
    store = BlobStore(ref.session_dir)
    report.manifest, report.kernel_id = str(ref.path), manifest.get("kernel_id", ref.kernel_id)
    report.execution_count, report.created = manifest.get("execution_count"), manifest.get("created")
    for mod in manifest.get("modules", []):
        try:
            value = importlib.import_module(mod["module"])
            for name in mod["names"]:
                ns[name] = value
        except Exception as exc:
            report.failed.append({"names": mod["names"], "type": "module", "reason": f"import {mod['module']} failed: {exc}", "cells": []})
    entries = list(manifest.get("objects", []))
    if available is not None:
        room = available - RESTORE_RESERVE
        for entry in sorted(entries, key=lambda e: e.get("nbytes", 0)):
            if entry.get("nbytes", 0) <= room:
                room -= entry.get("nbytes", 0)
                continue
            entries.remove(entry)
            report.failed.append({"names": entry["names"], "type": entry.get("type", "?"), "cells": entry.get("cells", []),
                                  "reason": f"needs {format_bytes(entry.get('nbytes', 0))}, more than the memory budget "
                                            f"has left ({format_bytes(max(0, room))})"})
    loaded: dict[str, Any] = {}  # first name -> object, for variables held inside others (refs)
    lost: set[str] = set()
    for entry in _dependency_order(entries):
        missing = [r for r in entry.get("refs", []) if r not in loaded]
        if missing:
            lost.update(entry["names"][:1])
            report.failed.append({"names": entry["names"], "type": entry.get("type", "?"), "cells": entry.get("cells", []),
                                  "reason": f"it holds {', '.join(missing)}, which could not be restored"})
            continue
        try:
            inbands = entry.get("chunks") or [entry["inband"]]
            parts = []
            for bid in [*inbands, *entry.get("buffers", [])]:
                try:
                    data = store.read_blob(bid)
                except FileNotFoundError:
                    raise ValueError(f"blob {bid[:12]}... is missing") from None
                if verify and blob_id(data) != bid:
                    raise ValueError(f"blob {bid[:12]}... is damaged (its hash does not match)")
                parts.append(data)
                report.bytes_read += memoryview(data).nbytes
            if entry.get("chunks"):
                value = deserialize_chunks(entry.get("container", "dict"), parts[:len(inbands)], parts[len(inbands):],
                                           resolve=loaded.__getitem__)
            else:
                value = deserialize(entry.get("method", "pickle5"), bytes(parts[0]), parts[1:], resolve=loaded.__getitem__)
        except Exception as exc:
            report.failed.append({"names": entry["names"], "type": entry.get("type", "?"),
                                  "reason": str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}",
                                  "cells": entry.get("cells", [])})
            continue
        loaded[entry["names"][0]] = value
        for name in entry["names"]:  # one object, every alias: `b is a` holds again
            ns[name] = value
        report.restored.append({"names": entry["names"], "type": entry.get("type", "?"), "nbytes": entry.get("nbytes", 0)})
    report.not_saved = list(manifest.get("unpicklable", []))
    report.seconds = time.monotonic() - started
    return report


def _dependency_order(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return entries so that a variable held inside another is restored before it (cycles: as stored)."""
    done: set[str] = set()
    order: list[dict[str, Any]] = []
    waiting = list(entries)
    while waiting:
        ready = [e for e in waiting if all(r in done for r in e.get("refs", []))]
        if not ready:  # a cycle or a reference to something not stored: the loader reports it
            order.extend(waiting)
            break
        for e in ready:
            order.append(e)
            done.add(e["names"][0])
            waiting.remove(e)
    return order


def rerun_cells(ip: Any, report: RestoreReport) -> list[str]:
    """Re-run the recorded cells that recreate what was not restored; return one line per cell."""
    lines = []
    for cell in report.rerunnable():
        result = ip.run_cell(cell["code"], store_history=False, silent=False)
        ok = getattr(result, "success", True)
        lines.append(f"re-ran cell [{cell.get('execution_count')}]: {'ok' if ok else 'failed: ' + repr(result.error_in_exec or result.error_before_exec)}")
    return lines


def restore_offer(
    *, own: str, kernel_id: str, session_key: str | None, home: str | os.PathLike[str] | None = None,
    death_report: Any = None,
) -> str | None:
    """Return the line that offers a restore after a death, or None when there is nothing to offer.

    Offered only when the autopsy recorded the death of the very process that wrote the newest checkpoint
    of this kernel id or notebook: a kernel that was shut down or restarted on purpose is not nagged.
    """
    root = checkpoints_root(home) if home is not None else checkpoints_root()
    session_dir = root / session_dirname(session_key, kernel_id)
    refs = [r for r in candidates(root, session_key=session_key, exclude=own)
            if r.kernel_id == kernel_id or r.session_dir == session_dir]
    for ref in refs:
        try:
            manifest = json.loads(ref.path.read_text())
        except (OSError, ValueError):
            continue
        if death_report is None:
            try:
                from ..autopsy import death_report as _death_report
            except ImportError:
                return None
            death_report = _death_report
        try:
            report = death_report(ref.kernel_id)
        except Exception:
            return None
        if not report or report.get("pid") != manifest.get("pid"):
            return None
        n = sum(len(o["names"]) for o in manifest.get("objects", []))
        size = format_bytes(sum(o.get("nbytes", 0) for o in manifest.get("objects", [])))
        lost = [" = ".join(u["names"]) for u in manifest.get("unpicklable", [])]
        return (f"The variables of the kernel that died were checkpointed after cell [{manifest.get('execution_count')}] "
                f"({n} variables, {size}): `%sentinel restore` brings them back"
                + (f" (not saved: {', '.join(lost)})." if lost else "."))
    return None
