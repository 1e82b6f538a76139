"""`tandem plan`: JSON for machines, a tree and cost table for people, exit codes for CI."""

from __future__ import annotations

import json

import pytest

import tandem.stack
from tandem.cli import main


@pytest.fixture(scope="module")
def prod_plan_json() -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plan", "--stack", "prod", "--output", "json"])
    assert code == 0
    return json.loads(out.getvalue())


def test_plan_json_lists_every_resource_with_type(prod_plan_json, stack_resources) -> None:
    resources = prod_plan_json["resources"]
    assert len(resources) == len(stack_resources["prod"])
    assert all({"type", "name", "parent"} <= set(r) for r in resources)
    types = {r["type"] for r in resources}
    assert {"aws:eks/nodeGroup:NodeGroup", "kubernetes:karpenter.sh/v1:NodePool"} <= types


def test_plan_json_is_byte_identical_across_runs(prod_plan_json) -> None:
    """Two processes with different hash seeds (set order, and with it the order in which
    `.apply` callbacks register resources, differs): the same bytes, so a plan diff in review
    shows only what changed."""
    import os
    import subprocess
    import sys

    def plan(seed: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        cmd = [sys.executable, "-m", "tandem.cli", "plan", "--stack", "prod", "--output", "json"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    runs = [plan("1"), plan("2")]  # side by side
    outs = [r.communicate(timeout=240) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs[0][1][-2000:]
    assert outs[0][0] == outs[1][0]
    assert json.loads(outs[0][0]) == prod_plan_json  # and the same as in this process


def test_plan_json_lists_parents_before_children_siblings_by_urn(prod_plan_json) -> None:
    seen: set[str] = set()
    recorded = {r["urn"] for r in prod_plan_json["resources"]}  # the stack itself is not
    siblings: dict[str | None, list[str]] = {}
    for r in prod_plan_json["resources"]:
        assert r["parent"] not in recorded or r["parent"] in seen, r["urn"]
        seen.add(r["urn"])
        siblings.setdefault(r["parent"], []).append(r["urn"])
    assert all(urns == sorted(urns) for urns in siblings.values())


def test_plan_json_cost_envelope_per_pool(prod_plan_json) -> None:
    cost = prod_plan_json["cost"]
    pools = {p["pool"]: p for p in cost["pools"]}
    assert set(pools) == {"l4-serving", "l4-overflow", "l40s-serving", "h100-training"}
    for p in pools.values():
        assert {"pool", "instance_type", "min_monthly_usd", "max_monthly_usd"} <= set(p)
    assert pools["h100-training"]["max_monthly_usd"] == round(2 * 55.04 * 730, 2)
    # everything else the stack bills, by component; the totals cover pools and components
    components = {c["component"]: c for c in cost["by_component"]}
    assert {
        "eks-control-plane",
        "system-nodes",
        "nat-gateways",
        "gpu-node-volumes",
        "elasticache-gateway",
        "elasticache-ray-gcs",
        "ecr-images",
        "prometheus-volume",
    } <= set(components)
    for c in components.values():
        assert {"component", "min_monthly_usd", "max_monthly_usd"} <= set(c)
        assert 0 <= c["min_monthly_usd"] <= c["max_monthly_usd"]
    assert components["eks-control-plane"]["max_monthly_usd"] == round(0.10 * 730, 2)
    assert components["nat-gateways"]["min_monthly_usd"] == round(3 * (0.045 + 0.005) * 730, 2)
    assert cost["max_monthly_usd"] == round(
        sum(p["max_monthly_usd"] for p in pools.values())
        + sum(c["max_monthly_usd"] for c in components.values()),
        2,
    )
    assert cost["within_budget"] is True
    assert prod_plan_json["ok"] is True
    assert prod_plan_json["violations"] == [] or all(
        v["enforcement"] != "mandatory" for v in prod_plan_json["violations"]
    )


def test_plan_table_shows_tree_and_cost(capsys) -> None:
    assert main(["plan", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "stack dev" in out and "pool-l4-spot" in out
    assert "GPU cost envelope" in out and "l4-spot" in out and "$5,709" in out
    assert "Everything else the stack bills" in out and "eks-control-plane" in out
    assert "nat-gateways" in out and "stack total" in out
    assert "within budget" in out


def test_plan_bad_config_exits_2_naming_the_field(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n  tandem:environment: dev\n  tandem:gpuPools:\n"
        "    - {name: x, instanceTypes: [g6.xlarge], minNodes: 3, maxNodes: 1}\n"
    )
    monkeypatch.setattr(tandem.stack, "STACKS_DIR", tmp_path)
    assert main(["plan", "--stack", "broken"]) == 2
    err = capsys.readouterr().err
    assert "gpuPools[0]" in err and "minNodes (3) must be <= maxNodes (1)" in err
    assert main(["plan", "--stack", "broken", "--output", "json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and "gpuPools[0]" in payload["config_errors"][0]


def test_plan_unknown_stack_exits_2(capsys) -> None:
    assert main(["plan", "--stack", "nope"]) == 2
    assert "no stack 'nope'; stacks: dev, prod" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["stack-prod-budget-cut", "stack-prod-serving-on-spot"])
def test_plan_fails_on_a_corpus_case_naming_rule_resource_remediation(
    case: str, tmp_path, monkeypatch, capsys
) -> None:
    """A bad config from the policy corpus, written as a stack file, fails `tandem plan`."""
    import shutil

    import yaml

    from tests.support.policies import deep_merge, load_case

    spec = load_case(tandem.stack.REPO_ROOT / "tests/policy_cases/cases" / f"{case}.yaml")
    flat = deep_merge(tandem.stack.read_stack_file("prod"), spec.stack_patch)
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": flat}))
    shutil.copytree(tandem.stack.STACKS_DIR / "usecases", tmp_path / "usecases")
    monkeypatch.setattr(tandem.stack, "STACKS_DIR", tmp_path)

    assert main(["plan", "--stack", "prod", "--output", "json"]) == 1
    plan = json.loads(capsys.readouterr().out)
    assert plan["ok"] is False
    hits = [v for v in plan["violations"] if v["policy"] == spec.expect]
    assert hits and all(v["enforcement"] == "mandatory" for v in hits)
    assert all(v["resource"] and v["remediation"] for v in hits)

    assert main(["plan", "--stack", "prod"]) == 1
    out = capsys.readouterr().out
    assert spec.expect in out and "mandatory" in out and "FAILED" in out


def test_plan_passes_a_waived_violation_and_still_shows_it(tmp_path, monkeypatch, capsys) -> None:
    """A waiver turns a failing plan green, but the plan lists what it hides and why."""
    import shutil

    import yaml

    from tests.support.policies import deep_merge, load_case

    spec = load_case(tandem.stack.REPO_ROOT / "tests/policy_cases/cases/stack-prod-budget-cut.yaml")
    flat = deep_merge(tandem.stack.read_stack_file("prod"), spec.stack_patch)
    reason = "Q4 launch capacity, approved by FinOps (FIN-42)"
    waivers = [{"policy": spec.expect, "reason": reason}]
    flat = deep_merge(flat, {"tandem:policies": {"waivers": waivers}})
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": flat}))
    shutil.copytree(tandem.stack.STACKS_DIR / "usecases", tmp_path / "usecases")
    monkeypatch.setattr(tandem.stack, "STACKS_DIR", tmp_path)

    assert main(["plan", "--stack", "prod", "--output", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not [v for v in plan["violations"] if v["policy"] == spec.expect]
    hidden = [v for v in plan["waived"] if v["policy"] == spec.expect]
    assert hidden and all(v["waiver"] == reason and v["enforcement"] == "mandatory" for v in hidden)

    assert main(["plan", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert "Waived" in out and "FIN-42" in out


def test_plan_fails_with_the_numbers_when_a_model_does_not_fit(tmp_path, monkeypatch, capsys):
    """The chatbot asked for 128k-token context on an L4: the plan refuses it, with the numbers,
    and does not run the program."""
    import yaml

    use_case = yaml.safe_load(
        (tandem.stack.REPO_ROOT / "stacks/usecases/support-chatbot.yaml").read_text()
    )
    use_case["deployments"][0]["engine"]["max_model_len"] = 131072
    (tmp_path / "chatbot-128k.yaml").write_text(yaml.safe_dump(use_case))
    flat = tandem.stack.read_stack_file("dev")
    flat["tandem:useCases"] = [str(tmp_path / "chatbot-128k.yaml")]
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": flat}))
    monkeypatch.setattr(tandem.stack, "STACKS_DIR", tmp_path)

    assert main(["plan", "--stack", "dev", "--output", "json"]) == 1
    plan = json.loads(capsys.readouterr().out)
    failed = [c for c in plan["checks"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["memory_fit"]
    assert "131072 tokens" in failed[0]["message"] and "GiB" in failed[0]["message"]
    assert plan["resources"] == []  # the program, which would refuse it too, was not run
