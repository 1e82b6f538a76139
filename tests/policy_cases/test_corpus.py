"""The policy corpus: realistic bad configurations, each with the violation it must raise.

Every case in cases/*.yaml patches one mistake into baseline.yaml (a compliant production stack
in the wire format `run_under_mocks` records) and must be reported by exactly the expected
policy, at the expected enforcement level, naming the resource and carrying the remediation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from policies.harness import Violation, blocking, evaluate
from policies.rules import by_name
from tests.support.policies import Case, load_case, stack_case_violations, to_recorded

HERE = Path(__file__).parent
CASES = sorted((HERE / "cases").glob("*.yaml"))
BASELINE = yaml.safe_load((HERE / "baseline.yaml").read_text())


def run(case: Case) -> list[Violation]:
    if case.stack:
        return stack_case_violations(case)
    return evaluate(
        case.resources(BASELINE["resources"]),
        case.stack_config(BASELINE["config"]),
        stack=case.environment,
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_baseline_is_clean() -> None:
    found = evaluate(to_recorded(BASELINE["resources"]), BASELINE["config"], stack="prod")
    assert found == [], "\n".join(f"{v.policy}: {v.message}" for v in found)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_raises_its_violation(path: Path) -> None:
    case = load_case(path)
    rule = by_name(case.expect)
    found = run(case)
    assert {v.policy for v in found} == {case.expect, *case.also}, "\n".join(
        f"{v.policy}: {v.message}" for v in found
    )
    hits = [v for v in found if v.policy == case.expect and case.message_contains in v.message]
    assert hits, (
        f"no {case.expect} message contains {case.message_contains!r}: {[v.message for v in found]}"
    )
    for v in hits:
        assert v.enforcement == case.enforcement
        assert v.remediation == rule.remediation
        assert v.resource == "stack" or v.resource.startswith("urn:pulumi:")
    assert bool(blocking(found)) == (case.enforcement == "mandatory")
