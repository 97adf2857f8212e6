"""Data for the advisor's tests: a realistic mixed-type CSV written in blocks (the pytest process stays small)."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples" / "advise"

CITIES = ["Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Nantes", "Strasbourg", "Montpellier", "Bordeaux", "Lille"]
CHANNELS = ["web", "store", "phone", "partner"]


def write_orders_csv(path: Path, rows: int = 900_000, block: int = 100_000, seed: int = 7) -> dict[str, float]:
    """Write an orders table (ints, floats, dates, low- and high-cardinality text) and return checksums.

    The checksums (row count, quantity total, revenue total) let a test prove that a chunked read in a
    kernel processed every row.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    products = [f"SKU-{i:05d}" for i in range(2_000)]
    total_qty, total_rev, written = 0, 0.0, 0
    start = np.datetime64("2023-01-01T00:00:00")
    with open(path, "w") as f:
        for i in range(0, rows, block):
            n = min(block, rows - i)
            qty = rng.integers(1, 12, n)
            price = np.round(rng.gamma(2.0, 20.0, n), 2)
            df = pd.DataFrame({
                "order_id": np.arange(i, i + n) + 1_000_000,
                "ordered_at": (start + rng.integers(0, 365 * 86400, n).astype("timedelta64[s]")).astype(str),
                "customer": [f"CUST-{c:08d}" for c in rng.integers(0, 5_000_000, n)],
                "city": rng.choice(CITIES, n),
                "channel": rng.choice(CHANNELS, n),
                "product": rng.choice(products, n),
                "quantity": qty,
                "unit_price": price,
                "discount": np.round(rng.uniform(0, 0.3, n), 3),
                "returned": rng.random(n) < 0.04,
            })
            df.to_csv(f, header=(i == 0), index=False)
            total_qty += int(qty.sum())
            total_rev += float((qty * price).sum())
            written += n
    return {"rows": written, "quantity": total_qty, "revenue": total_rev}


def write_numeric_csv(path: Path, rows: int = 2_000_000, block: int = 250_000, seed: int = 11) -> None:
    """Write a numbers-only CSV (ids, measurements, small codes): the case where parser leftovers dominate."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(0, rows, block):
            n = min(block, rows - i)
            pd.DataFrame({
                "sensor": rng.integers(0, 1_000_000, n),
                "reading": rng.random(n),
                "celsius": np.round(rng.normal(20, 5, n), 3),
                "status": rng.integers(0, 5, n),
            }).to_csv(f, header=(i == 0), index=False)


def copy_sample(name: str, dest: Path) -> Path:
    """Copy a sample notebook (and the data folder beside it) into ``dest`` and return the notebook's path."""
    target = dest / name
    shutil.copy(SAMPLES / name, target)
    data = SAMPLES / "data"
    if data.is_dir() and not (dest / "data").exists():
        shutil.copytree(data, dest / "data")
    return target
