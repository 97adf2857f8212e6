"""The read_csv estimate against a real kernel, and the suggested chunksize inside a memory cgroup.

Both tests make a ~77 MB mixed-type CSV (ints, floats, dates as text, low- and high-cardinality
strings) in tmp_path at test time and ask ``kernel-sentinel check --json`` about a notebook that reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from advise_support import write_numeric_csv, write_orders_csv
from conftest import GiB, MiB

CLI = [sys.executable, "-m", "kernel_sentinel"]

RSS = (
    "import os, gc\n"
    "def _rss():\n"
    "    with open('/proc/self/statm') as f:\n"
    "        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
)


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    folder = tmp_path_factory.mktemp("orders")
    path = folder / "orders.csv"
    sums = write_orders_csv(path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import pandas as pd"),
        nbformat.v4.new_code_cell("orders = pd.read_csv('orders.csv')\norders.groupby('city')['quantity'].sum()"),
    ]
    nbformat.write(nb, folder / "orders.ipynb")
    return path, sums


def _check(notebook: Path, budget: str) -> list[dict]:
    proc = subprocess.run([*CLI, "check", str(notebook), "--budget", budget, "--json"], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def numeric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("numeric")
    write_numeric_csv(folder / "readings.csv")
    return folder / "readings.csv"


def _notebook_reading(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import pandas as pd\ndf = pd.read_csv({path.name!r})")]
    target = path.with_suffix(".ipynb")
    nbformat.write(nb, target)
    return target


@pytest.mark.parametrize("state", ["fresh", "used"])
@pytest.mark.parametrize("which", ["orders", "numeric"])
def test_estimate_within_1_5x_of_memory_after_read_csv_in_a_kernel(which, state, orders, numeric, kernel) -> None:
    """The estimate is compared with the RSS growth of a real kernel across ``pd.read_csv``.

    RSS delta is what the budget is spent on (and what the OOM killer sees). ``memory_usage(deep=True)``
    is printed beside it but not used: it counts a repeated string once per row, while pandas' parser
    shares one object per distinct value, so for low-cardinality text it overstates what the process holds.
    "used": the kernel first frees one 32 MB array, as any kernel that has done some work has; glibc then
    keeps the parser's freed chunks in the heap instead of returning them (see estimate.ARRAY_LEFTOVER).
    """
    path = orders[0] if which == "orders" else numeric
    found = _check(_notebook_reading(path), "64M")
    reads = [f for f in found if f["kind"] == "big_read"]
    assert len(reads) == 1, found
    estimate = reads[0]["estimate_bytes"]
    assert "sample" in reads[0]["basis"] or "first" in reads[0]["basis"]

    k = kernel(limit_bytes=1 * GiB)
    used = "import numpy as np\n_a = np.ones(4_000_000)\ndel _a\n" if state == "used" else ""
    warm = k.run(RSS + used + "import io, pandas as pd\npd.read_csv(io.StringIO('a,b\\n1,x\\n'));\ngc.collect()")
    assert warm.ok, warm.text()
    res = k.run(f"_before = _rss()\ndf = pd.read_csv({str(path)!r})\n_after = _rss()\n"
                "print(_after - _before, int(df.memory_usage(deep=True).sum()), len(df))")
    assert res.ok, res.text()
    rss_delta, deep, rows = (int(x) for x in res.stdout.split())
    print(f"{which} CSV, {state} kernel: estimate {estimate:,} B; measured RSS delta {rss_delta:,} B; memory_usage(deep=True) {deep:,} B; rows {rows:,}")
    assert rows == (orders[1]["rows"] if which == "orders" else 2_000_000)
    assert rss_delta / 1.5 <= estimate <= rss_delta * 1.5


# pandas 3 keeps text columns in arrow buffers: the 77 MB CSV takes ~150 MB read whole (was ~270 MB with
# object strings), so the group where a whole read dies is smaller than it was.
CGROUP = 192 * MiB


def test_suggested_chunksize_processes_the_csv_in_a_cgroup_where_a_whole_read_dies(orders, kernel) -> None:
    """The remedy's loop, pasted as suggested, aggregates every row inside 192 MiB; ``read_csv`` whole does not fit."""
    import re

    path, sums = orders
    found = _check(path.parent / "orders.ipynb", "192M")
    read = next(f for f in found if f["kind"] == "big_read")
    assert read["severity"] == "error" and read["estimate_bytes"] > CGROUP - 96 * MiB  # the kernel needs the rest
    chunksize = read["details"]["chunksize"]
    loop = re.search(r"`(for chunk in .*?): \.\.\.`", read["remedy"]).group(1)
    assert f"chunksize={chunksize:_}" in loop and "'orders.csv'" in loop
    print(f"suggested: {loop}")

    chunked = kernel(limit_bytes=CGROUP)
    body = (
        f"import os\nos.chdir({str(path.parent)!r})\nimport pandas as pd\nrows = qty = 0\nrevenue = 0.0\n"
        f"{loop}:\n"
        "    rows += len(chunk)\n"
        "    qty += int(chunk['quantity'].sum())\n"
        "    revenue += float((chunk['quantity'] * chunk['unit_price']).sum())\n"
        "print(rows, qty, revenue)"
    )
    res = chunked.run(body, timeout=300)
    assert res.ok, res.text()
    rows, qty, revenue = res.stdout.split()
    assert int(rows) == sums["rows"] and int(qty) == sums["quantity"]
    assert float(revenue) == pytest.approx(sums["revenue"], rel=1e-9)
    assert chunked.alive and chunked.oom_kills() == 0
    peak = chunked.cgroup.peak_bytes() if chunked.cgroup else None
    print(f"chunked run: cgroup peak {peak} B of {CGROUP} B")

    whole = kernel(limit_bytes=CGROUP)
    res = whole.run(f"import pandas as pd\ndf = pd.read_csv({str(path)!r})\nprint(len(df))", timeout=300)
    print(f"whole read: {res.status} {res.ename} exit={whole.exit_status} oom_kills={whole.oom_kills()}")
    assert res.status in ("died", "error"), res.text()
    assert res.status == "died" or res.ename == "MemoryError"
