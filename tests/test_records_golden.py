"""Every renderer's output on every captured sample is byte for byte what it was before the records refactor.

The golden files in tests/samples/golden/ were written by its capture.py from the code of 2026-11-28,
before the records existed: deaths (tests/samples/deaths/: the autopsy's explanations of the evidence in
tests/samples/autopsy/, and the deaths inside tests/samples/runs/),
the advisor's findings on tests/samples/advise/ at two budgets each, and real ``kernel-sentinel run --json``
reports (tests/samples/runs/). Here the same samples go through today's records and renderers.

The guard's MemoryBudgetError (``memory_error_*``: text, HTML, the one-line message) and the fleet summary
(``fleet_*``: JSON, terminal, HTML) joined later: their goldens were written by the code of commit 0ec3ca7,
when the guard's renderer still read its explanation object and the fleet's lived in ``fleet/render.py``,
from the records frozen in tests/samples/memory_errors/ (the guard's real evidence of
tests/samples/guard_evidence/ plus its explanation, and two made-up cases: escaping, sparse evidence) and
tests/samples/fleet/ (fleet summaries of a seeded store at a fixed time).
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
# The advisor names missing files by their absolute path, and the terminal wraps at 100 columns: the advisor's
# samples are read from this fixed folder so the goldens are the same wherever the checkout is.
FIXED_ADVISE = Path("/tmp/kernel-sentinel-golden/advise")


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
    """Return the why-dict of every captured death, as the autopsy explained it (frozen) or a run recorded it.

    tests/samples/deaths/ holds ``explain(classify(evidence))`` of tests/samples/autopsy/, written by the
    code of 2026-11-28: the renderers are compared on fixed input, whatever the explanation grows later.
    """
    out = {}
    for name in DEATHS:
        out[name] = json.loads((samples / "deaths" / f"{name}.json").read_text())
    for name in RUNS:
        death = json.loads((samples / "runs" / f"{name}.json").read_text())["death"]
        if death:
            out[f"run_{name}"] = death
    return out


def render_all(samples: Path) -> dict[str, str]:
    """Return {golden file name: text} for every sample through every renderer."""
    from kernel_sentinel.advise import Context, analyze
    from kernel_sentinel.advise.source import load_cells
    from kernel_sentinel.records import DeathReport, Finding, RunReport
    from kernel_sentinel.report import render, renderer
    from kernel_sentinel.sizes import parse_size

    out: dict[str, str] = {}
    deaths = death_reports(samples)
    for name, data in deaths.items():
        report = DeathReport.from_dict(data)
        out[f"death_{name}.json"] = render(report, "json")
        out[f"death_{name}.txt"] = render(report, "text")
        out[f"death_{name}.html"] = render(report, "html")
        out[f"death_{name}.terminal"] = rich_text(render(report, "terminal"))
    rows = [{"id": i, "kernel_id": r.get("kernel_id"), "died_at": r.get("died_at"), "cause": r.get("cause"),
             "report": r, "shown_at": None} for i, r in enumerate(deaths.values(), 1)]
    out["deaths_list.terminal"] = rich_text(renderer("deaths", "terminal")(rows))
    import shutil

    shutil.copytree(samples / "advise", FIXED_ADVISE, dirs_exist_ok=True)
    for name, budgets in BUDGETS.items():
        path = FIXED_ADVISE / name
        for budget in budgets:
            ctx = Context(path=f"advise/{name}", base_dir=path.parent, budget_bytes=parse_size(budget),
                          budget_source=f"--budget {budget}", notebook=path.suffix == ".ipynb", fs_info=FIXED_DISK)
            found = [Finding.from_dict(f.to_dict()) for f in analyze(load_cells(path), ctx)]
            out[f"findings_{name}_{budget}.json"] = render(found, "json")
            out[f"findings_{name}_{budget}.txt"] = render(found, "text", budget_bytes=parse_size(budget),
                                                          budget_source=f"--budget {budget}", scope=1)
            out[f"findings_{name}_{budget}.terminal"] = rich_text(render(found, "terminal", budget_bytes=parse_size(budget),
                                                                         budget_source=f"--budget {budget}", files=1))
    for name in RUNS:
        report = RunReport.from_dict(json.loads((samples / "runs" / f"{name}.json").read_text()))
        out[f"run_{name}.json"] = render(report, "json")
        out[f"run_{name}.terminal"] = rich_text(render(report, "terminal"))
        out[f"run_{name}.html"] = render(report, "html")
    from kernel_sentinel.records import FleetSummary, GuardEvidence
    from kernel_sentinel.report.memory_error import error_message
    from kernel_sentinel.report.memory_error import render as bundle

    for path in sorted((samples / "memory_errors").glob("*.json")):
        evidence = GuardEvidence.from_dict(json.loads(path.read_text()))
        shown = bundle(evidence)
        out[f"memory_error_{path.stem}.txt"] = shown["text/plain"]
        out[f"memory_error_{path.stem}.html"] = shown["text/html"]
        out[f"memory_error_{path.stem}.msg"] = error_message(evidence)
        assert shown["text/plain"] == render(evidence, "text") and shown["text/html"] == render(evidence, "html")
    for path in sorted((samples / "fleet").glob("*.json")):
        summary = FleetSummary.from_dict(json.loads(path.read_text()))
        out[f"fleet_{path.stem}.json"] = render(summary, "json")
        out[f"fleet_{path.stem}.terminal"] = rich_text(render(summary, "terminal"))
        out[f"fleet_{path.stem}.html"] = render(summary, "html")
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
