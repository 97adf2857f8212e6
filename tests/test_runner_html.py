"""The HTML report opens in a real headless browser (Debian's chromium) and its memory plot renders.

The page draws the plot with its own inline script; ``--dump-dom`` gives the DOM after the script ran, so
the test sees the SVG path with one vertex per sample, the budget line and one boundary per cell. The
page must not touch the network: it has no external URL at all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from runner_support import read_json, run_cli, write_notebook

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(page: Path, profile: Path) -> str:
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed and could not be (make test runs apt-get install -y chromium as root)",
)
def test_html_report_plot_renders_in_a_headless_browser(tmp_path: Path):
    nb = write_notebook(
        tmp_path / "plot.ipynb",
        ["import numpy as np\nimport time", "a = np.ones(2**24)\ntime.sleep(0.2)", "b = a * 2", "1/0", "print('no')"],
    )
    html, report = tmp_path / "report.html", tmp_path / "report.json"
    proc = run_cli(str(nb), "--html", str(html), "--json", str(report), "--memory-limit", "512M")
    assert proc.returncode == 1, proc.stderr
    page = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing to fetch
    data = read_json(report)
    points = len(data["timeline"]["t"])
    assert points > 3

    dom = _dump_dom(html, tmp_path / "profile")
    svg = re.search(r"<svg[^>]*id=\"memplot\"[^>]*>", dom)
    assert svg and 'data-rendered="yes"' in svg.group(0), "the plot script did not run"
    assert f'data-points="{points}"' in svg.group(0)
    path = re.search(r'<path[^>]*id="memory-path"[^>]*>', dom) or re.search(r'<path[^>]*d="[^"]*"[^>]*memory-path', dom)
    assert path, "no memory curve in the rendered page"
    d = re.search(r'd="([^"]+)"', path.group(0)).group(1)
    assert d.startswith("M") and d.count("L") == points - 1  # one vertex per sample
    assert 'id="budget-line"' in dom
    ran = [c for c in data["cells"] if c["status"] != "not_run"]
    assert dom.count('class="cell-boundary"') == len(ran) == 4
    assert dom.count('class="failed-cell"') == 1
    assert "ZeroDivisionError" in dom and "not_run" in dom  # the table of cells


def test_downsampling_keeps_every_peak_and_bounds_the_points():
    from kernel_sentinel.records.run import downsample

    n = 100_000
    t = [i * 0.025 for i in range(n)]
    b = [1000 + (i % 7) for i in range(n)]
    for spike in (5, 31_337, 99_998):  # one-sample spikes: what a plot must not lose
        b[spike] = 10**9 + spike
    out = downsample(t, b, [0] * n, 3000)
    assert len(out["t"]) <= 3000
    for spike in (5, 31_337, 99_998):
        assert 10**9 + spike in out["bytes"]
        assert t[spike] in out["t"]
    assert out["t"] == sorted(out["t"])
    assert downsample(t[:10], b[:10], [0] * 10, 3000)["bytes"] == b[:10]
