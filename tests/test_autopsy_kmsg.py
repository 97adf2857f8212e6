"""The kernel-log parser on real /dev/kmsg records captured on this machine (tests/samples/autopsy/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kernel_sentinel.autopsy.kmsg import kernel_log_evidence, parse_kmsg, read_kmsg

RAW = json.loads((Path(__file__).parent / "samples" / "autopsy" / "kmsg_records.json").read_text())
OOM = json.loads((Path(__file__).parent / "samples" / "autopsy" / "oom_cgroup.json").read_text())["evidence"]


def test_oom_kill_matches_pid_and_memcg():
    records = parse_kmsg(RAW)
    got = kernel_log_evidence(records, OOM["pid"], OOM["cgroup_path"])
    assert got["oom"]["scope"] == "cgroup"
    assert got["oom"]["constraint"] == "CONSTRAINT_MEMCG"
    assert got["oom"]["killed"]["anon_rss"] > 400 * 2**20
    assert len(got["lines"]) == 2


def test_same_pid_in_another_memcg_is_not_ours():
    records = parse_kmsg(RAW)
    got = kernel_log_evidence(records, OOM["pid"], "/some/other/group")
    assert "oom" not in got and got["lines"] == []
    assert "oom" not in kernel_log_evidence(records, OOM["pid"], None)


def test_records_before_the_process_started_are_ignored():
    records = parse_kmsg(RAW)
    latest = max(r.usec for r in records)
    assert "oom" not in kernel_log_evidence(records, OOM["pid"], OOM["cgroup_path"], since_usec=latest + 1)


def test_segfault_line_names_the_library():
    records = parse_kmsg(RAW)
    seg = next(r for r in records if "segfault at" in r.text)
    pid = int(seg.text.split("[", 1)[1].split("]", 1)[0])
    got = kernel_log_evidence(records, pid, None)
    assert got["fault"] == {"kind": "segfault", "address": "0", "library": "libc.so.6"}


def test_reading_the_live_log_never_raises():
    raw, problem = read_kmsg()
    if os.access("/dev/kmsg", os.R_OK):
        assert problem is None and raw
        assert parse_kmsg(raw)
    else:
        assert raw == [] and "not readable" in problem
    _, missing = read_kmsg("/nonexistent/kmsg")
    assert "not readable" in missing
