"""How soon after a kernel dies does the server's ``kernel_death`` event reach a subscriber, and what does the
server extension cost a running kernel's server?

One real ``jupyter server`` (tests/server_support.py), kernels started through its REST API, the event read
from ``/api/events/subscribe`` as JupyterLab reads it. Alternated in one run (the machine is shared):

- a sentinel kernel killed by a segfaulting cell: from the supervisor's recorded death time (``died_at``)
  to the event's arrival;
- a stock kernel SIGKILLed: from the kill to the event's arrival.

And, with kernels idle, the server process's CPU time over a fixed wall time with the extension (it polls
every 0.5 s and reads memory every 2 s) against a second server where it is switched off.

    .venv/bin/python bench/bench_server_event.py [--rounds 5] [--kernels 4] [--idle 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from server_support import SENTINEL, STOCK, JupyterServer  # noqa: E402

OFF = ["--ServerApp.jpserver_extensions=kernel_sentinel.server=False"]


def _event_for(reader, kernel_id: str, deadline: float) -> tuple[dict, float]:
    while time.monotonic() < deadline:
        for event in reader.of():
            if event.get("kernel_id") == kernel_id and id(event) not in reader.seen:
                reader.seen.add(id(event))
                return event, time.time()
        time.sleep(0.005)
    raise SystemExit(f"no event for {kernel_id}")


def latency(server: JupyterServer, rounds: int) -> dict[str, list[float]]:
    reader = server.events()
    reader.seen = set()
    out: dict[str, list[float]] = {"sentinel segfault": [], "stock SIGKILL": []}
    sentinel, stock = server.start_kernel(SENTINEL), server.start_kernel(STOCK)
    for _ in range(rounds):
        for name, kernel_id in (("sentinel segfault", sentinel), ("stock SIGKILL", stock)):
            kc = server.client(kernel_id)
            if kernel_id == sentinel:
                kc.execute("import ctypes; ctypes.string_at(0)")
                event, got = _event_for(reader, kernel_id, time.monotonic() + 60)
                out[name].append(got - float(event["died_at"]))
            else:
                [pid] = server.kernel_pids(kernel_id)
                sent = time.time()
                os.kill(pid, signal.SIGKILL)
                event, got = _event_for(reader, kernel_id, time.monotonic() + 60)
                out[name].append(got - sent)
            kc.stop_channels()
    reader.close()
    return out


def idle_cpu(server: JupyterServer, seconds: float) -> float:
    proc = psutil.Process(server.proc.pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return (after.user + after.system) - (before.user + before.system)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernels", type=int, default=4)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    with JupyterServer(Path(tempfile.mkdtemp(prefix="ks-bench-"))) as server:
        for name, values in latency(server, args.rounds).items():
            print(f"{name}: death -> event at the subscriber: median {statistics.median(values) * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms ({len(values)} deaths)")
    on = JupyterServer(Path(tempfile.mkdtemp(prefix="ks-bench-on-"))).start()
    off = JupyterServer(Path(tempfile.mkdtemp(prefix="ks-bench-off-")), args=OFF).start()
    try:
        for server in (on, off):
            for _ in range(args.kernels):
                server.client(server.start_kernel(STOCK)).stop_channels()
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(3):  # alternated: the machine's load changes under us
            cpu["on"].append(idle_cpu(on, args.idle / 3))
            cpu["off"].append(idle_cpu(off, args.idle / 3))
        total_on, total_off = sum(cpu["on"]), sum(cpu["off"])
        print(f"idle server with {args.kernels} kernels, {args.idle:.0f} s: CPU {total_on * 1000:.0f} ms with the "
              f"extension, {total_off * 1000:.0f} ms without ({(total_on - total_off) / args.idle * 100:.2f}% of one core)")
    finally:
        on.stop()
        off.stop()


if __name__ == "__main__":
    main()
