"""%sentinel in a real guarded kernel (the sentinel kernelspec's argv) inside a real memory cgroup."""

from __future__ import annotations

import textwrap

from conftest import SENTINEL_KERNELSPEC, MiB
from test_guard_reclaim import rss

GUARDED = SENTINEL_KERNELSPEC


def guarded(kernel, limit: int = 1024 * MiB):
    k = kernel(limit_bytes=limit, kernelspec=GUARDED)
    assert k.value("'kernel_sentinel' in get_ipython().extension_manager.loaded"), "the extension did not load"
    return k


def test_status_shows_budget_source_usage_and_top_variables(kernel) -> None:
    k = guarded(kernel)
    assert k.run("import numpy as np\nweights = np.ones((2000, 10000))\nnames = ['n' * 100] * 1000").ok
    res = k.run("%sentinel")
    assert res.ok, res.text()
    text = res.text()
    assert "Guard: on. Budget: 1.0 GiB, set by the memory cgroup's limit (cgroup v1 .../ks-test-" in text
    assert "Kernel RSS:" in text
    lines = text.splitlines()
    largest = lines.index("Largest:")
    assert lines[largest + 1].split()[:3] == ["weights", "153", "MiB"]
    html = res.html()
    assert "<table" in html and "weights" in html and "<script" not in html


def test_budget_then_an_allocation_over_it_fails_with_memory_budget_error(kernel) -> None:
    k = guarded(kernel)
    assert k.run("import numpy as np\nkept = list(range(1000))").ok
    res = k.run("%sentinel budget 300M")
    assert res.ok and "Budget: 300 MiB, set by %sentinel budget 300M." in res.stdout, res.text()
    res = k.run("b = np.ones(400 * 1024 * 1024 // 8)")
    assert res.status == "error" and res.ename == "MemoryBudgetError", res.text()
    assert "300 MiB" in res.evalue
    assert k.alive and k.oom_kills() == 0
    assert k.value("len(kept)") == 1000
    assert k.run("c = np.ones(100 * 1024 * 1024 // 8)").ok  # within the budget: left alone
    res = k.run("%sentinel budget reset")
    assert "1.0 GiB" in res.stdout
    res = k.run("%sentinel budget 50%")
    assert "Budget: 512 MiB" in res.stdout  # a share of what the machine (here: the cgroup) allows


def test_bad_input_is_one_line_never_a_traceback(kernel) -> None:
    k = guarded(kernel)
    for line, expected in [
        ("%sentinel bogus", "usage: %sentinel [budget [SIZE|reset] | free | on | off"),
        ("%sentinel budget 12Q", "%sentinel budget: unknown unit 'Q' in '12Q'"),
        ("%sentinel budget 0", "%sentinel budget: size must be positive"),
        ("%sentinel budget 4G 5G", "usage: %sentinel budget"),
        ("%sentinel budget 1M", "%sentinel budget: 1M is less than the "),  # below current usage
        ("%sentinel free now", "usage: %sentinel free"),
    ]:
        res = k.run(line)
        assert res.ok and not res.ename, (line, res.text())
        assert res.stdout.startswith(expected), (line, res.stdout)
        assert res.stdout.count("\n") == 1, (line, res.stdout)


def test_off_and_on(kernel) -> None:
    k = guarded(kernel)
    res = k.run("%sentinel off")
    assert res.ok and res.stdout.startswith("Guard off")
    assert k.value("__import__('kernel_sentinel.guard', fromlist=['x']).get_guard().enabled") is False
    res = k.run("%sentinel on")
    assert res.ok and res.stdout.startswith("Guard on. Budget: 1.0 GiB")
    assert k.value("__import__('kernel_sentinel.guard', fromlist=['x']).get_guard().enabled") is True


def test_free_after_displaying_large_dataframes_gives_the_memory_back(kernel) -> None:
    k = guarded(kernel)
    assert k.run("import numpy as np, pandas as pd").ok
    before = rss(k.kernel_pid)
    for seed in range(4):  # four 76 MB frames, displayed: only Out, _N and _ hold them
        res = k.run(f"pd.DataFrame(np.random.default_rng({seed}).random((1_000_000, 10)))")
        assert res.ok, res.text()
    grown = rss(k.kernel_pid)
    assert grown > before + 250 * MiB
    status = k.run("%sentinel").text()
    assert "Out (hidden)" in status and "%sentinel free` would drop" in status
    res = k.run("%sentinel free")
    assert res.ok, res.text()
    after = rss(k.kernel_pid)
    assert res.stdout.startswith("Dropped: Out (4 results"), res.stdout
    assert after <= before * 1.10, f"{before / MiB:.0f} MiB before, {grown / MiB:.0f} with the frames, {after / MiB:.0f} after"
    print(f"%sentinel free: RSS {before / MiB:.0f} -> {grown / MiB:.0f} -> {after / MiB:.0f} MiB")


def test_other_parts_can_register_a_subcommand(kernel) -> None:
    k = guarded(kernel)
    code = textwrap.dedent(
        """
        from kernel_sentinel.guard.magics import register_subcommand
        register_subcommand("hello", lambda magics, args: print("hello", *args), "hello [NAME]")
        """
    )
    assert k.run(code).ok
    assert k.run("%sentinel hello world").stdout == "hello world\n"
    assert "hello [NAME]" in k.run("%sentinel nope").stdout


def test_without_the_guard_status_still_works_and_controls_say_how_to_load_it(kernel) -> None:
    k = kernel(limit_bytes=512 * MiB)  # a stock ipykernel
    assert k.run("from kernel_sentinel.guard.magics import SentinelMagics\nget_ipython().register_magics(SentinelMagics)").ok
    res = k.run("%sentinel")
    assert res.ok and res.text().startswith("Guard: not loaded. Budget: 512 MiB"), res.text()
    for line in ("%sentinel off", "%sentinel budget 100M"):
        res = k.run(line)
        assert res.stdout == "The guard is not loaded in this kernel: run `%load_ext kernel_sentinel` first.\n"
    assert k.run("%load_ext kernel_sentinel").ok
    assert k.run("%sentinel").text().startswith("Guard: on. Budget: 512 MiB")
