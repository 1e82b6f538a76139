"""The six-criteria review gate: the pure evaluation and `tandem gate` as a reviewer uses it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from policies.review_gate import CRITERIA, evaluate
from tandem.cli import main
from vocabulary.review import MANIFEST_KEY, ReviewGate, manifest_data

GOOD = {
    "date": "2026-11-20",
    "durable_advantage": "Ten years of adjuster-labelled claims no competitor holds",
    "consumers": ["claims-triage", "underwriting-assist"],
    "kpi": {
        "name": "median handling time",
        "baseline": "14 min",
        "target": "9 min",
        "target_date": "2027-02-10",
    },
    "cto_assessment": "https://wiki.example.com/ai/claims/cto-assessment",
    "data_audit": {"completed": True, "date": "2026-11-02"},
    "maintenance": {
        "owner": "claims-ml@example.com",
        "plan": "https://wiki.example.com/ai/claims/plan",
    },
}


def with_(**changes: object) -> dict:
    return {**GOOD, **changes}


def failing(review: dict | None) -> dict[str, str]:
    return {r.criterion: r.reason for r in evaluate(review) if not r.ok}


def test_complete_review_passes_all_six_in_order() -> None:
    results = evaluate(GOOD)
    assert [r.criterion for r in results] == list(CRITERIA)
    assert all(r.ok for r in results), results


def test_missing_review_fails_every_criterion() -> None:
    assert set(failing(None)) == set(CRITERIA)
    assert set(failing({})) == set(CRITERIA)


@pytest.mark.parametrize(
    ("review", "criterion", "why"),
    [
        (with_(durable_advantage="TBD"), "strategic alignment", "no durable advantage"),
        (with_(durable_advantage="GenAI"), "strategic alignment", "too vague"),
        (with_(consumers=["claims-triage", "claims-triage"]), "reusability", "at least 2"),
        (with_(kpi={**GOOD["kpi"], "baseline": None}), "measurability", "kpi.baseline"),
        (with_(kpi={**GOOD["kpi"], "target": "14 min"}), "measurability", "equals its baseline"),
        (
            with_(kpi={**GOOD["kpi"], "target_date": "2027-02-19"}),
            "measurability",
            "more than 90 days",
        ),
        (with_(kpi={**GOOD["kpi"], "target_date": "2026-11-01"}), "measurability", "not after"),
        (with_(cto_assessment="approved in hallway"), "feasibility", "not a link"),
        (with_(cto_assessment=None), "feasibility", "CTO assessment"),
        (with_(data_audit={"completed": True}), "data quality", "no date"),
        (
            with_(data_audit={"completed": False, "date": "2026-11-02"}),
            "data quality",
            "not completed",
        ),
        (
            with_(data_audit={"completed": True, "date": "2026-12-01"}),
            "data quality",
            "after the review",
        ),
        (with_(maintenance={"owner": "n/a", "plan": "x"}), "maintainability", "no owner"),
        (
            with_(
                maintenance={
                    "owner": "a@b.c",
                    "plan": "https://x.example.com/p",
                    "horizon_months": 12,
                }
            ),
            "maintainability",
            "18 needed",
        ),
    ],
)
def test_each_criterion_fails_with_a_reason(review: dict, criterion: str, why: str) -> None:
    fails = failing(review)
    assert list(fails) == [criterion]
    assert why in fails[criterion]


def test_90_day_window_counts_from_the_review_date_or_today() -> None:
    undated = {k: v for k, v in GOOD.items() if k != "date"}
    assert all(r.ok for r in evaluate(undated, today=date(2026, 11, 20)))
    assert "measurability" in failing_at(undated, date(2026, 10, 1))


def failing_at(review: dict, today: date) -> set[str]:
    return {r.criterion for r in evaluate(review, today=today) if not r.ok}


def test_a_use_case_is_not_its_own_consumer() -> None:
    review = with_(consumers=["claims-assistant", "underwriting-assist"])
    assert all(r.ok for r in evaluate(review))
    assert [r.criterion for r in evaluate(review, use_case="claims-assistant") if not r.ok] == [
        "reusability"
    ]


def test_model_rejects_misspelled_fields() -> None:
    with pytest.raises(ValueError, match="durable_advantge"):
        ReviewGate.model_validate({"durable_advantge": "typo"})


def test_manifest_round_trips_through_the_configmap_data() -> None:
    data = manifest_data(GOOD)
    assert list(data) == [MANIFEST_KEY]
    assert evaluate(json.loads(data[MANIFEST_KEY])) == evaluate(GOOD)


@pytest.fixture
def usecase_file(tmp_path: Path):
    def write(review: dict | None) -> Path:
        doc = {"name": "claims-assistant", "team": "claims", "pool": "h100"}
        if review is not None:
            doc["review"] = review
        path = tmp_path / "claims-assistant.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


def test_gate_cli_json_lists_six_criteria_and_exits_zero_when_approved(
    usecase_file, capsys
) -> None:
    assert main(["gate", str(usecase_file(GOOD)), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["use_case"] == "claims-assistant" and out["passed"] is True
    assert [c["criterion"] for c in out["criteria"]] == list(CRITERIA)
    assert all(set(c) == {"criterion", "ok", "reason"} for c in out["criteria"])


def test_gate_cli_table_names_the_failing_criterion_and_exits_one(usecase_file, capsys) -> None:
    assert main(["gate", str(usecase_file(with_(consumers=["only-us"])))]) == 1
    out = capsys.readouterr().out
    assert "reusability" in out and "FAIL" in out and "at least 2" in out


def test_gate_cli_without_review_section_fails(usecase_file, capsys) -> None:
    assert main(["gate", str(usecase_file(None)), "--output", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["passed"] is False


def test_gate_cli_malformed_review_exits_two_naming_the_field(usecase_file, capsys) -> None:
    assert main(["gate", str(usecase_file({"kpi": {"target_date": "next quarter"}}))]) == 2
    assert "review.kpi.target_date" in capsys.readouterr().err


USE_CASES = sorted((Path(__file__).resolve().parents[2] / "stacks" / "usecases").glob("*.yaml"))


@pytest.mark.parametrize("path", USE_CASES, ids=[p.stem for p in USE_CASES])
def test_shipped_use_cases_pass_the_gate(path: Path, capsys) -> None:
    code = main(["gate", str(path), "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, [c for c in out["criteria"] if not c["ok"]]
