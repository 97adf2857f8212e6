"""How fast records reach the shared PostgreSQL, and how long ``kernel-sentinel fleet`` takes on 100k deaths.

Starts a throw-away PostgreSQL (Debian's binaries, as in the tests), writes N deaths into a local store with
the outbox on (what supervisors do), forwards them (records/second into PostgreSQL), then times the fleet
summary on the shared database and on the local SQLite store, and the whole CLI. Usage:
    .venv/bin/python bench/bench_fleet.py [N]      (default 100000)
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fleet_support import Postgres  # noqa: E402

from kernel_sentinel.fleet.forward import forward  # noqa: E402
from kernel_sentinel.fleet.query import fleet_summary  # noqa: E402
from kernel_sentinel.store import SharedStore, Store  # noqa: E402

CAUSES = ["oom_kill"] * 6 + ["segfault", "abort", "external_kill", "exit"]


def _cells(n: int) -> list[str]:
    return [f"import pandas as pd\ndf = pd.read_csv('data/part{i}.csv')\ndf.groupby('k').agg('sum')  # cell {i}"
            for i in range(n)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(7)
    cells = _cells(200)
    pg = Postgres()
    tmp = Path(tempfile.mkdtemp(prefix="ks-bench-"))
    os.environ["KERNEL_SENTINEL_DATABASE_URL"] = pg.admin_url
    try:
        now = time.time()
        started = time.perf_counter()
        with Store(tmp / "store.db") as store:
            store._forward_to = pg.admin_url  # queue in the outbox, forward once below (no forwarder per write)
            for i in range(n):
                code = rng.choice(cells)
                if rng.random() < 0.5:
                    code = code.replace("  # cell", "    # my copy of cell")
                report = {"kernel_id": f"k{i}", "cause": rng.choice(CAUSES), "summary": "died",
                          "user": f"user{rng.randrange(500)}", "host": f"node{rng.randrange(20)}",
                          "notebook": f"course/week{rng.randrange(50)}.ipynb", "kernel_name": "python3",
                          "cell": {"execution_count": 3, "code": code}}
                store.add_death(report, {"pid": i}, died_at=now - rng.random() * 30 * 86400)
            store._queued = False
        local_s = time.perf_counter() - started
        started = time.perf_counter()
        result = forward(tmp / "store.db", pg.admin_url)
        fwd_s = time.perf_counter() - started
        assert result.sent == n and result.waiting == 0, result
        print(f"local writes (one transaction each, outbox on): {n / local_s:,.0f} records/s")
        print(f"forwarded into PostgreSQL (batches of 500):     {n / fwd_s:,.0f} records/s ({fwd_s:.1f} s for {n:,})")
        with SharedStore(pg.admin_url) as shared:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                summary = fleet_summary(shared, since="31d", by="user")
                times.append(time.perf_counter() - t)
            assert summary["deaths"]["total"] == n
            print(f"fleet summary on PostgreSQL, {n:,} deaths:       median {statistics.median(times) * 1000:.0f} ms "
                  f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); top cell folds "
                  f"{summary['top_cells'][0]['deaths']} deaths")
        with Store(tmp / "store.db") as local:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                fleet_summary(local, since="31d", by="user")
                times.append(time.perf_counter() - t)
            print(f"fleet summary on local SQLite, {n:,} deaths:    median {statistics.median(times) * 1000:.0f} ms")
        # What a supervisor pays per death (open, write, close + start the forwarder), database up vs down,
        # alternated in one run: the writer never waits for the database.
        per: dict[str, list[float]] = {"up": [], "down": []}
        for round_ in range(6):
            state = "up" if round_ % 2 == 0 else "down"
            if state == "down":
                pg.stop()
            for i in range(20):
                t = time.perf_counter()
                with Store(tmp / "writer" / "store.db") as store:
                    store.add_death({"kernel_id": f"w{round_}-{i}", "cause": "oom_kill", "summary": "died"}, {"pid": i})
                per[state].append(time.perf_counter() - t)
            if state == "down":
                pg.start()
        print(f"one death written by a supervisor: database up {statistics.median(per['up']) * 1000:.1f} ms, "
              f"down {statistics.median(per['down']) * 1000:.1f} ms (median of 60 each, alternated)")
        env = {**os.environ, "KERNEL_SENTINEL_HOME": str(tmp / "empty")}
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kernel_sentinel", "fleet", "--json", "--since", "31d"],
                              capture_output=True, text=True, env=env)
        cli_s = time.perf_counter() - t
        assert proc.returncode == 0, proc.stderr
        print(f"`kernel-sentinel fleet --json` end to end (PostgreSQL, incl. Python start): {cli_s * 1000:.0f} ms")
    finally:
        pg.close()
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
