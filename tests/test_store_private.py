"""Files holding users' code and data are private: checkpoint folders 0700, their files 0600."""

from __future__ import annotations

import os
import stat

from kernel_sentinel.resurrect.blobs import BlobStore, checkpoints_root
from kernel_sentinel.resurrect.detect import blob_id


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_checkpoint_folders_and_files_are_private(tmp_path):
    os.umask(0o022)
    root = checkpoints_root(tmp_path / "home")
    store = BlobStore(root / "session-1")
    data = b"a user's dataframe" * 100
    bid = blob_id(data)
    store.write_blob(bid, data)
    manifest = store.write_manifest("kernel-1", 1, {"names": {}})
    for folder in (root, store.dir, store.blob_path(bid).parent, manifest.parent):
        assert _mode(folder) == 0o700, folder
    for file in (store.blob_path(bid), manifest):
        assert _mode(file) == 0o600, file


def test_a_kernels_checkpointer_makes_its_folders_private(tmp_path):
    """The checkpoints folder the kernel's checkpointer makes at load is 0700 too, parents included."""
    from kernel_sentinel.resurrect.checkpoint import Checkpointer

    os.umask(0o022)
    home = tmp_path / "home"
    cp = Checkpointer({}, enabled=False, kernel_id="k1", session_key="s", home=home)
    try:
        for folder in (home, checkpoints_root(home)):
            assert _mode(folder) == 0o700, folder
    finally:
        close = getattr(cp, "close", None)
        if close:
            close()
