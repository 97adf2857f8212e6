"""The build backend: setuptools' own, except that a wheel is never built without the prebuilt Lab extension.

The wheel ships the JupyterLab 4 / Notebook 7 extension from ``labextension/build/labextension`` (setuptools
data-files). Built without it, the wheel installed fine and Lab silently showed no cause of any death; the
extension needs Node.js and the JupyterLab of a virtualenv to build (``make labextension``), which an isolated
PEP 517 build does not have, so the wheel build stops with one line saying what to run. Editable installs
(``pip install -e``) and sdists are setuptools' as they are: ``make labextension`` puts the extension in the venv.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every PEP 517/660 hook, as setuptools has them)

BUILT = Path("labextension") / "build" / "labextension"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # noqa: ANN001, ANN201
    """Return the wheel's file name, as setuptools builds it, once the prebuilt Lab extension is there."""
    if not (BUILT / "package.json").is_file() or not any((BUILT / "static").glob("*.js")):
        raise SystemExit(
            f"kernel-sentinel: no prebuilt Lab extension in {BUILT}/: run `make labextension` first "
            "(the wheel ships it; without it JupyterLab would show no cause of a death)"
        )
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
