"""The server extension's pure parts: a stock kernel's report from what the server saw, the guard state, the event.

The event test registers the schema on a real ``jupyter_events.EventLogger`` and emits every captured
autopsy report (tests/samples/autopsy/) through it, so a report the schema refused would fail here first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import pytest
from jupyter_events import EventLogger

from kernel_sentinel.server.events import SCHEMA_ID, event_data, event_schema
from kernel_sentinel.memory.model import CgroupMemory, Limit, MemorySnapshot, ProcessMemory
from kernel_sentinel.server.status import guard_budget, guard_settings, guard_state, in_use, memory_errors
from kernel_sentinel.store import STORE_NAME, Store
from kernel_sentinel.server.stock import SENTINEL_HINT, DeathSeen, stock_evidence, stock_report, with_where

SAMPLES = Path(__file__).parent / "samples" / "autopsy"
MiB = 1 << 20
CGROUP_MEMORY = {
    "t": 1.0,
    "budget_bytes": 512 * MiB,
    "source": "cgroup v1 /ks-test/x",
    "rss_bytes": 60 * MiB,
    "peak_rss_bytes": 70 * MiB,
    "cgroup": {"path": "/ks-test/x", "directory": "/sys/fs/cgroup/memory/ks-test/x", "version": 1,
               "limit_bytes": 512 * MiB, "usage_bytes": 200 * MiB, "peak_bytes": 300 * MiB, "oom_kills": 0},
}


def _seen(returncode: int | None, before: int | None = 0, after: int | None = 0, **kw) -> DeathSeen:
    return DeathSeen("k1", 4242, returncode, 100.0, 90.0, before, after, CGROUP_MEMORY, **kw)


def test_sigkill_with_the_oom_counter_moving_is_an_oom_kill_in_the_cgroup() -> None:
    report = stock_report(stock_evidence(_seen(-signal.SIGKILL, 0, 1)))
    assert report["cause"] == "oom_kill" and report["scope"] == "cgroup"
    assert "512.0 MiB" in report["summary"] or "512 MiB" in report["summary"]
    assert report["evidence"]["oom_kills"] == {"before": 0, "after": 1}
    assert report["remedy"].endswith(SENTINEL_HINT) and report["sentinel"] is False


def test_sigkill_without_oom_proof_is_never_called_oom() -> None:
    for before, after in ((0, 0), (None, None), (3, None)):
        report = stock_report(stock_evidence(_seen(-signal.SIGKILL, before, after)))
        assert report["cause"] == "external_kill" and report["signal"] == "SIGKILL", (before, after)


@pytest.mark.parametrize(
    ("returncode", "cause"),
    [(-signal.SIGSEGV, "segfault"), (-signal.SIGABRT, "abort"), (-signal.SIGTERM, "external_kill"), (3, "exit"), (None, "unknown")],
)
def test_the_exit_status_names_the_cause(returncode: int | None, cause: str) -> None:
    report = stock_report(stock_evidence(_seen(returncode)))
    assert report["cause"] == cause
    assert SENTINEL_HINT in report["remedy"]
    assert "Jupyter server" in " ".join(report["evidence"]["notes"])


def test_where_fills_only_what_the_report_lacks() -> None:
    report = {"kernel_id": "k", "notebook": "a.ipynb"}
    out = with_where(report, (("notebook", "b.ipynb"), ("server", "http://h/")))
    assert out == {"kernel_id": "k", "notebook": "a.ipynb", "server": "http://h/"}


def test_guard_state_prefers_the_guard_then_the_flight_record_then_its_settings() -> None:
    on, off = guard_settings({}), guard_settings({"KERNEL_SENTINEL_GUARD": "0"})
    assert guard_state(None, {"enabled": False}, on, sentinel=True) == "off"
    assert guard_state({"meta": {"guard": False}}, None, on, sentinel=True) == "off"
    assert guard_state({"meta": {"guard": True}}, None, off, sentinel=False) == "on"
    assert guard_state(None, None, off, sentinel=True) == "off"
    assert guard_state(None, None, guard_settings({}, b"x\0--SentinelGuard.enabled=False\0"), sentinel=True) == "off"
    assert guard_state(None, None, on, sentinel=True) == "on"
    assert guard_state(None, None, on, sentinel=False) == "absent"


def test_guard_budget_from_the_kernels_settings_and_from_the_guard() -> None:
    memory = {"used_bytes": 10 * MiB, "budget_bytes": 1024 * MiB, "source": "cgroup v1 /x"}
    env = {"KERNEL_SENTINEL_MEMORY_LIMIT": "400M", "KERNEL_SENTINEL_INTERRUPT_AT": "0.5"}
    assert guard_budget(memory, None, guard_settings(env)) == {
        "budget_bytes": 400 * MiB, "source": "KERNEL_SENTINEL_MEMORY_LIMIT", "interrupt_bytes": 200 * MiB
    }
    argv = b"python\0-m\0kernel_sentinel.launch\0--SentinelGuard.memory_limit=300M\0"
    assert guard_budget(memory, None, guard_settings(env, argv))["budget_bytes"] == 300 * MiB
    assert guard_budget(memory, None, guard_settings({"KERNEL_SENTINEL_MEMORY_LIMIT": "50%"}))["budget_bytes"] == 512 * MiB
    assert guard_budget(memory, None, guard_settings({"KERNEL_SENTINEL_MEMORY_LIMIT": "4G"}))["budget_bytes"] == 1024 * MiB
    default = guard_settings({"KERNEL_SENTINEL_MEMORY_LIMIT": "lots"})  # refused by the guard's rules: ignored
    assert guard_budget(memory, None, default)["interrupt_bytes"] == int(1024 * MiB * default.interrupt_fraction)
    published = {"enabled": True, "budget_bytes": 300 * MiB, "budget_source": "%sentinel budget 300M",
                 "interrupt_at_bytes": 270 * MiB}
    assert guard_budget(memory, published, guard_settings(env)) == {
        "budget_bytes": 300 * MiB, "source": "%sentinel budget 300M", "interrupt_bytes": 270 * MiB
    }


def test_every_captured_report_and_a_stock_one_pass_the_registered_schema() -> None:
    logger = EventLogger()
    logger.register_event_schema(event_schema())
    got: list[dict] = []

    async def listener(logger: EventLogger, schema_id: str, data: dict) -> None:
        got.append(data)

    logger.add_listener(schema_id=SCHEMA_ID, listener=listener)
    reports = [json.loads(p.read_text())["report"] for p in sorted(SAMPLES.glob("*.json")) if p.name != "kmsg_records.json"]
    reports.append(stock_report(stock_evidence(_seen(-signal.SIGKILL, 0, 1))))
    assert len(reports) >= 5

    async def emit_all() -> None:
        for report in reports:
            data = event_data(report, server="http://127.0.0.1:8888/", kernel_name="python3", notebook=None)
            assert list(data)[:7] == ["kernel_id", "cause", "summary", "exit", "cell", "memory", "remedy"]
            logger.emit(schema_id=SCHEMA_ID, data=data)  # validates: raises on a report the schema refuses
        await asyncio.sleep(0.05)

    asyncio.run(emit_all())
    assert [g["cause"] for g in got] == [r["cause"] for r in reports]
    assert all(g["server"] == "http://127.0.0.1:8888/" and g["kernel_name"] == "python3" for g in got)
    assert got[-1]["sentinel"] is False and got[0]["sentinel"] is True


def test_the_schema_refuses_an_event_without_a_cause() -> None:
    logger = EventLogger()
    logger.handlers = [logging.NullHandler()]  # emit validates only when someone listens
    logger.register_event_schema(event_schema())
    with pytest.raises(Exception, match="cause"):
        logger.emit(schema_id=SCHEMA_ID, data={"kernel_id": "k", "summary": "s", "remedy": "r"})


def test_a_killed_process_is_dying_until_reaped_and_a_live_one_is_not() -> None:
    import os
    import subprocess
    import sys

    from kernel_sentinel.server.status import dying

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not dying(proc.pid)
        os.kill(proc.pid, signal.SIGSTOP)
        assert not dying(proc.pid)  # stopped is not ending
        os.kill(proc.pid, signal.SIGKILL)
        assert dying(proc.pid)  # SIGKILL pending, exiting, or a zombie: never alive again
    finally:
        proc.kill()
        proc.wait()
    assert not dying(proc.pid)  # gone: nothing to read


def _snap(*limits: Limit, rss: int = 90 * MiB) -> MemorySnapshot:
    group = CgroupMemory(1, "/ks-test/x", "/sys/fs/cgroup/memory/ks-test/x", None, None, 300 * MiB, 250 * MiB, None, 0,
                         in_use_bytes=240 * MiB)
    return MemorySnapshot(4242, "linux", ProcessMemory(4242, rss, 200 * MiB, 400 * MiB, rss), group, limits, None)


def test_in_use_is_what_the_guard_counts_against_the_tightest_limit() -> None:
    own = "cgroup v1 /ks-test/ks-kernel-4000-abc"
    used, said = in_use(_snap(Limit("cgroup v1", own, 400 * MiB, 160 * MiB), Limit("system RAM", "system RAM", 8 << 30, 7 << 30)))
    assert used == 240 * MiB and said == "in use in this kernel's own memory group: usage less page cache"
    used, said = in_use(_snap(Limit("cgroup v1", "cgroup v1 /ks-test", 512 * MiB, 212 * MiB)))
    assert used == 300 * MiB and "memory group /ks-test (shared)" in said  # everyone in it counts, as for the OOM killer
    # The machine's RAM is tighter than the group's limit: the guard measures the process, so does the server.
    used, said = in_use(_snap(Limit("cgroup v1", own, 4 << 30, 3 << 30), Limit("system RAM", "system RAM", 1 << 30, 500 * MiB)))
    assert used == 90 * MiB and "RSS" in said
    assert in_use(_snap(rss=70 * MiB))[0] == 70 * MiB  # no limit known at all


def test_memory_errors_are_the_stores_rows_of_that_kernel(tmp_path: Path) -> None:
    assert memory_errors(tmp_path, "k1") == 0  # no store yet: none
    with Store(tmp_path / STORE_NAME) as store:
        for kernel_id in ("k1", "k1", "k2"):
            store.add_memory_error({"kernel_id": kernel_id, "summary": "asked for 8 GiB", "at": 1.0})
    assert (memory_errors(tmp_path, "k1"), memory_errors(tmp_path, "k2"), memory_errors(tmp_path, "k3")) == (2, 1, 0)
    (tmp_path / STORE_NAME).write_bytes(b"not a database at all" * 100)
    assert memory_errors(tmp_path, "k1") is None  # unreadable: unknown, not zero
