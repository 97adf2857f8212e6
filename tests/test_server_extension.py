"""The server extension in a real ``jupyter server``: deaths over REST, events, metrics, auth, stock kernels.

One server for the module (it takes seconds to start), inside a 512 MiB memory cgroup when one can be made,
so its kernels inherit the group: a stock kernel's OOM kill is real and proved by the group's counter. The
extension is enabled by the package's ``jupyter_server_config.d`` file only, as it is for a user.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MiB
from server_support import SENTINEL, STOCK, JupyterServer

from kernel_sentinel.confine import ConfineError, MemoryCgroup
from kernel_sentinel.fleet.query import fleet_summary
from kernel_sentinel.store import STORE_NAME, Store

GROUP_LIMIT = 512 * MiB
GUARD_LIMIT = 400 * MiB  # the sentinel kernelspec's KERNEL_SENTINEL_MEMORY_LIMIT: tighter than the group
GUARD = "__import__('kernel_sentinel.guard', fromlist=['get_guard']).get_guard()"
SEGFAULT = "import ctypes; ctypes.string_at(0)"
EAT_MEMORY = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def group() -> Iterator[MemoryCgroup | None]:
    try:
        made = MemoryCgroup.create(GROUP_LIMIT, prefix="ks-test")
    except ConfineError:
        yield None
        return
    yield made
    made.remove()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, group: MemoryCgroup | None) -> Iterator[JupyterServer]:
    limit = {"KERNEL_SENTINEL_MEMORY_LIMIT": str(GUARD_LIMIT)}
    with JupyterServer(tmp_path_factory.mktemp("server"), cgroup=group, sentinel_env=limit) as srv:
        yield srv


@pytest.fixture(scope="module")
def events(server: JupyterServer) -> Iterator:
    reader = server.events()
    yield reader
    reader.close()


def _metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _death_events(events, kernel_id: str) -> list[dict]:
    return [e for e in events.of() if e.get("kernel_id") == kernel_id]


def _kill_and_wait(server: JupyterServer, kernel_id: str, events, code: str | None = None, sig: int | None = None) -> dict:
    """Kill the kernel (a cell, or a signal to its process); return its death as the REST API lists it."""
    if code is not None:
        kc = server.client(kernel_id)
        kc.execute(code)
    else:
        [pid] = server.kernel_pids(kernel_id)
        os.kill(pid, sig)
    deaths = server.wait_for(f"the death of {kernel_id}", lambda: server.deaths(kernel_id), timeout=90)
    server.wait_for("the death event", lambda: _death_events(events, kernel_id), timeout=30)
    if code is not None:
        kc.stop_channels()
    return deaths[0]


def test_enabled_by_installing_the_package(server: JupyterServer) -> None:
    installed = Path(sys.prefix, "etc", "jupyter", "jupyter_server_config.d", "kernel_sentinel.json")
    source = REPO / "jupyter-config" / "jupyter_server_config.d" / "kernel_sentinel.json"
    assert json.loads(installed.read_text()) == json.loads(source.read_text())
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"], capture_output=True, text=True, timeout=120
    )
    assert re.search(r"kernel_sentinel\.server\s+(\x1b\[\d+m)?enabled", listed.stdout + listed.stderr)
    # The server was started without naming the extension: the installed file enabled it.
    assert "kernel_sentinel.server | extension was successfully loaded" in server.log_text()


def test_no_token_no_data(server: JupyterServer) -> None:
    kernel_id = server.start_kernel(STOCK)
    for path in ("/api/kernel-sentinel/deaths", f"/api/kernel-sentinel/kernels/{kernel_id}", "/metrics"):
        assert server.request("GET", path, token=False)[0] == 403, path
        assert server.request("GET", path, token="not-the-token")[0] == 403, path
        assert server.request("GET", path)[0] == 200, path
    server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_bad_input_is_one_line_of_json(server: JupyterServer) -> None:
    for path, status in (
        ("/api/kernel-sentinel/deaths?limit=0", 400),
        ("/api/kernel-sentinel/deaths?limit=ten", 400),
        ("/api/kernel-sentinel/deaths?kernel_id=../../etc", 400),
        ("/api/kernel-sentinel/kernels/no-such-kernel", 404),
        ("/api/kernel-sentinel/kernels/bad%20id", 400),
    ):
        got, body = server.request("GET", path)
        assert got == status, (path, body)
        assert isinstance(body, dict) and body["message"] and "\n" not in body["message"], body
        assert "Traceback" not in json.dumps(body)


def test_sentinel_kernel_segfault_is_one_death_one_event_one_count(server: JupyterServer, events) -> None:
    kernel_id = server.start_kernel(SENTINEL)
    death = _kill_and_wait(server, kernel_id, events, code=SEGFAULT)
    assert death["cause"] == "segfault" and death["kernel_id"] == kernel_id
    assert death["cell"]["code"] == SEGFAULT  # the sentinel kernel's own record, not the server's guess
    assert death.get("sentinel", True) is not False
    [event] = _death_events(events, kernel_id)
    assert event["cause"] == "segfault" and event["summary"] == death["summary"]
    assert event["kernel_name"] == SENTINEL and event["server"].startswith(server.url)
    assert event["death_id"] == death["death_id"]
    # The restarted kernel answers again; still one death, one event, one count.
    kc = server.client(kernel_id)
    assert kc.execute_interactive("x = 1", timeout=60)["content"]["status"] == "ok"
    kc.stop_channels()
    assert len(server.deaths(kernel_id)) == 1 and len(_death_events(events, kernel_id)) == 1
    assert _metric(server.metrics(), "kernel_sentinel_deaths_total", '{cause="segfault"}') == 1.0
    assert server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["deaths"] == 1


def _value(kc, expr: str) -> str:
    reply = kc.execute_interactive("", user_expressions={"v": expr}, timeout=60)
    return reply["content"]["user_expressions"]["v"]["data"]["text/plain"]


def test_kernel_memory_and_guard_seen_from_outside(server: JupyterServer, group: MemoryCgroup | None) -> None:
    sentinel, stock = server.start_kernel(SENTINEL), server.start_kernel(STOCK)
    server.client(stock).stop_channels()
    kc = server.client(sentinel)
    own_budget = int(_value(kc, f"{GUARD}.budget_bytes"))
    kc.stop_channels()
    on = server.get(f"/api/kernel-sentinel/kernels/{sentinel}")
    absent = server.get(f"/api/kernel-sentinel/kernels/{stock}")
    assert on["kernel_id"] == sentinel and on["guard"] == "on" and absent["guard"] == "absent"
    for status in (on, absent):
        mem = status["memory"]
        assert 10 * MiB < mem["used_bytes"] < mem["budget_bytes"], mem
        assert status["deaths"] == 0 and status["memory_errors"] == 0
    # Seen from outside, the sentinel kernel's budget is the one its guard works with.
    assert on["memory"]["budget_bytes"] == own_budget == GUARD_LIMIT
    assert on["memory"]["source"] == "KERNEL_SENTINEL_MEMORY_LIMIT"
    assert on["memory"]["used_bytes"] < on["memory"]["interrupt_bytes"] <= on["memory"]["budget_bytes"]
    assert "interrupt_bytes" not in absent["memory"]
    if group is not None:
        assert absent["memory"]["budget_bytes"] <= GROUP_LIMIT and absent["memory"]["source"].startswith("cgroup")
        # Both kernels share the server's group: used is that group's in-use figure, as the guard counts it.
        for status in (on, absent):
            assert "(shared): usage less page cache" in status["memory"]["used_source"], status["memory"]
            assert status["memory"]["used_bytes"] > status["memory"]["rss_bytes"], status["memory"]

    def gauges() -> str | None:
        text = server.metrics()
        return text if all(f'kernel_id="{k}"' in text for k in (sentinel, stock)) else None

    text = server.wait_for("both kernels' gauges", gauges)
    assert _metric(text, "kernel_sentinel_kernel_memory_bytes", f'{{kernel_id="{stock}"}}') > 10 * MiB
    assert _metric(text, "kernel_sentinel_kernel_budget_bytes", f'{{kernel_id="{sentinel}"}}') > 0
    server.request("DELETE", f"/api/kernels/{stock}")
    server.wait_for("the shut-down kernel's gauges to go", lambda: f'kernel_id="{stock}"' not in server.metrics())
    assert server.request("GET", f"/api/kernel-sentinel/kernels/{stock}")[0] == 404
    server.request("DELETE", f"/api/kernels/{sentinel}")
    assert not server.deaths(stock) and not server.deaths(sentinel)  # a shutdown is not a death


def _magic(kc, line: str) -> str:
    """Run one ``%sentinel`` line; return what it printed (it must not raise)."""
    out: list[str] = []
    reply = kc.execute_interactive(line, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def test_budget_magic_shows_at_once(server: JupyterServer) -> None:
    """``%sentinel budget`` (the guard's own budget: no group of its own here) is in ``kernels/ID`` as soon as the
    magic's cell has answered: the REST answer and the status bar do not keep the old budget and line."""
    kernel_id = server.start_kernel(SENTINEL)
    kc = server.client(kernel_id)
    try:
        before = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["memory"]
        assert before["budget_bytes"] == GUARD_LIMIT, before  # control: the kernelspec's budget is published
        said = _magic(kc, "%sentinel budget 300M")
        assert "Budget: 300 MiB" in said, said
        now = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["memory"]
        assert now["budget_bytes"] == 300 * MiB and now["source"] == "%sentinel budget 300M", now
        assert now["interrupt_bytes"] <= 300 * MiB < before["interrupt_bytes"], (before, now)
        _magic(kc, "%sentinel budget reset")
        back = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["memory"]
        assert back["budget_bytes"] == GUARD_LIMIT and back["source"] == "KERNEL_SENTINEL_MEMORY_LIMIT", back
    finally:
        kc.stop_channels()
        server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_budget_magic_moving_the_kernels_group_shows_at_once(tmp_path: Path, memory_cgroup) -> None:
    """In a kernel with its own memory group ``%sentinel budget`` moves the group; ``kernels/ID`` follows at once."""
    own = {"KERNEL_SENTINEL_GROUP_LIMIT": "400M", "KERNEL_SENTINEL_CHECKPOINT": "0"}
    with JupyterServer(tmp_path / "own-group", cgroup=memory_cgroup(1024 * MiB), sentinel_env=own) as srv:
        kernel_id = srv.start_kernel(SENTINEL)
        kc = srv.client(kernel_id)
        try:
            before = srv.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["memory"]
            assert before["budget_bytes"] == 400 * MiB and "ks-kernel-" in before["source"], before
            said = _magic(kc, "%sentinel budget 300M")
            assert "Budget: 300 MiB" in said and "it was 400 MiB" in said, said
            now = srv.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["memory"]
            assert now["budget_bytes"] == 300 * MiB and "ks-kernel-" in now["source"], now
            assert now["interrupt_bytes"] <= 300 * MiB < before["interrupt_bytes"], (before, now)
        finally:
            kc.stop_channels()


def test_memory_budget_error_counted_and_kernel_alive(server: JupyterServer) -> None:
    kernel_id = server.start_kernel(SENTINEL)
    kc = server.client(kernel_id)
    reply = kc.execute_interactive("big = bytearray(8 << 30)", timeout=120)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "MemoryBudgetError"
    assert kc.execute_interactive("ok = 1", timeout=60)["content"]["status"] == "ok"
    kc.stop_channels()

    def counted() -> dict | None:
        status = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")
        return status if status["memory_errors"] == 1 else None

    status = server.wait_for("the memory error count", counted)
    assert status["deaths"] == 0
    assert _metric(server.metrics(), "kernel_sentinel_memory_errors_total") == 1.0
    # One count: the store's row for it, which the fleet reads too, is the one the server counted.
    with Store(server.home / STORE_NAME) as store:
        (row,) = store.memory_errors(kernel_id)
        fleet = fleet_summary(store, since="all")
    assert "budget" in row["summary"] and json.loads(row["report"])["trigger"] in ("fence", "watchdog"), row
    assert fleet["memory_errors"]["total"] == 1 and fleet["memory_errors"]["by"] == {"memory_budget": 1}
    # A restart the user asks for is not a death: no record, no event, no count.
    assert server.request("POST", f"/api/kernels/{kernel_id}/restart")[0] == 200
    kc = server.client(kernel_id)
    assert kc.execute_interactive("again = 1", timeout=60)["content"]["status"] == "ok"
    kc.stop_channels()
    after = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")
    assert server.deaths(kernel_id) == [] and after["deaths"] == 0
    assert after["memory_errors"] == 1 and _metric(server.metrics(), "kernel_sentinel_memory_errors_total") == 1.0
    server.request("DELETE", f"/api/kernels/{kernel_id}")


HOLD_IN_A_CHILD = (
    "import subprocess, sys\n"
    "holder = subprocess.Popen([sys.executable, '-c', \"import time; b = b'x' * (150 << 20); print('held', flush=True); "
    "time.sleep(600)\"], stdout=subprocess.PIPE)\n"
    "assert holder.stdout.readline() == b'held\\n'"
)


def test_kernel_memory_is_the_figure_its_guard_counts(tmp_path: Path, memory_cgroup) -> None:
    """A kernel in its own memory group: the server reports the group's in-use memory, which the guard judges by,
    not the kernel process's RSS (a child of the cell holds 150 MiB in the group: RSS misses it, the guard does not)."""
    own = {"KERNEL_SENTINEL_GROUP_LIMIT": "400M", "KERNEL_SENTINEL_CHECKPOINT": "0"}
    with JupyterServer(tmp_path / "own-group", cgroup=memory_cgroup(1024 * MiB), sentinel_env=own) as srv:
        kernel_id = srv.start_kernel(SENTINEL)
        kc = srv.client(kernel_id)
        try:
            assert kc.execute_interactive(HOLD_IN_A_CHILD, timeout=120)["content"]["status"] == "ok"
            status = srv.get(f"/api/kernel-sentinel/kernels/{kernel_id}")
            # Read in a cell: the guard takes a fresh reading when a cell starts (an idle kernel's may be older).
            assert kc.execute_interactive(f"guard_usage = {GUARD}.status()['usage_bytes']", timeout=60)["content"]["status"] == "ok"
            guard_usage = int(_value(kc, "guard_usage"))
            mem = status["memory"]
            assert mem["used_source"] == "in use in this kernel's own memory group: usage less page cache", mem
            assert mem["budget_bytes"] == 400 * MiB and "ks-kernel-" in mem["source"], mem
            # The child's 150 MiB is counted (less what the group was not charged for: library pages read first elsewhere).
            assert mem["used_bytes"] >= mem["rss_bytes"] + 100 * MiB, mem
            assert abs(mem["used_bytes"] - guard_usage) < 32 * MiB, (mem, guard_usage)  # the guard's own figure
        finally:
            kc.execute_interactive("'holder' in globals() and (holder.kill(), holder.wait())", timeout=60)
            kc.stop_channels()


def test_stock_kernel_sigkill_is_external_and_points_to_the_sentinel(
    server: JupyterServer, events, group: MemoryCgroup | None
) -> None:
    kernel_id = server.start_session("work/stock.ipynb", STOCK)
    server.client(kernel_id).stop_channels()
    server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")  # a look at it while it runs
    time.sleep(2.0)  # four of the watch's polls, so it has read the OOM counter before the kill (not a timing test)
    death = _kill_and_wait(server, kernel_id, events, sig=signal.SIGKILL)
    assert death["notebook"] == "work/stock.ipynb" and death["kernel_name"] == STOCK
    assert death["cause"] == "external_kill" and death["signal"] == "SIGKILL"
    assert death["exit"] == {"signal": "SIGKILL"}
    assert "kernel-sentinel install" in death["remedy"] and death["sentinel"] is False
    if group is not None:
        counts = death["evidence"]["oom_kills"]
        assert counts["after"] is not None  # the counter is read after the death
        # and it did not move (on a machine loaded enough that the watch never polled before the kill, there is
        # no "before": then nothing may claim an OOM kill, which the cause above already shows)
        assert counts["before"] in (None, counts["after"])
    [event] = _death_events(events, kernel_id)
    assert event["cause"] == "external_kill" and event["sentinel"] is False and event["kernel_name"] == STOCK
    assert event["notebook"] == "work/stock.ipynb" and event["death_id"] == death["death_id"]
    server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_stock_kernel_with_the_recorder_loaded_tells_its_cell(server: JupyterServer, events) -> None:
    kernel_id = server.start_kernel(STOCK)
    kc = server.client(kernel_id)
    assert kc.execute_interactive("%load_ext kernel_sentinel", timeout=60)["content"]["status"] == "ok"
    kc.stop_channels()
    status = server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")
    assert status["guard"] == "on"  # the flight record says so, though the kernelspec is stock
    death = _kill_and_wait(server, kernel_id, events, code=SEGFAULT)
    assert death["cause"] == "segfault" and death["cell"]["code"] == SEGFAULT
    assert death["evidence"]["flight_record"] == "ok" and death["sentinel"] is False
    server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_stock_kernel_oom_kill_proved_by_the_cgroup_counter(
    server: JupyterServer, events, group: MemoryCgroup | None
) -> None:
    if group is None:
        pytest.skip("needs a writable memory cgroup to OOM-kill a kernel safely")
    kernel_id = server.start_kernel(STOCK)
    server.client(kernel_id).stop_channels()
    server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")  # the group and its counter seen while it runs
    before = group.oom_kills()
    death = _kill_and_wait(server, kernel_id, events, code=EAT_MEMORY)
    assert group.oom_kills() > before  # control: the kernel really was OOM-killed in this group
    assert death["cause"] == "oom_kill" and death["scope"] == "cgroup", death["summary"]
    assert death["memory"]["cgroup"]["limit_bytes"] == GROUP_LIMIT  # read while it ran, not as it exited
    counts = death["evidence"]["oom_kills"]
    assert counts["after"] > counts["before"]
    assert any("OOM-kill counter" in p for p in death["evidence"]["proof"])
    assert "kernel-sentinel install" in death["remedy"]
    assert _death_events(events, kernel_id)[0]["cause"] == "oom_kill"
    assert _metric(server.metrics(), "kernel_sentinel_deaths_total", '{cause="oom_kill"}') == 1.0
    assert server.proc is not None and server.proc.poll() is None  # the server itself lived on
    server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_unreadable_store_is_503_and_deaths_are_still_told(server: JupyterServer, events) -> None:
    store = server.home / "store.db"
    kept = store.with_name("store.db.kept")
    store.rename(kept)
    try:
        # A folder where the store should be: nothing can read it. (Junk bytes no longer do: a sentinel kernel's
        # supervisor keeps the store open, so its WAL file stays beside it and still holds valid pages.)
        store.mkdir()
        status, body = server.request("GET", "/api/kernel-sentinel/deaths")
        assert status == 503 and "store" in body["message"] and "\n" not in body["message"]
        kernel_id = server.start_kernel(STOCK)
        server.client(kernel_id).stop_channels()
        assert server.get(f"/api/kernel-sentinel/kernels/{kernel_id}")["guard"] == "absent"
        [pid] = server.kernel_pids(kernel_id)
        os.kill(pid, signal.SIGKILL)
        [event] = server.wait_for("the death event", lambda: _death_events(events, kernel_id), timeout=60)
        assert event["cause"] == "external_kill"
        assert any("store" in note for note in event["evidence"]["notes"])
        assert server.request("GET", "/api/status")[0] == 200
        server.request("DELETE", f"/api/kernels/{kernel_id}")
    finally:
        store.rmdir()
        kept.rename(store)
    assert server.request("GET", "/api/kernel-sentinel/deaths")[0] == 200
