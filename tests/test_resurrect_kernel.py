"""Acceptance: a real kernel in a 1 GiB cgroup is SIGKILLed; a new kernel restores its variables.

The kernels are stock ipykernels that load the checkpoint extension explicitly (the combined
``kernel_sentinel`` extension loads it too once the guard and the autopsy are wired in); the
kernelspec's env turns checkpoints on, as a user's kernel.json would.
"""

from __future__ import annotations

import signal
import sys

from conftest import GiB

LOAD = "from kernel_sentinel.resurrect.extension import load, checkpointer; _cp = load(get_ipython())"
ENV = {"KERNEL_SENTINEL_CHECKPOINT": "on"}
SENTINEL_SPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
    # jupyter_server names the notebook in JPY_SESSION_NAME: the key that joins the dead and the new kernel
    "env": {**ENV, "JPY_SESSION_NAME": "/home/user/analysis.ipynb"},
}

CHECKSUMS = """
import hashlib as _h, json as _json
def _sums():
    df_sum = _h.sha256(repr(list(zip(df.columns, map(str, df.dtypes)))).encode())
    df_sum.update(memoryview(pd.util.hash_pandas_object(df, index=True).to_numpy()))  # content, not pointers
    return {
        "big": _h.sha256(memoryview(big)).hexdigest() + str(big.shape) + str(big.dtype),
        "df": df_sum.hexdigest(),
        "d": _h.sha256(_json.dumps(d, sort_keys=True).encode()).hexdigest(),
        "f": _h.sha256(f.__code__.co_code + repr(f.__code__.co_consts).encode()).hexdigest() + repr([f(x) for x in range(5)]),
    }
print(_json.dumps(_sums()))
"""


def test_sigkilled_kernel_comes_back_in_a_new_kernel(kernel) -> None:
    old = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC)
    assert old.run(LOAD).ok
    cells = [
        "import numpy as np, pandas as pd",
        "big = np.random.default_rng(1).random(50_000_000)  # 400 MB",
        "big_alias = big",
        "df = pd.DataFrame({'x': np.arange(2_000_000), 'y': np.random.default_rng(2).random(2_000_000), "
        "'s': ['row%d' % (i % 97) for i in range(2_000_000)]})",
        "d = {'name': 'experiment', 'runs': [1, 2, 3], 'nested': {'lr': 0.01}}\nsame_d = d",
        "f = lambda x: x * 2 + 1",
        "log = open('run.log', 'w')",
    ]
    for code in cells:
        res = old.run(code)
        assert res.ok, res.text()
    before = old.run(CHECKSUMS)
    assert before.ok, before.text()
    # the checkpoint of the last cell is written by a writer off the critical path: wait for it, then kill
    status = old.run("_c = checkpointer(get_ipython()); _c.wait(); print(_c.status()); "
                     "print('unsaved:', [u['names'] for u in _c.last_manifest['unpicklable']])")
    assert "checkpoints: on" in status.stdout and "unsaved: [['log']]" in status.stdout, status.text()
    old.signal(signal.SIGKILL)
    assert old.wait_for_death() == -signal.SIGKILL

    new = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC)
    offered = new.run(LOAD)  # the first cell after a recorded death offers the restore
    assert offered.ok and "%sentinel restore" in offered.stdout and "not saved: log" in offered.stdout, offered.text()
    restored = new.run("%sentinel restore")
    assert restored.ok, restored.text()
    text = restored.stdout
    for name in ("big = big_alias", "df", "d = same_d", "f"):
        assert name in text, text
    assert "not restored: log" in text and "cell [" in text and "open('run.log', 'w')" in text, text
    after = new.run(CHECKSUMS)
    assert after.ok, after.text()
    # array, DataFrame, dict and lambda bit-identical (the last line: a note may precede it)
    assert after.stdout.strip().splitlines()[-1] == before.stdout.strip().splitlines()[-1]
    assert new.value("big_alias is big and same_d is d") is True
    assert new.value("'log' in globals()") is False
    # asked to, restore re-runs the cell that opened the file
    rerun = new.run("%sentinel restore --rerun")
    assert rerun.ok and "re-ran cell" in rerun.stdout and "ok" in rerun.stdout, rerun.text()
    assert new.value("log.name") == "run.log"
    assert new.oom_kills() == 0


def test_checkpoint_switch_and_status_in_a_kernel(kernel) -> None:
    k = kernel(limit_bytes=GiB // 4, env={"KERNEL_SENTINEL_CHECKPOINT": "off"})
    assert k.run(LOAD).ok
    assert "checkpoints: off" in k.run("%sentinel checkpoint status").stdout
    assert k.run("x = 41").ok
    assert "started 0" in k.run("%sentinel checkpoint status").stdout
    on = k.run("%sentinel checkpoint on")
    assert "checkpoints: on" in on.stdout, on.text()
    assert k.run("x = 42").ok
    out = k.run("checkpointer(get_ipython()).wait(); print(checkpointer(get_ipython()).describe_last())").stdout
    assert "written" in out, out
    assert "usage:" in k.run("%sentinel checkpoint sideways").stdout
    assert "usage:" in k.run("%sentinel restore --bogus").stdout
    listing = k.run("%sentinel restore --list").stdout
    assert "Checkpoints (newest first)" in listing and "after cell [" in listing, listing


def test_rewriting_a_big_array_while_the_fork_writer_saves_it_stays_in_budget(kernel) -> None:
    """Copy-on-write: pages the kernel rewrites while the forked writer still holds them are copied.

    The fork is taken only with that much headroom; otherwise the thread writer is used. Either way the
    kernel survives, nothing is OOM-killed, and the checkpoint holds the array as the cell left it.
    """
    k = kernel(limit_bytes=GiB, kernelspec=SENTINEL_SPEC)
    assert k.run(LOAD).ok
    assert k.run("import numpy as np\nbig = np.ones(50_000_000)  # 400 MB").ok
    for value in (2, 3):
        res = k.run(f"big[:] = {value}")  # runs while the previous cell's checkpoint is being written
        assert res.ok, res.text()
    out = k.run("_c = checkpointer(get_ipython()); _c.wait(); print(_c.describe_last(), _c.last_writer)")
    assert out.ok and ("written" in out.stdout or "nothing changed" in out.stdout), out.text()
    assert k.alive and k.oom_kills() == 0
    # one copy at a time: the kernel's own array goes before the checkpoint's is loaded beside it
    fresh = k.run("del big\nfrom kernel_sentinel.resurrect.restore import load_checkpoint\n_ns = {}\n"
                  "_r = load_checkpoint(_ns, kernel_id=_c.kernel_id)\nprint(float(_ns['big'][0]), float(_ns['big'][-1]))")
    assert fresh.ok and fresh.stdout.split() == ["3.0", "3.0"], fresh.text()
