"""docs/policies.md documents every rule the pack ships (name, why, remediation)."""

from __future__ import annotations

from pathlib import Path

from policies.rules import ALL_RULES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()


def test_every_rule_is_documented_with_its_remediation() -> None:
    missing = [r.name for r in ALL_RULES if f"`{r.name}`" not in DOC or r.remediation not in DOC]
    assert not missing, f"add these rules to docs/policies.md: {missing}"
