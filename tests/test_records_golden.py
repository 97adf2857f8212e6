"""Every renderer's output on every captured sample is byte for byte what it was before the records refactor.

The golden files in tests/samples/golden/ were written by its capture.py from the code of 2026-11-28,
before the records existed: deaths (tests/samples/autopsy/, and the deaths inside tests/samples/runs/),
the advisor's findings on tests/samples/advise/ at two budgets each, and real ``kernel-sentinel run --json``
reports (tests/samples/runs/). Here the same samples go through today's records and renderers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parent / "samples"
GOLDEN = SAMPLES / "golden"
BUDGETS = {"churn_features.ipynb": ["2G", "32M"], "clean_churn_model.ipynb": ["2G", "256M"],
           "clean_sales_report.ipynb": ["2G", "8M"], "sensor_pipeline.ipynb": ["2G", "64M"],
           "train_model.py": ["4G", "256M"]}
DEATHS = ["abort", "bus_error_disk_full", "exit3", "external_sigkill_child", "external_sigkill_supervisor",
          "external_sigterm_child", "oom_cgroup", "oom_cgroup_no_supervisor", "oom_recursion", "segfault"]
RUNS = ["ok", "error", "died"]


def FIXED_DISK(path: Path) -> tuple[int, str, str]:  # noqa: N802
    """Return a fixed free space for the memmap check: this disk's own changes from run to run and machine to machine."""
    return 80 * 1024**3, "/data", "ext4"


def rich_text(renderable) -> str:
    """Return what a 100-column colourless terminal shows for ``renderable`` (rich renders the same everywhere)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def death_reports(samples: Path) -> dict[str, dict]:
    """Return the why-dict of every captured death: explained from autopsy evidence, or as a run recorded it."""
    from kernel_sentinel.autopsy.classify import classify
    from kernel_sentinel.autopsy.evidence import Evidence
    from kernel_sentinel.autopsy.explain import explain

    out = {}
    for name in DEATHS:
        ev = Evidence.from_dict(json.loads((samples / "autopsy" / f"{name}.json").read_text())["evidence"])
        out[name] = explain(ev, classify(ev))
    for name in RUNS:
        death = json.loads((samples / "runs" / f"{name}.json").read_text())["death"]
        if death:
            out[f"run_{name}"] = death
    return out


def render_all(samples: Path) -> dict[str, str]:
    """Return {golden file name: text} for every sample through every renderer."""
    from kernel_sentinel.advise import Context, analyze
    from kernel_sentinel.advise.source import load_cells
    from kernel_sentinel.report.death_json import render_death_json
    from kernel_sentinel.report.death_notebook import render_death_html, render_death_text
    from kernel_sentinel.report.death_terminal import render_death, render_deaths
    from kernel_sentinel.report.findings_json import findings_json
    from kernel_sentinel.report.findings_terminal import render_findings, render_plain
    from kernel_sentinel.report.run_html import render_report_html
    from kernel_sentinel.report.run_terminal import render_summary
    from kernel_sentinel.sizes import parse_size

    out: dict[str, str] = {}
    deaths = death_reports(samples)
    for name, report in deaths.items():
        out[f"death_{name}.json"] = render_death_json(report)
        out[f"death_{name}.txt"] = render_death_text(report)
        out[f"death_{name}.html"] = render_death_html(report)
        out[f"death_{name}.terminal"] = rich_text(render_death(report))
    rows = [{"id": i, "kernel_id": r.get("kernel_id"), "died_at": r.get("died_at"), "cause": r.get("cause"),
             "report": r, "shown_at": None} for i, r in enumerate(deaths.values(), 1)]
    out["deaths_list.terminal"] = rich_text(render_deaths(rows))
    for name, budgets in BUDGETS.items():
        path = samples / "advise" / name
        for budget in budgets:
            ctx = Context(path=f"advise/{name}", base_dir=path.parent, budget_bytes=parse_size(budget),
                          budget_source=f"--budget {budget}", notebook=path.suffix == ".ipynb", fs_info=FIXED_DISK)
            found = analyze(load_cells(path), ctx)
            out[f"findings_{name}_{budget}.json"] = findings_json(found)
            out[f"findings_{name}_{budget}.txt"] = render_plain(found, parse_size(budget), f"--budget {budget}", 1)
            out[f"findings_{name}_{budget}.terminal"] = rich_text(render_findings(found, parse_size(budget), f"--budget {budget}", 1))
    for name in RUNS:
        report = json.loads((samples / "runs" / f"{name}.json").read_text())
        out[f"run_{name}.json"] = json.dumps(report, indent=2) + "\n"
        out[f"run_{name}.terminal"] = rich_text(render_summary(report))
        out[f"run_{name}.html"] = render_report_html(report)
    return out


RENDERED = None


def _rendered() -> dict[str, str]:
    global RENDERED
    if RENDERED is None:
        RENDERED = render_all(SAMPLES)
    return RENDERED


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.iterdir() if p.suffix != ".py"))
def test_output_matches_golden(name: str) -> None:
    assert _rendered()[name] == (GOLDEN / name).read_text(), f"{name} differs from its golden file"


def test_every_output_has_a_golden_file() -> None:
    assert sorted(_rendered()) == sorted(p.name for p in GOLDEN.iterdir() if p.suffix != ".py")
