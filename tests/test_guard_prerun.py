"""The pre-run check's own parts, on real files in this process (small ones: nothing here nears a budget).

Which cells it looks at, which reads it sizes by sampling and which it lets through unsampled (a text file
too small to matter whatever it holds), and its refusal of a polars read that will not fit, with polars'
own remedies. The same refusals in a real kernel in a real memory group: test_guard_lib_kernel.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kernel_sentinel.advise import estimate
from kernel_sentinel.guard import prerun


@pytest.mark.parametrize("code, looked_at", [
    ("x = pl.scan_csv('a.csv').collect()", True),
    ("x = pl.read_parquet('a.parquet')", True),
    ("df = pd.read_csv('a.csv')", True),
    ("x = pl.scan_ndjson('a.jsonl').collect()", True),
    ("a.join(b, how='cross')", True),
    ("x = 1 + 2\nprint(x)", False),
    ("thread = spread_out(values)", False),
])
def test_the_cells_it_looks_at(code: str, looked_at: bool) -> None:
    assert prerun.triggered(code) is looked_at


def test_small_text_files_are_not_sampled_and_the_bound_holds_on_the_worst_shapes() -> None:
    free = 640 << 20
    assert prerun.fits_unsampled("read_csv", 10 << 20, ".csv", free)  # 10 MB x 64 = 640 MiB
    assert prerun.fits_unsampled("polars.read_csv", 10 << 20, ".csv", free)
    assert not prerun.fits_unsampled("read_csv", (10 << 20) + 1, ".csv", free)
    assert not prerun.fits_unsampled("read_csv", 1 << 20, ".gz", free)  # compressed: always sampled
    assert not prerun.fits_unsampled("polars.read_parquet", 1 << 20, ".parquet", free)  # binary: always sampled
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    n = 100_000
    shapes = {
        "one-digit ints": "a,b,c\n" + "1,2,3\n" * n,
        "empty fields": "a,b,c,d\n" + ",,,\n" * n,
        "short distinct strings": "a,b\n" + "".join(f"{chr(97 + i % 26)}{chr(97 + i // 26 % 26)},z{i % 10}\n" for i in range(n)),
    }
    for name, text in shapes.items():
        data = text.encode()
        for frame in (pd.read_csv(io.BytesIO(data)), pd.read_csv(io.BytesIO(data), dtype=object)):
            per_byte = frame.memory_usage(deep=True).sum() / len(data)
            assert per_byte * 1.6 <= prerun.TEXT_EXPANSION, (name, per_byte)  # x1.6: the parser's leftovers
        assert pl.read_csv(io.BytesIO(data)).estimated_size() / len(data) * 1.6 <= prerun.TEXT_EXPANSION, name


def _shell() -> SimpleNamespace:
    """A shell as the pre-run check sees it: its namespace (polars imported) and its execution count."""
    import polars as pl

    return SimpleNamespace(user_ns={"pl": pl}, execution_count=7)


def test_a_polars_read_that_will_not_fit_is_refused_with_polars_remedies(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("polars")
    path = tmp_path / "wide.csv"
    n = 400_000
    rng = np.random.default_rng(0)
    path.write_text("a,b,c,d\n" + "\n".join(f"{x},{y},1,2" for x, y in zip(rng.integers(0, 9, n), rng.integers(0, 9, n))) + "\n")
    size = path.stat().st_size  # ~3.2 MB of text, ~12 MiB as four int64 columns
    sampled: list[str] = []
    real = estimate.estimate_read

    def counting(reader, p, kwargs):
        sampled.append(reader)
        return real(reader, p, kwargs)

    monkeypatch.setattr(estimate, "estimate_read", counting)
    code = f"big = pl.read_csv({str(path)!r})"
    refusal = prerun.check(code, {}, (8 << 20, 1 << 30, "test budget"), ip=_shell())
    assert refusal is not None and sampled == ["polars.read_csv"]
    assert refusal.library == "polars" and refusal.estimate_bytes > 8 << 20
    text = refusal.message()
    assert text.startswith(f"not started: `{code}` would need about ")
    assert "polars cannot be stopped once it runs out" in text
    assert "collect(engine='streaming')" in text and "sink_parquet" in text and "collect_batches(chunk_size=" in text
    assert "Let polars' streaming engine" in text  # the remedy starts a sentence
    lazy = prerun.check(f"big = pl.scan_csv({str(path)!r}).collect()", {}, (8 << 20, 1 << 30, "test budget"), ip=_shell())
    assert lazy is not None and lazy.library == "polars"
    # Room for 64 times the file: not sampled, not refused, nothing read.
    sampled.clear()
    assert prerun.check(code, {}, (size * prerun.TEXT_EXPANSION, 1 << 30, "test budget"), ip=_shell()) is None
    assert sampled == []


def test_a_lazy_cross_join_is_refused_only_when_collected_whole() -> None:
    """A lazy join aggregated before collect() streams in little memory: a stock kernel runs it, so must we."""
    pl = pytest.importorskip("polars")
    ns = {"pl": pl, "lz": pl.LazyFrame({"x": np.arange(20_000)}), "df": pl.DataFrame({"x": np.arange(20_000)})}
    room = (64 << 20, 1 << 30, "test budget")  # 20,000 x 20,000 rows x 16 bytes = 6 GB: never fits
    for code in ("lj = lz.join(lz, how='cross').collect()",
                 "lj = lz.join(lz, how='cross').with_columns(y=pl.col('x') * 2).collect(engine='streaming')",
                 "xj = df.join(df, how='cross')",  # eager: materialized at once, whatever follows
                 "n = df.join(df, how='cross').height"):
        refusal = prerun.check(code, ns, room)
        assert refusal is not None and refusal.library == "polars", code
    for code in ("n = lz.join(lz, how='cross').select(pl.len()).collect(engine='streaming')",
                 "n = lz.join(lz, how='cross').filter(pl.col('x') == pl.col('x_right')).collect()",
                 "plan = lz.join(lz, how='cross')",  # lazy, not collected: nothing allocated
                 "lz.join(lz, how='cross').sink_parquet('out.parquet')"):
        assert prerun.check(code, ns, room) is None, code
