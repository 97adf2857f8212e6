"""``kernel-sentinel check`` on notebooks written like real work: every planted killer found, nothing on clean work.

The notebooks live in tests/samples/advise/ (written as a data scientist would, not tuned to the checker);
the CSV the sensor notebook reads is generated in tmp_path. Every test runs the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from advise_support import SAMPLES, copy_sample, write_orders_csv

CLI = [sys.executable, "-m", "kernel_sentinel", "check"]


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


def findings(*args: str | Path) -> list[dict]:
    proc = run_check(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert proc.returncode == (1 if data else 0)
    return data


def at(found: list[dict], kind: str, cell: int | None, line: int) -> dict:
    hits = [f for f in found if f["kind"] == kind and f["cell"] == cell and f["line"] == line]
    assert hits, f"no {kind} at cell {cell} line {line}; found: " + "; ".join(
        f"{f['kind']}@{f['cell']}:{f['line']}" for f in found)
    return hits[0]


REQUIRED = {"path", "cell", "line", "kind", "estimate_bytes", "budget_bytes", "message", "remedy"}
GiB = 1 << 30


def test_churn_notebook_every_planted_killer(tmp_path: Path) -> None:
    nb = copy_sample("churn_features.ipynb", tmp_path)
    found = findings(nb, "--budget", "2G")
    for f in found:
        assert REQUIRED <= f.keys() and f["budget_bytes"] == 2 * GiB and f["path"] == str(nb)

    missing = at(found, "missing_file", 3, 1)
    assert "events_2024.csv" in missing["message"] and "data/events_2023.csv" in missing["remedy"]

    activity = at(found, "big_allocation", 5, 5)  # constants from lines 1-3, dtype from poisson
    assert activity["estimate_bytes"] == 120_000 * 730 * 48 * 8 and activity["severity"] == "error"
    assert "for start in range(0, 120_000," in activity["remedy"]

    sim = at(found, "big_allocation", 6, 3)  # emb is float32 after .astype
    assert sim["estimate_bytes"] == 120_000 * 120_000 * 4

    loop = at(found, "grows_in_loop", 7, 5)
    assert "parts.append(part)" in loop["remedy"] and "monthly = pd.concat(parts, ignore_index=True)" in loop["remedy"]

    held = at(found, "held_after_use", 8, 2)
    assert "del raw" in held["remedy"] and held["estimate_bytes"] == 2_000_000 * 40 * 8

    out = at(found, "kept_by_out", 11, 1)
    assert out["estimate_bytes"] == 1_000_000 * 50 * 8 and "result = features.fillna(0)" in out["remedy"]


def test_sensor_notebook_every_planted_killer(tmp_path: Path) -> None:
    nb = copy_sample("sensor_pipeline.ipynb", tmp_path)
    write_orders_csv(tmp_path / "orders.csv", rows=150_000, block=50_000)
    found = findings(nb, "--budget", "32M")

    read = at(found, "big_read", 2, 1)
    assert read["severity"] == "error" and read["estimate_bytes"] > 24 << 20
    assert "scaled to the file" in read["basis"]
    assert f"for chunk in pd.read_csv('orders.csv', chunksize={read['details']['chunksize']:_})" in read["remedy"]
    assert "'city': 'category'" in read["remedy"] and "usecols" in read["remedy"]

    mm = at(found, "memmap_exceeds_disk", 3, 3)
    assert mm["estimate_bytes"] == 50_000 * 100_000_000 * 4 and "SIGBUS" in mm["message"]
    assert mm["details"]["free_bytes"] < mm["estimate_bytes"]

    grow = at(found, "unbounded_growth", 4, 4)
    assert "readings" in grow["message"]
    append = at(found, "grows_in_loop", 5, 3)
    assert "values = np.concatenate(parts)" in append["remedy"]
    text = at(found, "grows_in_loop", 6, 3)
    assert "summary = ''.join(parts)" in text["remedy"]


def test_read_that_fits_is_not_reported_and_huge_one_suggests_out_of_core(tmp_path: Path) -> None:
    nb = copy_sample("sensor_pipeline.ipynb", tmp_path)
    write_orders_csv(tmp_path / "orders.csv", rows=150_000, block=50_000)
    assert not [f for f in findings(nb, "--budget", "2G") if f["kind"] == "big_read"]
    tiny = at(findings(nb, "--budget", "8M"), "big_read", 2, 1)
    assert tiny["details"].get("out_of_core") and "duckdb.sql" in tiny["remedy"] and "pl.scan_csv" in tiny["remedy"]


@pytest.mark.parametrize("name", ["clean_sales_report.ipynb", "clean_churn_model.ipynb"])
def test_clean_notebook_has_no_findings(name: str, tmp_path: Path) -> None:
    nb = copy_sample(name, tmp_path)
    assert findings(nb, "--budget", "2G") == []
    assert findings(nb, "--budget", "256M") == []
    proc = run_check(nb)  # the machine's own budget, terminal output
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No kernel killers found" in proc.stdout


def test_python_file_has_null_cell(tmp_path: Path) -> None:
    found = findings(SAMPLES / "train_model.py", "--budget", "4G")
    f = at(found, "big_allocation", None, 9)
    assert f["estimate_bytes"] == 1_000_000 * 10_000 * 8
    assert "dtype=np.float32" in f["remedy"]
    proc = run_check(SAMPLES / "train_model.py", "--budget", "4G")
    assert proc.returncode == 1 and "train_model.py:9" in proc.stdout


def test_percentage_budget_and_terminal_output(tmp_path: Path) -> None:
    nb = copy_sample("churn_features.ipynb", tmp_path)
    proc = run_check(nb, "--budget", "50%")
    assert proc.returncode == 1 and "budget" in proc.stdout and "cell 5 line 5" in proc.stdout


def test_syntax_error_is_a_finding(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np"),
                nbformat.v4.new_code_cell("for i in range(3)\n    print(i)"),
                nbformat.v4.new_code_cell("big = np.ones((50_000, 50_000))")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    found = findings(tmp_path / "broken.ipynb", "--budget", "1G")
    at(found, "syntax_error", 1, 1)
    at(found, "big_allocation", 2, 1)  # the other cells are still checked


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    ("{\"cells\": [", "not a notebook"),
    ("[1, 2]", "not a notebook"),
    (b"\xff\xfe\x00garbage", "not a notebook"),
])
def test_unreadable_inputs_are_one_line_usage_errors(tmp_path: Path, content, expected) -> None:
    path = tmp_path / "input.ipynb"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    proc = run_check(path)
    assert proc.returncode == 64
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr


def test_usage_errors(tmp_path: Path) -> None:
    assert run_check().returncode == 64  # no PATH
    bad = run_check(SAMPLES / "train_model.py", "--budget", "lots")
    assert bad.returncode == 64 and "cannot read size" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    folder = run_check(tmp_path)
    assert folder.returncode == 64 and "is a directory" in folder.stderr
    binary = tmp_path / "model.py"
    binary.write_bytes(b"\x80\x81\x82")
    assert run_check(binary).returncode == 64
    # a good file beside a missing one: its findings are printed, the missing one makes it a usage error
    mixed = run_check(SAMPLES / "train_model.py", tmp_path / "nope.ipynb", "--budget", "4G", "--json")
    assert mixed.returncode == 64 and json.loads(mixed.stdout)[0]["kind"] == "big_allocation"
    assert "nope.ipynb: no such file" in mixed.stderr
