"""``kernel_sentinel.shrink``: smaller dtypes, the same values, and an honest table of what it saved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kernel_sentinel import shrink
from kernel_sentinel.advise.estimate import frame_footprint


def orders(n: int = 50_000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "order_id": np.arange(n) + 10_000_000,
        "quantity": rng.integers(1, 20, n),
        "delta": rng.integers(-300, 300, n),
        "unit_price": np.round(rng.gamma(2.0, 20.0, n), 2),  # cents: float32 cannot hold these exactly
        "score": rng.integers(0, 5, n) / 4,  # quarters: exact in float32
        "city": rng.choice(["Paris", "Lyon", "Nice", "Lille"], n),
        "customer": [f"C{i:07d}" for i in rng.permutation(n)],  # all distinct: stays text
        "returned": rng.random(n) < 0.05,
        "coupon": pd.array(np.where(rng.random(n) < 0.3, rng.integers(0, 90, n), -1), dtype="Int64"),
        "ordered": pd.date_range("2024-01-01", periods=n, freq="min"),
    })
    df.loc[df.index[::97], "city"] = None
    df.loc[df.index[::89], "coupon"] = pd.NA
    return df


def test_values_never_change_and_memory_goes_down() -> None:
    df = orders()
    original = df.copy(deep=True)
    small, report = shrink(df)
    pd.testing.assert_frame_equal(df, original)  # the input is untouched
    pd.testing.assert_frame_equal(small, df, check_dtype=False, check_categorical=False)
    for name in df.columns:  # exact equality, value by value (NaN where NaN was)
        a, b = df[name].astype(object), small[name].astype(object)
        assert a.isna().equals(b.isna()), name
        assert (a[a.notna()] == b[b.notna()]).all(), name
    dtypes = small.dtypes.astype(str).to_dict()
    assert dtypes["order_id"] == "int32" and dtypes["quantity"] == "int8" and dtypes["delta"] == "int16"
    assert dtypes["unit_price"] == "float64"  # 12.34 is not exactly a float32: left alone
    assert dtypes["score"] == "float32"
    assert dtypes["city"] == "category" and dtypes["customer"] in ("str", "object", "string")
    assert dtypes["coupon"] == "Int8" and dtypes["returned"] == "bool"
    assert frame_footprint(small) < 0.6 * frame_footprint(df)  # the distinct customer ids stay as text


def test_report_table_matches_the_frames() -> None:
    df = orders()
    result = shrink(df)
    report = result.report
    assert list(report.columns) == ["column", "before", "after", "bytes_before", "bytes_after", "saved_bytes"]
    assert list(report["column"]) == list(df.columns)
    assert (report["saved_bytes"] >= 0).all()
    row = report.set_index("column").loc["quantity"]
    assert (row["before"], row["after"], row["bytes_before"], row["bytes_after"]) == ("int64", "int8", 8 * len(df), len(df))
    assert result.bytes_before == frame_footprint(df) and result.bytes_after == frame_footprint(result.frame)
    text = str(result)
    assert "quantity" in text and "int64 -> int8" in text and "saved" in text


def test_nothing_to_gain_and_bad_input() -> None:
    df = pd.DataFrame({"x": np.random.default_rng(0).random(100), "flag": [True, False] * 50})
    small, report = shrink(df)
    assert (report["saved_bytes"] == 0).all() and small.dtypes.equals(df.dtypes)
    s_small, _ = shrink(pd.Series([1, 2, 3] * 10, name="n"))
    assert isinstance(s_small, pd.Series) and str(s_small.dtype) == "int8"
    with pytest.raises(TypeError, match="DataFrame"):
        shrink([1, 2, 3])
