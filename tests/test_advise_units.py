"""The advisor's pure parts: IPython syntax, constant propagation, sizes, and the cases that must stay silent."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from kernel_sentinel.advise import Context, analyze
from kernel_sentinel.advise.estimate import estimate_read, fitting_chunksize, nice_floor
from kernel_sentinel.advise.source import Cell, python_source

GiB = 1 << 30


def run(cells: list[str], tmp_path: Path, budget: int = 1 * GiB, notebook: bool = True) -> list:
    cs = [Cell(index=i, source=python_source(c), original=c) for i, c in enumerate(cells)]
    ctx = Context(path="nb.ipynb", base_dir=tmp_path, budget_bytes=budget, notebook=notebook)
    return analyze(cs, ctx)


def kinds(found) -> list[tuple[str, int | None, int]]:
    return [(f.kind, f.cell, f.line) for f in found]


def test_ipython_syntax_keeps_line_numbers() -> None:
    src = "%matplotlib inline\nfiles = !ls data\nx = 1\n  %time y = 2\nobj?"
    out = python_source(src)
    assert out.split("\n") == ["pass", "files = None", "x = 1", "  pass", "pass"]
    assert python_source("%%bash\nls -l\n") == "\n\n"  # not Python at all
    assert python_source("%%time\nz = 3").split("\n") == ["", "z = 3"]


def test_constants_flow_across_cells_and_into_shapes(tmp_path: Path) -> None:
    found = run(["import numpy as np\nROWS = 50_000\nCOLS = ROWS // 2",
                 "shape = (ROWS, COLS)\ngrid = np.empty(shape, dtype='float32')"], tmp_path)
    assert kinds(found) == [("big_allocation", 1, 2)]
    assert found[0].estimate_bytes == 50_000 * 25_000 * 4


def test_names_changed_in_a_loop_are_unknown_after_it(tmp_path: Path) -> None:
    found = run(["import numpy as np\nn = 10\nfor i in range(5):\n    n = n * 100\nbuf = np.zeros((n, n))"], tmp_path)
    assert found == []  # n is not 10 any more, and not known: no guess


@pytest.mark.parametrize("code", [
    "total = 0\nfor x in range(1000):\n    total += x",  # numeric accumulator
    "import numpy as np\nacc = np.zeros(10)\nfor i in range(100):\n    acc += np.ones(10)",  # in place
    "import numpy as np\nparts = []\nfor i in range(10):\n    parts.append(np.zeros(1000))\nall_ = np.concatenate(parts)",
    "items = []\nwhile True:\n    items.append(1)\n    if len(items) > 10:\n        break",
    "import pandas as pd\ndf = pd.read_csv('https://example.org/data.csv')",  # a URL: not ours to check
    "import pandas as pd\nimport glob\nframes = [pd.read_csv(p) for p in glob.glob('data/*.csv')]",
    "import numpy as np\na = np.ones((1000, 1000))\na",  # 8 MB shown: fine
    "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ndf.to_csv('made.csv')\nback = pd.read_csv('made.csv')",
])
def test_silent_on_ordinary_code(code: str, tmp_path: Path) -> None:
    assert run([code], tmp_path) == []


def test_displayed_variable_then_del_frees_nothing(tmp_path: Path) -> None:
    found = run(["import numpy as np\nbig = np.ones((8_000, 4_000))", "big", "del big"], tmp_path)
    out = [f for f in found if f.kind == "kept_by_out"]
    assert [(f.cell, f.line) for f in out] == [(1, 1)]
    assert "big.head()" in out[0].remedy or "`big;`" in out[0].remedy
    assert run(["import numpy as np\nbig = np.ones((8_000, 4_000))", "big", "del big"], tmp_path, notebook=False) == []


def test_list_collecting_known_pieces_in_a_loop(tmp_path: Path) -> None:
    found = run(["import numpy as np\nframes = []\nfor i in range(200):\n    frames.append(np.random.rand(1_000, 1_000))"], tmp_path)
    assert kinds(found) == [("grows_in_loop", 0, 4)] and found[0].estimate_bytes == 200 * 8_000_000


def test_npy_header_gives_exact_size_and_mmap_is_free(tmp_path: Path) -> None:
    arr = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float32, shape=(40_000, 10_000))
    del arr  # a sparse 1.6 GB file: the header is what matters
    found = run(["import numpy as np\nemb = np.load('emb.npy')"], tmp_path)
    assert kinds(found) == [("big_allocation", 0, 2)] and found[0].estimate_bytes == 40_000 * 10_000 * 4
    assert run(["import numpy as np\nemb = np.load('emb.npy', mmap_mode='r')"], tmp_path) == []


def test_missing_reads_of_all_kinds(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales_2023.parquet").write_bytes(b"PAR1")
    found = run(["import numpy as np\nimport pandas as pd\nimport os\nBASE = 'data'",
                 "s = pd.read_parquet(os.path.join(BASE, 'sales_2024.parquet'))",
                 "m = np.memmap(f'{BASE}/cache.dat', dtype='float32', mode='r', shape=(10,))",
                 "with open('notes.txt') as fh:\n    text = fh.read()"], tmp_path)
    assert kinds(found) == [("missing_file", 1, 1), ("missing_file", 2, 1), ("missing_file", 3, 1)]
    assert "sales_2023.parquet" in found[0].remedy


def test_chunk_arithmetic() -> None:
    assert [nice_floor(x) for x in (1, 7, 13, 26, 180, 2_600, 412_000)] == [1, 6, 10, 25, 150, 2_500, 400_000]
    assert fitting_chunksize(250.0, 256 << 20) == 100_000
    assert fitting_chunksize(250.0, 1 << 20) == 1_000  # never absurdly small


def test_gzip_and_json_lines_estimates(tmp_path: Path) -> None:
    import pandas as pd

    n = 200_000
    df = pd.DataFrame({"id": np.arange(n), "v": np.random.default_rng(0).random(n), "tag": ["a", "b"] * (n // 2)})
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    est = estimate_read("read_csv", tmp_path / "t.csv.gz", {})
    assert est is not None and "gzip trailer" in est.basis and abs(est.rows - n) < 0.05 * n
    df.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    est = estimate_read("read_json", tmp_path / "t.jsonl", {"lines": True})
    assert est is not None and est.bytes and abs(est.rows - n) < 0.05 * n
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2,3,4\n\x00\x00")
    est = estimate_read("read_csv", bad, {"engine": "c"})
    assert est is not None  # an estimate or a reason, never an exception


@pytest.mark.parametrize("code", [
    "rows = []\nit = iter(range(10))\nwhile True:\n    rows.append(next(it))",  # ends with StopIteration
    "rows = []\ntry:\n    while True:\n        rows.append(read())\nexcept EOFError:\n    pass",
    "counter = 0\nwhile True:\n    counter += 1\n    time.sleep(1)",  # a counter, not growth
])
def test_loops_that_end_by_exception_or_do_not_grow(code: str, tmp_path: Path) -> None:
    assert run([code], tmp_path) == []


def test_string_built_in_endless_loop_is_unbounded(tmp_path: Path) -> None:
    found = run(["log = ''\nwhile True:\n    log += poll()"], tmp_path)
    assert ("unbounded_growth", 0, 3) in kinds(found)


def test_file_backed_writes_against_free_space(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    rows = free // (4 * 1_000) * 2  # twice the free space, in float32 rows of 1,000
    found = run([f"from numpy.lib.format import open_memmap\nimport numpy as np\nROWS = {rows}",
                 "out = open_memmap('features.npy', mode='w+', dtype=np.float32, shape=(ROWS, 1_000))",
                 "ok = np.memmap('small.dat', dtype='uint8', mode='w+', shape=(1_000,))"], tmp_path)
    assert kinds(found) == [("memmap_exceeds_disk", 1, 1)]
    assert found[0].estimate_bytes == rows * 1_000 * 4 and found[0].details["free_bytes"] <= free * 1.01
    assert "SIGBUS" in found[0].message


def test_memmap_on_tmpfs_is_memory(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    from kernel_sentinel.advise.estimate import fs_free

    free, _, fstype = fs_free(Path("/dev/shm"))
    if fstype != "tmpfs" or free is None or free < 2 * GiB:
        pytest.skip(f"/dev/shm is {fstype} with {free} free")
    found = run(["import numpy as np\nm = np.memmap('/dev/shm/cache.dat', dtype=np.float64, mode='w+', shape=(100_000, 1_000))"],
                tmp_path, budget=1 * GiB)
    assert kinds(found) == [("big_allocation", 0, 2)] and "tmpfs" in found[0].message


def test_arrow_backed_text_is_counted_by_its_buffers_not_as_one_object_per_row() -> None:
    import pandas as pd

    from kernel_sentinel.advise.estimate import column_footprint

    s = pd.Series([f"CUST-{i:08d}" for i in range(50_000)], dtype="string[pyarrow]")
    nbytes, objects, _ = column_footprint(s)
    assert objects == 0 and nbytes == s.nbytes  # 13 bytes of text + a 4-byte offset per row
    as_objects = column_footprint(s.astype(object))[0]
    assert as_objects > 3 * nbytes  # what it was counted as before: a Python str per row


def test_every_file_in_advise_models_is_a_library_model_the_evaluator_asks() -> None:
    from pathlib import Path

    from kernel_sentinel.advise import models

    files = sorted(p.stem for p in Path(models.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert files == ["numpy", "pandas", "polars"] and [m.MODULE for m in models.MODELS] == files
    assert models.model_of("numpy.random.rand").MODULE == "numpy" and models.model_of("polars.read_csv").MODULE == "polars"
    assert models.model_of("duckdb.sql") is None
    assert models.canonical("pandas.io.parsers.read_csv") == "pandas.read_csv"
    assert models.canonical("numpy.random.mtrand.rand") == "numpy.random.rand"


def _polars_files(tmp_path: Path) -> tuple[Path, Path]:
    """Write a CSV (2 M rows, 6 columns: ~22 MB of text, ~92 MB as polars' int64/float64/string) and its parquet."""
    pl = pytest.importorskip("polars")
    n = 2_000_000
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"id": np.arange(n), "a": rng.integers(0, 9, n), "b": rng.integers(0, 9, n),
                          "x": np.round(rng.random(n), 2), "y": np.zeros(n), "tag": np.where(np.arange(n) % 2, "ab", "cd")})
    csv, parquet = tmp_path / "events.csv", tmp_path / "events.parquet"
    frame.write_csv(csv)
    frame.write_parquet(parquet)
    return csv, parquet


def test_polars_readers_are_sized_by_polars_own_reading(tmp_path: Path) -> None:
    """The estimate of a polars read is polars' own size of what the whole read makes, within 10%."""
    import polars as pl

    csv, parquet = _polars_files(tmp_path)
    for reader, path in (("read_csv", csv), ("read_parquet", parquet)):
        real = getattr(pl, reader)(path).estimated_size()
        est = estimate_read(f"polars.{reader}", path, {})
        assert est is not None and est.engine == "polars", reader
        assert abs(est.bytes - real) <= real * 0.10, (reader, est.bytes, real, est.basis)
        assert est.rows is not None and abs(est.rows - 2_000_000) <= 2_000_000 * 0.10
    narrow = estimate_read("polars.read_csv", csv, {"columns": ["a"]})
    assert narrow.bytes < est.bytes / 4  # only the columns asked for are counted
    assert estimate_read("polars.read_csv", tmp_path / "missing.csv", {}).bytes is None  # one reason, no exception
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    assert estimate_read("polars.read_parquet", bad, {}).bytes is None  # one reason, no exception


def test_polars_read_too_big_is_reported_with_polars_remedies(tmp_path: Path) -> None:
    csv, parquet = _polars_files(tmp_path)
    budget = 48 << 20  # the files' frames (~90 MB) do not fit
    for code in (f"import polars as pl\nev = pl.read_csv({str(csv)!r})",
                 f"import polars as pl\nev = pl.scan_csv({str(csv)!r}).collect()",
                 f"import polars as pl\nev = pl.read_parquet({str(parquet)!r})",
                 f"import polars as pl\nev = pl.scan_parquet({str(parquet)!r}).collect(engine='streaming')",
                 f"import polars as pl\nev = pl.scan_csv({str(csv)!r}).with_columns(z=pl.col('a') * 2).sort('x').collect()"):
        found = run([code], tmp_path, budget=budget)
        assert kinds(found) == [("big_read", 0, 2)], (code, found)
        f = found[0]
        assert f.severity == "error" and f.details["engine"] == "polars", code
        assert "collect(engine='streaming')" in f.remedy and "sink_parquet" in f.remedy, f.remedy
        assert "collect_batches(chunk_size=" in f.remedy and "columns=[...]" in f.remedy, f.remedy
        assert "chunksize=" not in f.remedy.replace("chunk_size=", "")  # not pandas' remedy
    # A lazy query with a step between scan and collect may keep a sliver of the file: not sized.
    lazy = f"import polars as pl\nq = pl.scan_csv({str(csv)!r}).filter(pl.col('a') > 7).collect()"
    assert run([lazy], tmp_path, budget=budget) == []
    # What fits is silent, and so are the scans themselves (nothing is read until collect).
    assert run([f"import polars as pl\nev = pl.read_csv({str(csv)!r})"], tmp_path, budget=4 << 30) == []
    assert run([f"import polars as pl\nlz = pl.scan_csv({str(csv)!r})"], tmp_path, budget=budget) == []
    small = run([f"import polars as pl\nev = pl.read_csv({str(csv)!r}, n_rows=1000)"], tmp_path, budget=budget)
    assert small == []
