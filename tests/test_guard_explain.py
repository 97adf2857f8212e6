"""explain_memory_error and the rendered error, on evidence captured from real guarded failures.

The samples in tests/samples/guard_evidence/ were written by capture.py there: each is what the guard's core
(``Guard.begin_failure``) returned in a real kernel in a 1 GiB cgroup, plus the namespace report taken at
that moment. These tests are pure: no kernel needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SENTINEL_KERNELSPEC

from kernel_sentinel.guard.explain import MemoryExplanation, explain_memory_error, short_source
from kernel_sentinel.guard.namespace import HiddenRef, NamespaceReport, VariableSize
from kernel_sentinel.records import GuardEvidence
from kernel_sentinel.report import memory_error


def render(e: MemoryExplanation, evidence: dict | None = None) -> dict:
    """Return the bundle the guard displays: it renders the record it builds from the evidence and explanation."""
    return memory_error.render(GuardEvidence.explained(evidence or {}, e.to_dict()))


def error_message(e: MemoryExplanation) -> str:
    """Return the error's one-line message, as the guard makes it (from the record)."""
    return memory_error.error_message(GuardEvidence.explained({}, e.to_dict()))

SAMPLES = Path(__file__).parent / "samples" / "guard_evidence"
MiB = 1 << 20


def sample(name: str) -> tuple[dict, NamespaceReport]:
    data = json.loads((SAMPLES / f"{name}.json").read_text())
    return data["evidence"], NamespaceReport.from_dict(data["report"])


def explain(name: str) -> MemoryExplanation:
    return explain_memory_error(*sample(name))


EXPECTED_REMEDY = {
    "numpy_huge": "memmap",  # 3 GB float64 in a 1 GiB budget: even float32 does not fit
    "numpy_float64_fits_as_float32": "smaller_dtype",
    "big_variable_then_alloc": "smaller_dtype",
    "merge_explosion": "merge_keys",
    "append_loop": "bounded_growth",
    "read_csv": "chunked_read",
    "out_cache": "free_hidden",
    "ctypes_buffer": "generic",
    "recursion": "recursion",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REMEDY))
def test_each_captured_failure_gets_its_remedy(name: str) -> None:
    e = explain(name)
    assert e.remedy_kind == EXPECTED_REMEDY[name], (e.remedy_kind, e.remedy)
    assert e.headline and e.remedy
    assert "intact" in " ".join(e.facts)
    assert e.budget_bytes and e.budget_source


def test_the_text_is_short_enough_to_read_in_ten_seconds() -> None:
    for name in EXPECTED_REMEDY:
        text = render(explain(name))["text/plain"]
        words = len(text.split())
        assert len(text.splitlines()) <= 9 and words <= 130, (name, words, text)


def test_a_stopped_recursion_is_named_with_its_function_and_depth() -> None:
    evidence, _ = sample("recursion")
    e = explain("recursion")
    depth = evidence["recursion_depth"]
    assert depth > 100_000 and evidence["recursion_function"] == "f"
    assert f"runaway recursion: f() called itself {depth:,} levels deep" in e.headline
    assert "sys.setrecursionlimit" in e.remedy and "loop" in e.remedy
    assert "runaway recursion" in error_message(e)
    # Counted on the traceback (the fence stopped it, and unwinding at the fence loses entries): a lower bound.
    report = sample("recursion")[1]
    e = explain_memory_error({**evidence, "recursion_depth_at_least": True}, report)
    assert f"runaway recursion: f() called itself at least {depth:,} levels deep" in e.headline


def test_numpy_headline_says_what_was_asked_for_and_the_budget_source() -> None:
    e = explain("numpy_huge")
    assert e.headline.startswith("Cell [4] needed 3.0 GiB at once")
    assert "1.0 GiB" in e.headline
    text = render(e)["text/plain"]
    assert "memory cgroup's limit (cgroup v1 .../ks-test-" in text
    assert "np.memmap" in e.remedy and "SIGBUS" in e.remedy and "disk" in e.remedy


def test_smaller_dtype_only_when_half_fits_in_what_the_guard_allows() -> None:
    e = explain("numpy_float64_fits_as_float32")
    assert "np.float32" in e.remedy and "229 MiB" in e.remedy
    ev, rep = sample("numpy_float64_fits_as_float32")
    ev = {**ev, "requested_bytes": 2 * 458 * MiB * 2}  # half would not fit either
    assert explain_memory_error(ev, rep).remedy_kind == "memmap"
    ev = {**ev, "requested_bytes": 458 * MiB, "code": "x = np.zeros(n, dtype=np.int64)"}
    assert "np.int32" in explain_memory_error(ev, rep).remedy


# 03.12's refusal in the real-notebooks bench (384 MiB, 2026-12-01): the generator's DataFrames built so far were
# freed as the MemoryError unwound, before the guard read its figures.
PARTIAL_RESULTS_FREED = {
    "trigger": "fence", "requested_bytes": 80000000, "budget_bytes": 402653184, "budget_source": "cgroup v1 /x/ks-test",
    "budget_kind": "cgroup", "usage_bytes": 191172608, "unfilled_bytes": 0, "rss_bytes": 238862336,
    "working_set_bytes": 191172608, "vm_data_bytes": 411942912, "fence_bytes": 428720128,
    "interrupt_at_bytes": 360710144, "cell": 6,
    "code": "df1, df2, df3, df4 = (pd.DataFrame(rng.random((nrows, ncols)))\n                      for i in range(4))",
    "usage_at_cell_start_bytes": 82063360, "peak_usage_bytes": 350187520, "watchdog_fired": False,
    "exception": "MemoryError: Unable to allocate 76.3 MiB for an array with shape (100000, 100) and data type float64",
}


def test_a_refusal_whose_partial_results_were_freed_says_how_full_the_budget_was() -> None:
    e = explain_memory_error(PARTIAL_RESULTS_FREED, None)
    # not "needed 76.3 MiB at once, with 182 MiB of the 384 MiB memory budget already in use": that does not add up
    assert e.headline.startswith("Cell [6] needed 76.3 MiB at once, after memory use had reached 334 MiB of the 384 MiB")
    assert "182 MiB in use now" in e.headline
    # where the figures do add up, the usage as before
    e = explain_memory_error({**PARTIAL_RESULTS_FREED, "peak_usage_bytes": 191172608}, None)
    assert "with 182 MiB of the 384 MiB memory budget already in use." in e.headline
    e = explain_memory_error({**PARTIAL_RESULTS_FREED, "requested_bytes": 300 * MiB}, None)
    assert "with 182 MiB of the 384 MiB memory budget already in use." in e.headline
    # what is allocated and not yet filled counts as taken
    e = explain_memory_error({**PARTIAL_RESULTS_FREED, "peak_usage_bytes": 191172608, "unfilled_bytes": 150 * MiB}, None)
    assert "already in use and 150 MiB more allocated but not yet filled." in e.headline


def test_watchdog_headline_uses_the_usage_when_it_stopped_the_cell_not_after() -> None:
    e = explain("read_csv")
    assert "361 MiB of the 400 MiB budget" in e.headline
    assert "KERNEL_SENTINEL_MEMORY_LIMIT" in " ".join(e.facts)
    assert "chunksize=" in e.remedy


def test_out_cache_names_out_and_what_it_holds() -> None:
    e = explain("out_cache")
    assert "%sentinel free" in e.remedy and "Out" in e.remedy
    (out,) = [h for h in e.hidden if h.name == "Out"]
    assert out.exclusive_bytes >= 500 * MiB and "DataFrame" in out.holds
    assert all(h.name != "_ / __ / ___" for h in e.hidden)  # the same objects as Out: not repeated


def test_del_of_a_big_variable_the_cell_does_not_use() -> None:
    ev, rep = sample("big_variable_then_alloc")
    ev = {**ev, "code": "blob = bytearray(640_000_000)"}
    e = explain_memory_error(ev, rep)
    assert e.remedy_kind == "del" and e.remedy.startswith("`del df` frees 305 MiB")
    ev = {**ev, "code": "blob = bytes(df.values)"}  # the cell uses df: deleting it would not help
    assert explain_memory_error(ev, rep).remedy_kind != "del"


def test_no_report_and_sparse_evidence_still_explain() -> None:
    e = explain_memory_error({"trigger": "fence"}, None)
    assert e.headline.startswith("This cell")
    assert e.remedy_kind == "generic"
    assert render(e)["text/plain"].startswith("MemoryBudgetError: ")
    assert error_message(e)


def test_background_thread() -> None:
    ev, rep = sample("append_loop")
    e = explain_memory_error({**ev, "background": True, "code": ""}, rep)
    assert "no cell was running" in e.headline and e.remedy_kind == "background"


def test_short_source() -> None:
    assert short_source("cgroup v2 /") == "the memory cgroup's limit (cgroup v2 /)"
    assert short_source("cgroup v1 /a/b/c/kernel") == "the memory cgroup's limit (cgroup v1 .../kernel)"
    assert short_source("system RAM") == "system RAM"
    assert short_source(None) == "unknown"


def test_html_is_escaped_and_self_contained() -> None:
    rep = NamespaceReport(
        variables=(VariableSize("<script>alert(1)</script>", "DataFrame", 300 * MiB, False, "a & b"),),
        hidden=(HiddenRef("Out", 200 * MiB, 200 * MiB, "Out[3] <b>x</b>", 1),),
        total_bytes=300 * MiB,
        variable_count=1,
    )
    ev = {"trigger": "fence", "requested_bytes": 400 * MiB, "budget_bytes": 1024 * MiB,
          "budget_source": "cgroup v2 /<evil>", "usage_bytes": 700 * MiB, "cell": 3, "code": "x = '<img src=x>'"}
    bundle = render(explain_memory_error(ev, rep))
    html = bundle["text/html"]
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;evil&gt;" in html
    assert not re.search(r"(src|href)\s*=", html), "no external resources"
    assert "onerror" not in html.lower()
    assert bundle["text/plain"].count("\n") >= 3


def test_error_message_is_one_line_with_headline_and_remedy() -> None:
    e = explain("merge_explosion")
    msg = error_message(e)
    assert "\n" not in msg
    assert msg.startswith(e.headline) and "join keys" in msg


# --- in a real guarded kernel -----------------------------------------------------------------------------

GUARDED = SENTINEL_KERNELSPEC


def test_rendered_error_names_budget_source_largest_variable_and_remedy(kernel) -> None:
    k = kernel(limit_bytes=1024 * MiB, kernelspec=GUARDED)
    assert k.run("import numpy as np, pandas as pd\nsales = pd.DataFrame(np.ones((3_000_000, 10)))").ok
    res = k.run("grid = np.zeros((20000, 20000))")
    assert res.ename == "MemoryBudgetError", res.text()
    text = res.text()
    print(text)
    assert "MemoryBudgetError: Cell [2] needed 3.0 GiB at once" in text
    assert "Budget: 1.0 GiB, set by the memory cgroup's limit (cgroup v1 .../ks-test-" in text
    assert "Largest variables: sales 229 MiB (DataFrame, 3,000,000 rows x 10 columns)" in text
    assert "-> Keep it on disk: `np.memmap(" in text
    html = res.html()
    assert "kernel-sentinel-memory-error" in html and "sales" in html and "<code>np.memmap(" in html
    assert "Try: Keep it on disk." in res.evalue and "\n" not in res.evalue
    assert k.alive and k.oom_kills() == 0 and k.value("sales.shape[0]") == 3_000_000


def test_outputs_filling_the_budget_lead_to_sentinel_free_which_works(kernel) -> None:
    k = kernel(limit_bytes=1024 * MiB, kernelspec=GUARDED)
    assert k.run("import numpy as np, pandas as pd").ok
    for seed in range(5):  # 5 x 128 MB displayed frames: Out keeps them all
        assert k.run(f"pd.DataFrame(np.full((2_000_000, 8), {seed}.0))").ok
    code = "result = pd.DataFrame(np.ones((4_000_000, 8)))"  # 256 MB more does not fit
    res = k.run(code)
    assert res.ename == "MemoryBudgetError", res.text()
    text = res.text()
    assert "Hidden: Out holds" in text and "-> Run `%sentinel free`" in text, text
    freed = k.run("%sentinel free")
    assert freed.stdout.startswith("Dropped: Out (5 results"), freed.text()
    again = k.run(code)
    assert again.ok, again.text()
    assert k.oom_kills() == 0
