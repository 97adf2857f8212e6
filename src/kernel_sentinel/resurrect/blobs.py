"""Where checkpoints live: content-addressed blobs plus one atomically written manifest per checkpoint.

Layout under ``KERNEL_SENTINEL_HOME`` (default: Jupyter's data dir / kernel-sentinel)::

    checkpoints/<session>/blobs/<2 hex>/<xxh3_128>-<length>
    checkpoints/<session>/kernels/<kernel id>@<pid>/manifest-<seq 8 digits>.json

``<session>`` is a stable key (the notebook path when the server names it, else ``kernel-<id>``), so a new
kernel after a death finds the previous kernel's checkpoints and shares its blobs. ``@<pid>`` tells the
incarnations of one kernel id apart: Jupyter restarts a dead kernel under the same id, and the new
process must neither restore its own (empty) checkpoints nor prune the dead one's. A blob is written to
a temporary file, fsynced and renamed: it is either whole or absent, and its name says its length, so a
truncated one is recognised without reading it. A manifest is written the same way and only after all
its blobs: the newest manifest always names blobs that were complete when it was written.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..identity import home_dir
from .detect import Cancelled, blob_size

MANIFEST_VERSION = 1
_WRITE_CHUNK = 32 << 20  # fsync + drop from page cache every 32 MiB: dirty cache counts against the cgroup
_MAP_MIN = 1 << 20  # blobs from 1 MiB up are mapped, not read
_MANIFEST = re.compile(r"^manifest-(\d{8})\.json$")


def checkpoints_root(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds every session's checkpoints."""
    return Path(home) / "checkpoints" if home is not None else home_dir() / "checkpoints"


def session_dirname(session_key: str | None, kernel_id: str) -> str:
    """Return a safe folder name for a session: readable notebook name + short hash, or ``kernel-<id>``."""
    if not session_key:
        return f"kernel-{_safe(kernel_id)}"
    import hashlib

    digest = hashlib.blake2b(session_key.encode(), digest_size=6).hexdigest()
    stem = _safe(Path(session_key).name)[:48] or "session"
    return f"nb-{stem}-{digest}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("._") or "x"


@dataclass(frozen=True)
class ManifestRef:
    """One manifest on disk: where it is and which kernel and checkpoint number it belongs to."""

    path: Path
    session_dir: Path
    incarnation: str  # "<kernel id>@<pid>": one kernel process
    seq: int

    @property
    def kernel_id(self) -> str:
        return self.incarnation.rsplit("@", 1)[0]

    @property
    def mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0


class BlobStore:
    """One session's folder: write blobs and manifests, list manifests, collect garbage."""

    def __init__(self, session_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(session_dir)
        self.blobs = self.dir / "blobs"
        self.kernels = self.dir / "kernels"

    # -- blobs -------------------------------------------------------------------------------------

    def blob_path(self, bid: str) -> Path:
        return self.blobs / bid[:2] / bid

    def has_blob(self, bid: str) -> bool:
        """Return True when a complete blob ``bid`` exists (and refresh its mtime so GC keeps it)."""
        path = self.blob_path(bid)
        try:
            if path.stat().st_size != blob_size(bid):
                return False
            os.utime(path)
            return True
        except OSError:
            return False

    def write_blob(self, bid: str, data: Any, cancelled: Any = None) -> int:
        """Write ``data`` (a buffer, or a spilled temp file's Path, moved) under its id unless already there.

        Returns the bytes written (0 if the blob was already there). ``cancelled()`` (the thread writer's) is
        asked before each 32 MiB of a buffer: when it says so, ``Cancelled`` is raised and nothing is left.
        """
        if self.has_blob(bid):
            return 0
        path = self.blob_path(bid)
        private_dirs(path.parent)
        if isinstance(data, Path):
            fd = os.open(data, os.O_RDONLY)
            try:
                os.fsync(fd)
                _drop_cache(fd, 0, 0)
            finally:
                os.close(fd)
            os.replace(data, path)
            return blob_size(bid)
        view = memoryview(data).cast("B")
        _atomic_write(path, view, cancelled)
        return view.nbytes

    def read_blob(self, bid: str) -> Any:
        """Return the blob's bytes as a writable buffer; raise OSError (missing) or ValueError (truncated).

        Big blobs are mapped copy-on-write (``MAP_PRIVATE``) rather than read: a restored array then
        costs no copy and comes from the page cache at memory speed; writing to it never touches the
        file. Blob files are only ever replaced whole or unlinked (never truncated in place), so the
        mapping stays valid.
        """
        path = self.blob_path(bid)
        size = blob_size(bid)
        with open(path, "rb", buffering=0) as f:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                raise ValueError(f"blob {bid[:12]}... is truncated: {actual} of {size} bytes")
            if size >= _MAP_MIN and os.name == "posix":  # Windows' mmap has no MAP_PRIVATE: read instead
                import mmap

                return mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            buf = bytearray(size)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        if got != size:
            raise ValueError(f"blob {bid[:12]}... is truncated: {got} of {size} bytes")
        return buf

    # -- manifests ---------------------------------------------------------------------------------

    def kernel_dir(self, incarnation: str) -> Path:
        return self.kernels / _safe(incarnation)

    def manifests(self, incarnation: str | None = None) -> list[ManifestRef]:
        """Return this session's manifests (of one incarnation, or all), oldest first (by time, then number)."""
        refs: list[ManifestRef] = []
        dirs = [self.kernel_dir(incarnation)] if incarnation else (
            sorted(self.kernels.iterdir()) if self.kernels.is_dir() else []
        )
        for kdir in dirs:
            if not kdir.is_dir():
                continue
            for entry in kdir.iterdir():
                m = _MANIFEST.match(entry.name)
                if m:
                    refs.append(ManifestRef(entry, self.dir, kdir.name, int(m.group(1))))
        refs.sort(key=lambda r: (r.mtime, r.seq))
        return refs

    def next_seq(self, kernel_id: str) -> int:
        refs = self.manifests(kernel_id)
        return max((r.seq for r in refs), default=0) + 1

    def write_manifest(self, kernel_id: str, seq: int, manifest: dict[str, Any]) -> Path:
        """Write a manifest atomically (temp file, fsync, rename, fsync of the folder); return its path."""
        kdir = self.kernel_dir(kernel_id)
        private_dirs(kdir)
        path = kdir / f"manifest-{seq:08d}.json"
        _atomic_write(path, json.dumps(manifest, indent=1).encode())
        return path

    def write_latest(self, kernel_id: str, seq: int, execution_count: int | None) -> None:
        """Record which manifest is the newest, so a restore can tell a missing manifest from none at all."""
        path = self.kernel_dir(kernel_id) / "latest.json"
        _atomic_write(path, json.dumps({"seq": seq, "execution_count": execution_count}).encode())

    def latest(self, kernel_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.kernel_dir(kernel_id) / "latest.json").read_text())
        except (OSError, ValueError):
            return None

    # -- space -------------------------------------------------------------------------------------

    def referenced(self, refs: Iterable[ManifestRef]) -> set[str]:
        ids: set[str] = set()
        for ref in refs:
            try:
                data = json.loads(ref.path.read_text())
            except (OSError, ValueError):
                continue
            ids.update(manifest_blob_ids(data))
        return ids

    def usage_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total

    def collect(self, kernel_id: str, keep: int, grace_seconds: float = 60.0) -> int:
        """Keep the newest ``keep`` manifests of ``kernel_id``; delete blobs no manifest names; return bytes freed.

        Blobs younger than ``grace_seconds`` survive: another kernel of the same session may be about to
        name them in a manifest it has not written yet.
        """
        mine = self.manifests(kernel_id)
        for ref in mine[:-keep] if keep > 0 else mine:
            _unlink(ref.path)
        return self.sweep_blobs(grace_seconds)

    def sweep_blobs(self, grace_seconds: float = 60.0) -> int:
        live = self.referenced(self.manifests())
        now, freed = time.time(), 0
        if not self.blobs.is_dir():
            return 0
        for sub in self.blobs.iterdir():
            for blob in sub.iterdir() if sub.is_dir() else []:
                if blob.name in live:
                    continue
                try:
                    st = blob.stat()
                    if now - st.st_mtime < grace_seconds:
                        continue
                    blob.unlink()
                    freed += st.st_size
                except OSError:
                    pass
        return freed


def manifest_blob_ids(manifest: dict[str, Any]) -> set[str]:
    """Return every blob id a manifest names."""
    ids: set[str] = set()
    for entry in manifest.get("objects", []):
        if entry.get("inband"):
            ids.add(entry["inband"])
        ids.update(entry.get("chunks", []))  # a big dict or list saved in chunks
        ids.update(entry.get("buffers", []))
    return ids


def all_sessions(root: Path) -> list[BlobStore]:
    """Return a store for every session folder under ``root``."""
    if not root.is_dir():
        return []
    return [BlobStore(p) for p in sorted(root.iterdir()) if p.is_dir()]


def enforce_disk_budget(root: Path, budget_bytes: int, current: BlobStore, kernel_id: str) -> list[str]:
    """Delete the oldest checkpoints (other sessions first, never the current kernel's newest) until under budget.

    Returns notes saying what was deleted, for the status line.
    """
    notes: list[str] = []
    stores = all_sessions(root)
    usage = {s.dir: s.usage_bytes() for s in stores}
    total = sum(usage.values())
    if total <= budget_bytes:
        return notes
    # oldest manifests anywhere, except the newest of the current kernel (what a restore would need)
    refs = sorted((r for s in stores for r in s.manifests()), key=lambda r: (r.mtime, r.seq))
    newest_own = current.manifests(kernel_id)[-1:] if current.manifests(kernel_id) else []
    for ref in refs:
        if total <= budget_bytes:
            break
        if newest_own and ref.path == newest_own[0].path:
            continue
        _unlink(ref.path)
        store = BlobStore(ref.session_dir)
        before = usage.get(store.dir, 0)
        store.sweep_blobs(grace_seconds=0.0 if store.dir != current.dir else 60.0)
        after = store.usage_bytes()
        usage[store.dir] = after
        total -= before - after
        notes.append(f"deleted checkpoint {ref.path.name} of kernel {ref.kernel_id} to stay in the disk budget")
    return notes


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 (mkdir's ``parents`` would make them 0755):
    checkpoint folders hold users' data."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def _atomic_write(path: Path, view: memoryview | bytes, cancelled: Any = None) -> None:
    """Write ``view`` to ``path`` so a reader sees all of it or nothing: temp, fsync, rename, fsync dir.

    ``cancelled()`` is asked before each chunk: a thread writer holds the object it writes, so a cell's
    ``del`` of a 560 MiB array freed nothing until its blob was on disk, and the next cell was refused memory
    a stock kernel had (the guard's soak). ``Cancelled`` is raised, the temp file removed.
    """
    view = memoryview(view).cast("B")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        done = 0
        while done < view.nbytes:
            if cancelled is not None and cancelled():
                raise Cancelled
            end = min(done + _WRITE_CHUNK, view.nbytes)
            while done < end:
                done += os.write(fd, view[done:end])
            if view.nbytes > _WRITE_CHUNK:
                # why: a 400 MB blob left dirty in the page cache is charged to the kernel's cgroup
                os.fdatasync(fd)
                _drop_cache(fd, 0, done)
        os.fsync(fd)
        _drop_cache(fd, 0, 0)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _drop_cache(fd: int, offset: int, length: int) -> None:
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
