"""The per-library catalogue of kernel killers and of legitimate work, shared by the acceptance suite and the soak.

Every killer here OOM-kills a stock ipykernel in a 1 GiB memory cgroup (its control, in
test_guard_lib_controls.py, proves it), and every piece of legitimate work completes in a stock kernel in
the same group. ``bench/soak_guard.py`` imports this module, so the soak runs exactly these cells.
The tests in this file are pure: the catalogue is well formed.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
# The sentinel kernelspec, as `kernel-sentinel install` writes it.
SENTINEL_SPEC = {
    "argv": [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"],
    "display_name": "sentinel",
    "language": "python",
}

# Imported once per kernel before any case runs (about 250 MiB of RSS with every library loaded).
SETUP = (
    "import numpy as np, pandas as pd, polars as pl, duckdb, pyarrow as pa, scipy.sparse as sp\n"
    "import threading, time, gc\n"
    "sentinel_value = 'still here'"
)


@dataclass(frozen=True)
class Case:
    """One cell: its code, the names it leaves behind (deleted after it) and what it needs."""

    name: str
    library: str
    code: str
    cleanup: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # "csv_big", "csv_small": files the cell reads (made by make_files)
    prepare: str = ""  # run first, in its own cell: the data a user loaded earlier
    settle: str = ""  # run before the cleanup (a thread the stopped cell left running ends first)
    stoppable: bool = True  # False: the guard cannot stop it in flight; only a pre-run check or a refusal can
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# The big CSV: 150 M one-digit values (300 MB of text) parse to 1.2 GB of int64, more than the group.
BIG_CSV_ROWS = 15_000_000
SMALL_CSV_ROWS = 500_000

KILLERS: tuple[Case, ...] = (
    Case("numpy_one_huge", "numpy", "a = np.ones((20000, 20000))", ("a",)),
    Case("numpy_append_loop", "numpy", "chunks = []\nfor _ in range(400):\n    chunks.append(np.ones(10**6))", ("chunks",)),
    Case("pandas_read_csv", "pandas", "df_big = pd.read_csv(BIG_CSV)", ("df_big",), needs=("csv_big",), stoppable=False,
         notes="pandas' C parser runs without seeing SIGINT and may segfault on a refused malloc"),
    Case(
        "pandas_merge",
        "pandas",
        "left = pd.DataFrame({'k': np.zeros(20000, dtype=np.int64), 'a': np.arange(20000)})\n"
        "right = pd.DataFrame({'k': np.zeros(20000, dtype=np.int64), 'b': np.arange(20000)})\n"
        "m = left.merge(right, on='k')",
        ("left", "right", "m"),
    ),
    Case(
        "pandas_pivot",
        "pandas",
        "pv = pd.DataFrame({'a': np.arange(60000), 'b': np.arange(60000) % 6000, 'v': 1.0})"
        ".pivot_table(index='a', columns='b', values='v')",
        ("pv",),
    ),
    Case(
        "polars_cross_join",
        "polars",
        "xj = pa_.join(pa_, how='cross')",
        ("pa_", "xj"),
        prepare="pa_ = pl.DataFrame({'x': np.arange(20000)})",
        stoppable=False,
        notes="polars allocates the whole output at once and aborts the process when malloc returns NULL",
    ),
    Case(
        "polars_lazy_collect",
        "polars",
        "lj = lz.join(lz, how='cross').collect()",
        ("lz", "lj"),
        prepare="lz = pl.LazyFrame({'x': np.arange(20000)})",
        stoppable=False,
        notes="a lazy query's collect() aborts the same way",
    ),
    Case("polars_read_csv", "polars", "pl_big = pl.read_csv(BIG_CSV)", ("pl_big",), needs=("csv_big",), stoppable=False,
         notes="polars reads the whole file in native code and aborts the process when malloc returns NULL"),
    Case("polars_scan_collect", "polars", "pl_big = pl.scan_csv(BIG_CSV).collect()", ("pl_big",), needs=("csv_big",),
         stoppable=False, notes="a lazy scan of the whole file, collected: the same read"),
    Case(
        "duckdb_fetch",
        "duckdb",
        "dd = duckdb.sql('SELECT range AS x, range * 2 AS y FROM range(200000000)').fetchnumpy()",
        ("dd",),
    ),
    Case(
        "pyarrow_concat",
        "pyarrow",
        "t1 = pa.table({'x': np.arange(10**8)})\nt4 = pa.concat_tables([t1] * 4).combine_chunks()",
        ("t1", "t4"),
    ),
    Case(
        "scipy_sparse_dense",
        "scipy",
        "S = sp.random(20000, 20000, density=0.001, format='csr', random_state=0)\nD = S.toarray() + 1",
        ("S", "D"),
    ),
    Case(
        "sklearn_pairwise",
        "sklearn",
        "from sklearn.metrics import pairwise_distances\n"
        "X = np.random.default_rng(0).random((20000, 10))\nPD = pairwise_distances(X)",
        ("X", "PD"),
    ),
    Case(
        "thread_growth",
        "threads",
        "grown = []\n"
        "def _grow():\n"
        "    for _ in range(2000):\n"
        "        grown.append(np.ones(10**6))\n"
        "        time.sleep(0.002)\n"
        "th = threading.Thread(target=_grow, name='grower')\nth.start()\nth.join()",
        ("grown", "th", "_grow"),
        settle="th.join(timeout=60)",
    ),
)

# Work a stock kernel completes in the same group: the guard must let every one of them through.
LEGIT: tuple[Case, ...] = (
    Case("numpy_near_limit", "numpy", "near = np.ones(70 * 2**20)\nfloat(near[::4096].sum())", ("near",),
         notes="560 MiB in one piece, with ~250 MiB of libraries loaded"),
    Case("blas_threads", "numpy", "m = np.random.default_rng(1).random((1500, 1500))\nr = float((m @ m).trace())", ("m", "r")),
    Case("pandas_read_csv_fits", "pandas", "small = pd.read_csv(SMALL_CSV)\nint(small.shape[0])", ("small",),
         needs=("csv_small",)),
    Case("pandas_groupby", "pandas",
         "g = pd.DataFrame({'k': np.arange(2_000_000) % 1000, 'v': 1.0}).groupby('k')['v'].sum()\nfloat(g.sum())",
         ("g",)),
    Case("polars_query_fits", "polars",
         "pq = pl.DataFrame({'k': np.arange(3_000_000) % 100, 'v': np.ones(3_000_000)})"
         ".lazy().group_by('k').agg(pl.col('v').sum()).collect()\nint(pq.height)", ("pq",)),
    Case("polars_read_csv_fits", "polars", "pls = pl.read_csv(SMALL_CSV)\nint(pls.height)", ("pls",),
         needs=("csv_small",)),
    Case("polars_small_cross_join", "polars",
         "sj = pl.DataFrame({'x': np.arange(1000)})\nsjj = sj.join(sj, how='cross')\nint(sjj.height)", ("sj", "sjj")),
    Case("duckdb_query_fits", "duckdb",
         "dq = duckdb.sql('SELECT range % 1000 AS k, count(*) AS n FROM range(20000000) GROUP BY k').fetchall()\nlen(dq)",
         ("dq",)),
    Case("pyarrow_fits", "pyarrow", "pt = pa.table({'x': np.arange(10**7)})\nint(pt.num_rows)", ("pt",)),
    Case("sklearn_fit", "sklearn",
         "from sklearn.linear_model import LogisticRegression\n"
         "Xs = np.random.default_rng(2).random((50000, 20)); ys = (Xs[:, 0] > 0.5).astype(int)\n"
         "float(LogisticRegression(max_iter=200).fit(Xs, ys).score(Xs, ys))", ("Xs", "ys")),
    Case("threads_small", "threads",
         "out = []\nths = [threading.Thread(target=lambda: out.append(np.ones(10**6).sum())) for _ in range(8)]\n"
         "[t.start() for t in ths]; [t.join() for t in ths]\nlen(out)", ("out", "ths")),
)


def make_files(folder: Path) -> dict[str, Path]:
    """Write the CSV files the cases read into ``folder`` (once per session); return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    big, small = folder / "big.csv", folder / "small.csv"
    row = b"1,2,3,4,5,6,7,8,9,0\n"
    header = b"a,b,c,d,e,f,g,h,i,j\n"
    for path, rows in ((big, BIG_CSV_ROWS), (small, SMALL_CSV_ROWS)):
        if path.exists() and path.stat().st_size == len(header) + rows * len(row):
            continue
        block = row * 100_000
        with open(path, "wb") as f:
            f.write(header)
            for _ in range(rows // 100_000):
                f.write(block)
    return {"csv_big": big, "csv_small": small}


def files_code(files: dict[str, Path]) -> str:
    """Return the cell that tells the kernel where the case files are."""
    return f"BIG_CSV = {str(files['csv_big'])!r}\nSMALL_CSV = {str(files['csv_small'])!r}"


def cleanup_code(case: Case) -> str:
    """Return the cell that deletes what ``case`` left behind (whatever of it exists)."""
    names = ", ".join(repr(n) for n in case.cleanup)
    settle = f"try:\n    {case.settle}\nexcept Exception:\n    pass\n" if case.settle else ""
    return f"{settle}for _n in ({names},):\n    globals().pop(_n, None)\ngc.collect()"


def run_legitimate_work(k) -> None:
    """Run every legitimate case in kernel ``k`` (a KernelHarness), deleting after each: each must complete."""
    for case in LEGIT:
        if case.prepare:
            assert k.run(case.prepare).ok
        res = k.run(case.code)
        assert res.ok, (case.name, res.text()[:2000])
        assert k.run(cleanup_code(case)).ok


def by_name(name: str) -> Case:
    """Return the killer or legitimate case called ``name``."""
    return next(c for c in (*KILLERS, *LEGIT) if c.name == name)


# -- the catalogue is well formed (pure) ---------------------------------------------------------------


def test_every_case_compiles_and_is_named_once() -> None:
    names = [c.name for c in (*KILLERS, *LEGIT)]
    assert len(names) == len(set(names))
    for case in (*KILLERS, *LEGIT):
        ast.parse(case.code)
        ast.parse(case.prepare)
        ast.parse(cleanup_code(case))
        assert case.cleanup, case.name


def test_every_library_of_the_issue_has_a_killer() -> None:
    libraries = {c.library for c in KILLERS}
    assert {"numpy", "pandas", "polars", "duckdb", "pyarrow", "scipy", "sklearn", "threads"} <= libraries
