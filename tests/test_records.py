"""The records give back exactly the JSON they read (every captured sample), and their schemas are current and hold.

Samples: real deaths (tests/samples/autopsy/, explained; the deaths inside real run reports), real run
reports (tests/samples/runs/), the advisor's findings on tests/samples/advise/, the guard's real evidence
(tests/samples/guard_evidence/) and with its explanation (tests/samples/memory_errors/), fleet summaries
(tests/samples/fleet/).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import pytest
from test_records_golden import death_reports, render_all

from kernel_sentinel.records import RECORDS, DeathReport, Finding, FleetSummary, GuardEvidence, GuardExplanation, RunReport
from kernel_sentinel.records.schema import schema_files, schema_of

SAMPLES = Path(__file__).parent / "samples"
SCHEMAS = Path(__file__).parent.parent / "docs" / "schemas"


def dumped(data) -> str:
    """Return the JSON text of ``data`` as the CLIs write it (key order matters)."""
    return json.dumps(data, indent=2)


def _deaths() -> dict[str, dict]:
    return death_reports(SAMPLES)


def _runs() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((SAMPLES / "runs").glob("*.json"))}


@functools.cache
def _rendered() -> dict[str, str]:
    return render_all(SAMPLES)


def _findings() -> list[dict]:
    found = []
    for name, text in _rendered().items():
        if name.startswith("findings_") and name.endswith(".json"):
            found += json.loads(text)
    return found


def _guard() -> list[dict]:
    bare = [json.loads(p.read_text())["evidence"] for p in sorted((SAMPLES / "guard_evidence").glob("*.json"))]
    return bare + [json.loads(p.read_text()) for p in sorted((SAMPLES / "memory_errors").glob("*.json"))]


def _fleet() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((SAMPLES / "fleet").glob("*.json"))]


def test_death_reports_round_trip_exactly() -> None:
    deaths = _deaths()
    assert len(deaths) >= 11
    for name, data in deaths.items():
        rec = DeathReport.from_dict(data)
        assert dumped(rec.to_dict()) == dumped(data), name
        assert rec.cause == data.get("cause") and rec.cell == data.get("cell")


def test_todays_explanations_round_trip_exactly() -> None:
    from kernel_sentinel.autopsy.classify import classify
    from kernel_sentinel.autopsy.evidence import Evidence
    from kernel_sentinel.autopsy.explain import explain

    for path in sorted((SAMPLES / "autopsy").glob("*.json")):
        data = json.loads(path.read_text())
        if "evidence" not in data:
            continue
        ev = Evidence.from_dict(data["evidence"])
        report = explain(ev, classify(ev))
        assert dumped(DeathReport.from_dict(report).to_dict()) == dumped(report), path.name


def test_run_reports_round_trip_exactly_with_typed_cells_and_death() -> None:
    for name, data in _runs().items():
        rec = RunReport.from_dict(data)
        assert dumped(rec.to_dict()) == dumped(data), name
        assert [c.status for c in rec.cells] == [c["status"] for c in data["cells"]]
        assert (rec.death is None) == (data["death"] is None)
        if rec.death is not None:
            assert isinstance(rec.death, DeathReport) and rec.death.cause == data["death"].get("cause")


def test_findings_round_trip_exactly() -> None:
    found = _findings()
    assert len(found) >= 10
    for data in found:
        assert dumped(Finding.from_dict(data).to_dict()) == dumped(data)


def test_guard_evidence_round_trips_exactly() -> None:
    samples = _guard()
    assert len(samples) >= 8
    for data in samples:
        assert dumped(GuardEvidence.from_dict(data).to_dict()) == dumped(data)


def test_guard_evidence_carries_its_explanation_as_a_record() -> None:
    data = json.loads((SAMPLES / "memory_errors" / "out_cache.json").read_text())
    rec = GuardEvidence.from_dict(data)
    assert isinstance(rec.explanation, GuardExplanation) and rec.explanation.remedy_kind == "free_hidden"
    assert rec.explanation.hidden[0]["name"] == "Out" and rec.cell == data["cell"]
    built = GuardEvidence.explained({k: v for k, v in data.items() if k != "explanation"}, data["explanation"])
    assert dumped(built.to_dict()) == dumped(data)
    assert "explanation" not in GuardEvidence.from_dict(_guard()[0]).to_dict()  # bare evidence stays bare


def test_fleet_summaries_round_trip_exactly() -> None:
    samples = _fleet()
    assert len(samples) >= 4
    for data in samples:
        rec = FleetSummary.from_dict(data)
        assert dumped(rec.to_dict()) == dumped(data)
        assert rec.deaths.total == data["deaths"]["total"]
        assert [c.deaths for c in rec.top_cells] == [c["deaths"] for c in data["top_cells"]]
    empty = FleetSummary(since="7d")
    assert empty.to_dict() == {"since": "7d", "by_key": "cause", "deaths": {"total": 0, "by": {}},
                               "memory_errors": {"total": 0, "by": {}}, "top_cells": [], "by_day": {}}


def test_a_record_built_in_code_writes_what_the_producer_wrote() -> None:
    f = Finding(path="a.py", cell=None, line=3, kind="big_allocation", message="m", remedy="r", estimate_bytes=8)
    assert list(f.to_dict()) == ["path", "cell", "line", "kind", "message", "remedy", "estimate_bytes",
                                 "budget_bytes", "severity", "basis", "code", "details"]
    d = DeathReport(kernel_id="k", cause="oom_kill", summary="s", exit={"signal": "SIGKILL"}, cell=None, memory={},
                    remedy="r", memory_exhausted=True)
    out = d.to_dict()
    assert out["memory_exhausted"] is True and "scope" not in out and "user" not in out  # unset optional keys stay out
    assert list(d.contract_first())[:7] == list(DeathReport.CONTRACT_KEYS)


def test_new_fields_set_after_reading_are_written_and_unknown_keys_kept() -> None:
    data = {"kernel_id": "k", "cause": "abort", "future_key": [1]}
    rec = DeathReport.from_dict(data)
    rec.memory_exhausted = True
    rec.user = "ada"
    assert rec.to_dict() == {"kernel_id": "k", "cause": "abort", "future_key": [1], "memory_exhausted": True, "user": "ada"}
    assert rec.extra == {"future_key": [1]}


def test_schemas_in_docs_are_current() -> None:
    files = schema_files()
    assert sorted(files) == sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    for name, text in files.items():
        assert (SCHEMAS / name).read_text() == text, f"docs/schemas/{name} is stale: python -m kernel_sentinel.records.schema"


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_sample_validates_against_its_schema(cls) -> None:
    samples = {DeathReport: list(_deaths().values()), RunReport: list(_runs().values()),
               Finding: _findings(), GuardEvidence: _guard(), FleetSummary: _fleet()}[cls]
    validator = jsonschema.Draft202012Validator(schema_of(cls))
    for data in samples:
        validator.validate(json.loads(json.dumps(data)))


def test_a_wrong_record_fails_its_schema() -> None:
    validator = jsonschema.Draft202012Validator(schema_of(DeathReport))
    assert not validator.is_valid({"kernel_id": "k", "cause": "eaten_by_grue", "summary": "s", "exit": None,
                                   "cell": None, "memory": None, "remedy": "r"})
    assert not validator.is_valid({"kernel_id": "k"})  # the contract's keys are required


def test_renderers_are_picked_by_record_and_format() -> None:
    from kernel_sentinel.report import kind_of, render, renderer

    death = DeathReport.from_dict(_deaths()["oom_cgroup"])
    assert kind_of(death) == "death" and kind_of([]) == "findings"
    assert json.loads(render(death, "json"))["cause"] == "oom_kill"
    assert render(death, "notebook")["output_type"] == "display_data"
    with pytest.raises(ValueError, match="no pdf renderer for death"):
        renderer("death", "pdf")
    with pytest.raises(ValueError, match="not a record"):
        render({"cause": "oom_kill"}, "json")
