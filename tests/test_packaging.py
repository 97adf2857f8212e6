"""The wheel: it ships the prebuilt Lab extension, and is never built without it (one line saying what to run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "labextension" / "build" / "labextension"


def _source_copy(dest: Path, with_lab: bool) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("build_support", "src", "jupyter-config"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / "labextension").mkdir()
    if with_lab:
        shutil.copytree(BUILT, dest / "labextension" / "build" / "labextension")
    return dest


def _wheel(src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )


def test_a_wheel_without_the_prebuilt_lab_extension_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src", with_lab=False)
    res = _wheel(src, tmp_path / "out")
    assert res.returncode != 0
    assert "no prebuilt Lab extension" in res.stdout + res.stderr and "make labextension" in res.stdout + res.stderr
    assert not list((tmp_path / "out").glob("*.whl"))


@pytest.mark.skipif(not (BUILT / "package.json").is_file(), reason="the Lab extension is not built (make labextension)")
def test_the_wheel_ships_the_lab_extension_and_the_server_config(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    res = _wheel(_source_copy(tmp_path / "src", with_lab=True), tmp_path / "out")
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("kernel_sentinel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("share/jupyter/labextensions/kernel-sentinel/package.json") for n in names)
    assert any("/share/jupyter/labextensions/kernel-sentinel/static/" in n and n.endswith(".js") for n in names)
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/kernel_sentinel.json") for n in names)
