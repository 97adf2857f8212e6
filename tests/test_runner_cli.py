"""``kernel-sentinel run``: bad input exits 64 with one line; good notebooks run in a real kernel (exit 0/1)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from runner_support import read_json, run_cli, stdout_of, write_notebook

from kernel_sentinel.run.notebook import defined_names, parse_value


def _usage_error(proc) -> str:
    assert proc.returncode == 64, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, never a traceback
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_missing_file_is_a_usage_error(tmp_path: Path):
    line = _usage_error(run_cli(str(tmp_path / "nope.ipynb")))
    assert "no such notebook" in line and "nope.ipynb" in line


def test_a_file_that_is_not_a_notebook_is_a_usage_error(tmp_path: Path):
    text = tmp_path / "notes.ipynb"
    text.write_text("print('this is a script, not a notebook')\n")
    assert "not a notebook" in _usage_error(run_cli(str(text)))
    other_json = tmp_path / "data.ipynb"
    other_json.write_text('{"rows": [1, 2, 3]}')
    assert "not a notebook" in _usage_error(run_cli(str(other_json)))


def test_a_notebook_without_kernelspec_is_a_usage_error(tmp_path: Path):
    nb = write_notebook(tmp_path / "bare.ipynb", ["print(1)"], kernelspec=False)
    line = _usage_error(run_cli(str(nb)))
    assert "no kernelspec metadata" in line and "python3" in line  # says how to fix it


def test_a_non_python_notebook_is_a_usage_error(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "ir", "language": "R", "display_name": "R"}
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, str(path))
    assert "Python notebooks only" in _usage_error(run_cli(str(path)))


def test_unknown_parameter_is_a_usage_error(tmp_path: Path):
    nb = write_notebook(tmp_path / "p.ipynb", [{"source": "rows = 10\nname = 'x'", "tags": ["parameters"]}, "rows"])
    line = _usage_error(run_cli(str(nb), "-p", "rowz", "5"))
    assert "unknown parameter 'rowz'" in line and "name, rows" in line
    plain = write_notebook(tmp_path / "plain.ipynb", ["x = 1"])
    assert "no cell tagged 'parameters'" in _usage_error(run_cli(str(plain), "-p", "x", "2"))


def test_bad_memory_limit_is_a_usage_error(tmp_path: Path):
    nb = write_notebook(tmp_path / "m.ipynb", ["x = 1"])
    assert "--memory-limit" in _usage_error(run_cli(str(nb), "--memory-limit", "lots"))


def test_parameters_are_injected_after_the_parameters_cell(tmp_path: Path):
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [
            "print('setup')",
            {"source": "rows = 10\nlabel = 'default'\nratio: float = 0.5\nflag = False", "tags": ["parameters"]},
            "print(rows * 2, label, ratio, flag, type(rows).__name__)",
        ],
    )
    out = tmp_path / "out.ipynb"
    proc = run_cli(str(nb), "-o", str(out), "-p", "rows", "21", "-p", "label", "from cli", "-p", "flag", "True")
    assert proc.returncode == 0, proc.stderr
    cells = nbformat.read(str(out), as_version=4).cells
    assert len(cells) == 4
    assert "injected-parameters" in cells[2].metadata["tags"]
    assert "rows = 21" in cells[2].source and "label = 'from cli'" in cells[2].source
    assert stdout_of(cells[3]) == "42 from cli 0.5 True int\n"


def test_all_cells_ok_exits_0_and_never_touches_the_input(tmp_path: Path):
    nb = write_notebook(tmp_path / "ok.ipynb", ["x = 6", "print(x * 7)", "x"])
    before = nb.read_bytes()
    report = tmp_path / "r.json"
    proc = run_cli(str(nb), "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    assert nb.read_bytes() == before
    out = tmp_path / "ok.out.ipynb"  # the default output sits next to the input
    cells = nbformat.read(str(out), as_version=4).cells
    assert stdout_of(cells[1]) == "42\n"
    assert cells[2].outputs[0]["data"]["text/plain"] == "6"
    assert [c.metadata["kernel_sentinel"]["status"] for c in cells] == ["ok", "ok", "ok"]
    data = read_json(report)
    assert data["exit_code"] == 0 and data["outcome"] == "ok"
    assert [c["status"] for c in data["cells"]] == ["ok", "ok", "ok"]
    assert all(c["seconds"] is not None and c["peak_bytes"] > 0 and c["after_bytes"] > 0 for c in data["cells"])
    assert data["confinement"]["kind"] == "none"


def test_a_cell_that_raises_exits_1_marks_only_it_and_clears_the_rest(tmp_path: Path):
    # Stale outputs from an earlier run must not survive in cells that did not run this time.
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell("print('one')"),
        nbformat.v4.new_markdown_cell("# notes"),
        nbformat.v4.new_code_cell("{}['missing']"),
        nbformat.v4.new_code_cell(
            "print('never')",
            execution_count=7,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="stale\n")],
        ),
    ]
    path = tmp_path / "err.ipynb"
    nbformat.write(nb, str(path))
    out, report = tmp_path / "err-out.ipynb", tmp_path / "err.json"
    proc = run_cli(str(path), "-o", str(out), "--json", str(report))
    assert proc.returncode == 1, proc.stderr
    cells = nbformat.read(str(out), as_version=4).cells
    assert stdout_of(cells[0]) == "one\n"
    assert cells[2].metadata["kernel_sentinel"]["status"] == "error"
    assert cells[2].outputs[-1]["ename"] == "KeyError"
    assert cells[3].metadata["kernel_sentinel"] == {"status": "not_run"}
    assert cells[3].outputs == [] and cells[3].execution_count is None
    statuses = [c.metadata.get("kernel_sentinel", {}).get("status") for c in cells]
    assert statuses.count("error") == 1
    data = read_json(report)
    assert data["failed_cell"] == 2
    assert data["cells"][1]["error"] == {"ename": "KeyError", "evalue": "'missing'"}
    assert data["totals"]["not_run"] == 1


def test_output_may_overwrite_the_input_only_when_named(tmp_path: Path):
    nb = write_notebook(tmp_path / "same.ipynb", ["print('ran')"])
    proc = run_cli(str(nb), "-o", str(nb))
    assert proc.returncode == 0, proc.stderr
    assert stdout_of(nbformat.read(str(nb), as_version=4).cells[0]) == "ran\n"


@pytest.mark.parametrize(
    ("text", "value"), [("3", 3), ("2.5", 2.5), ("True", True), ("None", None), ("abc", "abc"), ("1e3", 1000.0)]
)
def test_parameter_values_are_read_like_papermill(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_defined_names_of_a_parameters_cell():
    assert defined_names("a = 1\nb: int = 2\nc, (d, e) = 1, (2, 3)\nf += 1\nif x:\n    g = 1") == set("abcdef")
    assert defined_names("%matplotlib inline\nalpha = 0.1") == {"alpha"}  # magics: fall back to lines


def test_progress_per_cell_on_a_terminal_and_quiet_otherwise(tmp_path: Path):
    import os
    import pty
    import subprocess
    import sys

    nb = write_notebook(tmp_path / "prog.ipynb", ["x = 1", "print(x)", "1/0", "x"])
    piped = run_cli(str(nb))
    assert piped.returncode == 1
    assert "(1/4)" not in piped.stderr  # no per-cell progress in a log
    assert "ZeroDivisionError" in piped.stderr  # but the summary says what failed

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_sentinel", "run", str(nb)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 1
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    for line in ("cell 1 (1/4)", "cell 2 (2/4)", "cell 3 (3/4)", "cell 4 (4/4)  not run"):
        assert line in screen, screen
    assert re.search(r"cell 3 \(3/4\)\s+[\d.]+ s\s+peak\s+[\d.]+ MiB", screen), screen  # time and memory
