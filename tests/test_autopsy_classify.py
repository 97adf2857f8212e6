"""Classification and explanation, pure, on evidence captured from real deaths (tests/samples/autopsy/).

The samples were captured by tests/test_autopsy_kernels.py with KS_CAPTURE_SAMPLES=1: each holds the
evidence the supervisor (or the sweep) gathered and the report it produced. Variants remove parts of real
evidence to check that a verdict never claims more than the remaining evidence supports.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kernel_sentinel.autopsy.classify import classify, module_of, parse_fault
from kernel_sentinel.autopsy.evidence import Evidence
from kernel_sentinel.autopsy.explain import explain
from kernel_sentinel.autopsy.kmsg import kernel_log_evidence, parse_kmsg

SAMPLES = Path(__file__).parent / "samples" / "autopsy"
CONTRACT = ("kernel_id", "cause", "summary", "exit", "cell", "memory", "remedy")


def sample(name: str) -> Evidence:
    data = json.loads((SAMPLES / f"{name}.json").read_text())
    return Evidence.from_dict(data["evidence"])


def report_of(ev: Evidence) -> dict:
    return explain(ev, classify(ev))


@pytest.mark.parametrize(
    ("name", "cause", "exit", "line"),
    [
        ("segfault", "segfault", {"signal": "SIGSEGV"}, 3),
        ("abort", "abort", {"signal": "SIGABRT"}, 2),
        ("exit3", "exit", {"code": 3}, None),
        ("oom_cgroup", "oom_kill", {"signal": "SIGKILL"}, 4),
        ("external_sigkill_child", "external_kill", {"signal": "SIGKILL"}, 2),
        ("external_sigterm_child", "external_kill", {"signal": "SIGTERM"}, 2),
        ("external_sigkill_supervisor", "external_kill", {"signal": "SIGKILL", "inferred": True}, 2),
        ("bus_error_disk_full", "bus_error", {"signal": "SIGBUS"}, 3),
    ],
)
def test_captured_deaths(name, cause, exit, line):
    ev = sample(name)
    report = report_of(ev)
    assert report["cause"] == cause
    assert report["exit"] == exit
    assert report["cell"]["execution_count"] == 2
    if line is not None:
        assert report["cell"]["line"] == line
    for key in CONTRACT:
        assert key in report
    assert report["summary"] and report["remedy"]
    json.dumps(report)  # the report is JSON as it is


def test_oom_scope_and_proof_from_both_sources():
    report = report_of(sample("oom_cgroup"))
    assert report["scope"] == "cgroup"
    assert len(report["evidence"]["proof"]) == 2
    assert "512 MiB" in report["summary"]


def test_oom_confirmed_by_counter_alone_or_kernel_log_alone():
    ev = sample("oom_cgroup")
    no_log = copy.deepcopy(ev)
    no_log.kernel_log = None
    assert classify(no_log).cause == "oom_kill"
    no_counter = copy.deepcopy(ev)
    no_counter.oom_kills_before = no_counter.oom_kills_after = None
    assert classify(no_counter).cause == "oom_kill"
    assert classify(no_counter).scope == "cgroup"  # from the kernel log's CONSTRAINT_MEMCG


def test_sigkill_without_oom_evidence_is_never_called_oom():
    ev = sample("oom_cgroup")
    ev.kernel_log = None
    ev.oom_kills_before = ev.oom_kills_after = None
    verdict = classify(ev)
    assert verdict.cause == "external_kill" and verdict.signal == "SIGKILL"
    assert "not shown to be the OOM killer" in verdict.proof[-1]


def test_kernel_log_of_another_pid_is_not_proof():
    ev = sample("external_sigkill_child")
    raw = json.loads((SAMPLES / "kmsg_records.json").read_text())  # holds real OOM kills of other kernels
    ev.kernel_log = kernel_log_evidence(parse_kmsg(raw), ev.pid, ev.cgroup_path)
    assert "oom" not in ev.kernel_log
    assert classify(ev).cause == "external_kill"


def test_segfault_names_module_and_faulthandler_line():
    report = report_of(sample("segfault"))
    assert report["native_module"] == "ctypes"
    assert report["evidence"]["line_source"] == "faulthandler"
    assert report["evidence"]["faulthandler"][0] == "Fatal Python error: Segmentation fault"


def test_truncated_faulthandler_output_degrades_to_sampled_line():
    ev = sample("segfault")
    assert ev.fault_text
    ev.fault_text = ev.fault_text[: ev.fault_text.index("Current thread") + 20]
    verdict = classify(ev)
    assert verdict.cause == "segfault"  # the exit status still says so
    assert verdict.native_module is None


def test_bus_error_without_full_filesystem_is_not_disk_full():
    ev = sample("bus_error_disk_full")
    assert classify(ev).disk_full is not None
    for fs in ev.disk:
        fs["free_bytes"] = fs["total_bytes"] // 2
    report = report_of(ev)
    assert report["cause"] == "bus_error" and report["disk_full"] is False


def test_no_flight_record_is_a_degraded_but_complete_report():
    ev = sample("exit3")
    ev.flight = {}
    ev.notes.append("no flight record")
    report = report_of(ev)
    assert report["cause"] == "exit" and report["cell"] is None
    assert report["memory"]["budget_bytes"] is None
    assert "not known" in report["summary"]
    assert report["evidence"]["flight_record"] == "missing"


def test_nothing_known_is_unknown():
    report = report_of(Evidence(kernel_id="k"))
    assert report["cause"] == "unknown" and report["exit"] is None


def test_shutdown_requested_is_read_from_the_record():
    ev = sample("exit3")
    assert not ev.shutdown_requested
    ev.flight["state"] = {"state": "shutdown_requested", "restart": True}
    assert ev.shutdown_requested


def test_parse_fault_picks_the_current_thread_and_the_outermost_cell_frame():
    text = (
        "Fatal Python error: Segmentation fault\n\n"
        "Thread 0x1 (most recent call first):\n"
        '  File "/usr/lib/python3.11/threading.py", line 324 in wait\n\n'
        "Current thread 0x2 (most recent call first):\n"
        '  File "/x/site-packages/numpy/core/fromnumeric.py", line 10 in sort\n'
        '  File "/tmp/ipykernel_7/123.py", line 2 in helper\n'
        '  File "/tmp/ipykernel_7/123.py", line 5 in <module>\n'
        '  File "/x/site-packages/IPython/core/interactiveshell.py", line 3577 in run_code\n\n'
        "Extension modules: numpy.core._multiarray_umath (total: 1)\n"
    )
    fault = parse_fault(text)
    assert fault["line"] == 5 and fault["native_module"] == "numpy"
    assert module_of("/root/.pyenv/versions/3.11.7/lib/python3.11/ctypes/__init__.py") == "ctypes"


def test_oom_seen_only_by_the_sweep_has_no_exit_status():
    report = report_of(sample("oom_cgroup_no_supervisor"))
    assert report["cause"] == "oom_kill" and report["exit"] is None
    assert report["cell"]["execution_count"] == 3
    assert any("OOM-kill counter" in p for p in report["evidence"]["proof"])


def test_runaway_recursion_is_named_in_an_oom_kill():
    report = report_of(sample("oom_recursion"))
    assert report["cause"] == "oom_kill"
    assert report["memory"]["recursion_depth_at_least"] is True
    assert report["cell"]["line"] == 4 and "runaway recursion" in report["summary"]
