"""The GPU catalog is complete and consistent; the cost envelope's arithmetic is right."""

from __future__ import annotations

import pytest

from finops.envelope import cost_envelope, pool_cost
from vocabulary.catalog import HOURS_PER_MONTH, load_catalog
from vocabulary.config import parse_config


def test_catalog_covers_the_families_platform_teams_pick_from() -> None:
    families = set(load_catalog().families())
    assert {"g5", "g6", "g6e", "g7e", "p4d", "p4de", "p5", "p5e", "p5en"} <= families


def test_catalog_entries_are_consistent() -> None:
    cat = load_catalog()
    assert cat.region == "us-east-1" and cat.price_date and cat.price_source
    for inst in cat.instances.values():
        assert inst.gpus >= 1 and inst.vcpu >= 4 and inst.usd_per_hour > 0
        assert inst.gpu.memory_gib >= 22
    # Within a family and GPU count, more vCPUs never cost less per node (a typo guard).
    for family in cat.families():
        sizes = [cat.get(n) for n in cat.names() if n.startswith(family + ".")]
        for gpus in {i.gpus for i in sizes}:
            same = sorted((i for i in sizes if i.gpus == gpus), key=lambda i: i.vcpu)
            assert [i.usd_per_hour for i in same] == sorted(i.usd_per_hour for i in same)


@pytest.mark.parametrize(
    "name,gpu,gpus,mem",
    [
        ("g5.xlarge", "A10G", 1, 22.35),
        ("g6.xlarge", "L4", 1, 22.35),
        ("g6e.xlarge", "L40S", 1, 44.7),
        ("p4d.24xlarge", "A100-40GB", 8, 40),
        ("p4de.24xlarge", "A100-80GB", 8, 80),
        ("p5.48xlarge", "H100", 8, 80),
        ("p5en.48xlarge", "H200", 8, 141),
    ],
)
def test_known_instance_facts(name: str, gpu: str, gpus: int, mem: int) -> None:
    inst = load_catalog().get(name)
    assert (inst.gpu.name, inst.gpus, inst.gpu.memory_gib) == (gpu, gpus, mem)
    assert inst.efa == (name.startswith("p") or inst.vcpu >= 32)


def test_unknown_instance_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown GPU instance type 'g9.xlarge'; known: g5.xlarge"):
        load_catalog().get("g9.xlarge")


def test_price_override() -> None:
    cat = load_catalog().with_prices({"g6.xlarge": 0.5})
    assert cat.get("g6.xlarge").usd_per_hour == 0.5
    assert cat.get("g6.2xlarge").usd_per_hour == load_catalog().get("g6.2xlarge").usd_per_hour
    with pytest.raises(KeyError, match="unknown instance types: nope"):
        load_catalog().with_prices({"nope": 1.0})


def test_pool_cost_arithmetic() -> None:
    cfg = parse_config(
        {
            "environment": "staging",
            "gpuPools": [
                {"name": "a", "instanceTypes": ["g6.xlarge"], "minNodes": 1, "maxNodes": 4},
                {
                    "name": "b",
                    "mechanism": "karpenter",
                    "instanceTypes": ["p5.48xlarge", "p4d.24xlarge"],
                    "maxNodes": 2,
                },
            ],
            "budget": {"monthlyUsd": 50000},
        }
    )
    a, b = (pool_cost(p) for p in cfg.gpu_pools)
    assert a.min_monthly_usd == round(0.8048 * 730, 2) == 587.5
    assert a.max_monthly_usd == round(4 * 0.8048 * 730, 2)
    assert b.instance_type == "p5.48xlarge"  # the ceiling uses the dearest type
    assert (b.min_monthly_usd, b.max_monthly_usd) == (0.0, round(2 * 55.04 * HOURS_PER_MONTH, 2))
    env = cost_envelope(cfg)
    others = env.by_component
    assert env.min_monthly_usd == round(
        a.min_monthly_usd + sum(c.min_monthly_usd for c in others), 2
    )
    assert env.max_monthly_usd == round(
        a.max_monthly_usd + b.max_monthly_usd + sum(c.max_monthly_usd for c in others), 2
    )
    assert env.within_budget is False  # 82k > 50k
    assert env.to_dict()["pools"][0]["pool"] == "a"


def test_fit_checks_use_the_memory_cuda_reports_where_measured() -> None:
    """EC2 lists an H200 at 141 GiB; CUDA (and so vLLM's budget) sees 139.8 GiB (tests/gpu)."""
    h200 = load_catalog().get("p5en.48xlarge")
    assert h200.gpu.memory_gib == 141 and h200.gpu_memory_gib == 139.8
    assert load_catalog().get("p5.48xlarge").gpu_memory_gib == 79.18
    assert load_catalog().get("g6.xlarge").gpu_memory_gib == 22.35  # not measured: EC2's figure
