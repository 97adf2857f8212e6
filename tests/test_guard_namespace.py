"""namespace_report: the largest variables and the hidden references, sized cheaply, in a real kernel."""

from __future__ import annotations

import sys
import textwrap

from conftest import MiB

from kernel_sentinel.guard.namespace import NamespaceReport, size_of

REPORT = "__import__('kernel_sentinel.guard.namespace', fromlist=['x']).namespace_report(get_ipython(), n={n}).to_dict()"


def _report(k, n: int = 10) -> NamespaceReport:
    return NamespaceReport.from_dict(k.value(REPORT.format(n=n)))


def _var(report: NamespaceReport, name: str):
    found = [v for v in report.variables if v.name == name]
    assert found, f"{name} not in {[v.name for v in report.variables]}"
    return found[0]


def test_sizes_of_common_objects_in_this_process() -> None:
    """Metadata sizes are exact; sampled containers land near the true deep size."""
    import numpy as np
    import pandas as pd

    arr = np.zeros((100, 1000))
    assert size_of(arr)[:2] == (arr.nbytes, True)
    # A column of Python objects is sampled (pandas 3 keeps plain text in Arrow buffers, which are exact).
    text = pd.Series([f"row-{i:08d}" for i in range(20000)], dtype=object)
    df = pd.DataFrame({"a": np.arange(20000), "s": text})
    est, exact, detail = size_of(df)
    deep = int(df.memory_usage(deep=True, index=True).sum())
    assert not exact and "20,000 rows" in detail
    assert 0.7 * deep < est < 1.3 * deep
    arrow_text = pd.DataFrame({"a": np.arange(20000), "s": [f"row-{i:08d}" for i in range(20000)]})
    est, exact, detail = size_of(arrow_text)
    assert exact is (arrow_text["s"].dtype != object) and "20,000 rows" in detail
    assert 0.7 * int(arrow_text.memory_usage(deep=True, index=True).sum()) < est
    items = [bytes(100 + i % 50) for i in range(50000)]
    true = sys.getsizeof(items) + sum(sys.getsizeof(x) for x in items)
    est, exact, _ = size_of(items)
    assert 0.9 * true < est < 1.1 * true
    assert size_of(b"x" * 1000)[0] >= 1000


def test_sampling_is_bounded_for_huge_containers() -> None:
    """A million-element list is sized from a sample: only a bounded number of elements is ever looked at."""
    looked: list[int] = []

    class Counted:
        def __sizeof__(self) -> int:
            looked.append(1)
            return 100

    big = [Counted() for _ in range(1_000_000)]
    est, exact, _ = size_of(big)
    assert not exact
    assert len(looked) <= 200, f"looked at {len(looked)} elements"
    true = sys.getsizeof(big) + sys.getsizeof(big[0]) * len(big)  # __sizeof__ plus the GC header
    looked.clear()
    assert 0.95 * true < est < 1.05 * true


def test_report_in_a_real_kernel_names_the_largest_variables_first(kernel) -> None:
    k = kernel(limit_bytes=1024 * MiB)
    res = k.run(
        textwrap.dedent(
            """
            import numpy as np, pandas as pd
            arr = np.ones((2000, 10000))                    # 160 MB, exact
            df = pd.DataFrame({"x": np.arange(1_000_000), "name": [f"customer-{i}" for i in range(1_000_000)]})
            same = arr                                       # the same object: counted once
            words = ["w" * 200 for _ in range(100_000)]      # ~25 MB of str, sampled
            small = 3
            deep_df = int(df.memory_usage(deep=True, index=True).sum())
            """
        )
    )
    assert res.ok, res.text()
    report = _report(k)
    names = [v.name for v in report.variables]
    assert names[0] == "arr"
    assert "same" not in names  # second name of an already counted object
    assert "small" not in names[:3]
    arr = _var(report, "arr")
    assert arr.exact and arr.nbytes == 2000 * 10000 * 8 and arr.detail == "(2000, 10000) float64"
    df = _var(report, "df")
    deep = k.value("deep_df")
    assert 0.7 * deep < df.nbytes < 1.3 * deep, (df.nbytes, deep)
    words = _var(report, "words")
    assert k.run("import sys; true_words = sys.getsizeof(words) + sum(sys.getsizeof(w) for w in words)").ok
    true_words = k.value("true_words")
    assert 0.9 * true_words < words.nbytes < 1.1 * true_words
    assert not report.truncated


def test_report_finds_memory_held_only_by_hidden_references(kernel) -> None:
    """Displayed outputs live on in Out; a failed function's locals live on in the last traceback."""
    k = kernel(limit_bytes=1024 * MiB)
    assert k.run("import numpy as np\ndef make(n): return np.ones(n * 1024 * 1024 // 8)").ok
    for _ in range(3):
        assert k.run("make(64)").ok  # displayed, so cached in Out, _ ...
    res = k.run(
        textwrap.dedent(
            """
            def fails():
                local_block = np.ones(100 * 1024 * 1024 // 8)
                raise ValueError("after allocating")
            fails()
            """
        )
    )
    assert res.ename == "ValueError"
    report = _report(k)
    hidden = {h.name: h for h in report.hidden}
    assert "Out" in hidden and hidden["Out"].count == 3
    assert hidden["Out"].exclusive_bytes >= 3 * 64 * MiB
    assert "ndarray" in hidden["Out"].holds
    tb = hidden["last traceback"]
    assert tb.exclusive_bytes >= 100 * MiB
    assert "fails()" in tb.holds
    # Naming an output makes it a user variable: then clearing Out would not free it.
    assert k.run("kept = Out[max(Out)]").ok
    hidden2 = {h.name: h for h in _report(k).hidden}
    assert hidden2["Out"].exclusive_bytes <= hidden["Out"].exclusive_bytes - 64 * MiB


def test_report_does_not_keep_a_failed_frame_alive(kernel) -> None:
    """Sizing the traceback's locals must not create the f_locals snapshot that would pin them (3.11)."""
    k = kernel(limit_bytes=1024 * MiB)
    assert k.run("import gc, sys, weakref\nclass Block: pass").ok
    res = k.run(
        "def fails():\n"
        "    global ref\n"
        "    block = Block(); block.data = bytearray(50 * 1024 * 1024); ref = weakref.ref(block)\n"
        "    raise ValueError('x')\n"
        "fails()"
    )
    assert res.ename == "ValueError"
    assert k.value("ref() is not None")  # the traceback holds it: the check below can fail
    report = _report(k)
    assert any(h.name == "last traceback" and h.exclusive_bytes >= 50 * MiB for h in report.hidden)
    assert k.run(
        "get_ipython().InteractiveTB.tb = None\n"
        "sys.last_type = sys.last_value = sys.last_traceback = None\n"
        "gc.collect()"
    ).ok
    assert k.value("ref() is None")
