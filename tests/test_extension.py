"""The sentinel kernelspec turns on all three in-kernel parts, and each can be switched off alone."""

from __future__ import annotations

import sys

SENTINEL = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]

PARTS = (
    "import kernel_sentinel.autopsy.recorder as _r, kernel_sentinel.guard.core as _g,"
    " kernel_sentinel.resurrect.extension as _c\n"
    "_cp = _c.checkpointer(get_ipython()); _gd = _g.get_guard()\n"
    "print(_r._recorder is not None, _gd is not None and _gd.enabled, _cp is not None and _cp.enabled)"
)


def _spec(env: dict[str, str] | None = None) -> dict:
    return {"argv": SENTINEL, "display_name": "sentinel", "language": "python", "env": env or {}}


def test_sentinel_kernel_loads_recorder_guard_and_checkpoints(kernel):
    k = kernel(kernelspec=_spec())
    res = k.run(PARTS)
    assert res.ok, res.text()
    assert res.stdout.split() == ["True", "True", "True"]


def test_guard_and_checkpoints_switch_off_alone(kernel):
    k = kernel(kernelspec=_spec({"KERNEL_SENTINEL_GUARD": "0", "KERNEL_SENTINEL_CHECKPOINT": "off"}))
    res = k.run(PARTS)
    assert res.ok, res.text()
    # The recorder stays on: deaths are explained with the guard and checkpoints off.
    assert res.stdout.split() == ["True", "False", "False"]


def test_load_ext_in_a_stock_kernel_and_unload(kernel):
    k = kernel()
    assert k.run("%load_ext kernel_sentinel").ok
    assert k.run(PARTS).stdout.split()[0] == "True"
    assert k.run("%unload_ext kernel_sentinel").ok
    res = k.run(PARTS)
    assert res.ok and res.stdout.split()[0] == "False" and res.stdout.split()[2] == "False"
