"""`tandem policies`: what each rule does to a stack, as the platform engineer sees it."""

from __future__ import annotations

import json

from policies.rules import ALL_RULES
from tandem.cli import main


def levels(stack: str, capsys) -> dict[str, str]:
    assert main(["policies", "--stack", stack, "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return {p["policy"]: p["enforcement"] for p in out["policies"]}


def test_prod_is_mandatory_dev_is_advisory(capsys) -> None:
    prod, dev = levels("prod", capsys), levels("dev", capsys)
    assert list(prod) == [r.name for r in ALL_RULES]
    assert prod["gpu-pool-taint"] == "mandatory" and dev["gpu-pool-taint"] == "advisory"
    assert prod["serving-pdb"] == "mandatory" and dev["serving-pdb"] == "disabled"


def test_unknown_stack_exits_two(capsys) -> None:
    assert main(["policies", "--stack", "no-such-stack"]) == 2
    assert "no stack" in capsys.readouterr().err
