"""``%sentinel check`` and ``check_cell_source`` in a real kernel in a 512 MiB cgroup: live shapes, live headroom."""

from __future__ import annotations

import json

import nbformat
from conftest import MiB

LIMIT = 512 * MiB
SETUP = (
    "import numpy as np\n"
    "from kernel_sentinel.guard.magics import SentinelMagics\n"
    "get_ipython().register_magics(SentinelMagics)\n"
    "from kernel_sentinel.advise.live import check_cell_source\n"
    "def findings_of(code):\n"
    "    import json\n"
    "    print(json.dumps([f.to_dict() for f in check_cell_source(get_ipython(), code)]))\n"
)


def _findings(k, code: str) -> list[dict]:
    res = k.run(f"findings_of({code!r})")
    assert res.ok, res.text()
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_cell_source_uses_live_shapes_and_live_headroom(kernel) -> None:
    k = kernel(limit_bytes=LIMIT)
    assert k.run(SETUP).ok
    assert k.run("X = np.ones((2_000, 5_000))\nlabels = np.arange(2_000)").ok  # 80 MB, shape known only live

    pairwise = _findings(k, "D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1)")
    f = next(f for f in pairwise if f["kind"] == "big_allocation")
    assert f["estimate_bytes"] == 2_000 * 2_000 * 5_000 * 8 and f["severity"] == "error"
    assert 0 < f["budget_bytes"] < LIMIT  # the headroom now, less than the cgroup limit
    assert "free now" in f["message"]

    assert _findings(k, "Y = X * 3\nm = Y.mean()") == []  # 80 MB fits in the headroom

    wide = _findings(k, "Z = np.zeros((X.shape[0], 20_000))")  # 320 MB: most of what is left
    z = next(f for f in wide if f["kind"] == "big_allocation")
    assert z["estimate_bytes"] == 2_000 * 20_000 * 8

    # the checker ran nothing: the kernel is alive and has none of these names
    assert k.value("[n in globals() for n in ('D', 'Y', 'Z')]") == [False, False, False]
    assert k.alive and k.oom_kills() == 0


def test_magic_check_reports_out_and_checks_files_against_live_budget(kernel, tmp_path) -> None:
    k = kernel(limit_bytes=LIMIT)
    assert k.run(SETUP).ok
    shown = k.run("X = np.ones((2_000, 5_000))\nX * 2")  # an 80 MB result that only Out holds
    assert shown.ok
    for _ in range(3):
        assert k.run("1 + 1").ok
    res = k.run("%sentinel check")
    assert res.ok, res.text()
    assert f"Out[{shown.execution_count}]" in res.stdout and "kept_by_out" in res.stdout
    assert "no variable names it" in res.stdout

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\nbig = np.ones((30_000, 30_000))")]
    nbformat.write(nb, tmp_path / "next.ipynb")
    res = k.run(f"%sentinel check {tmp_path / 'next.ipynb'}")
    assert res.ok and "big_allocation" in res.stdout and "cell 0 line 2" in res.stdout, res.stdout
    res = k.run("%sentinel check /no/such/notebook.ipynb")
    assert res.ok and res.stdout.strip().count("\n") == 0 and "no such file" in res.stdout
    assert "check" in k.run("%sentinel nonsense").stdout  # listed in the usage line
