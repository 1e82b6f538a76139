"""Plan-time checks: each with a passing and a failing case, and the numbers in the message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gpu_pools import fit
from serving.checks import resolve_contract, run_checks, upgrade_surge
from tests.support.serving import contract, embedder, llm
from vocabulary.deployment import ModelDeployment
from vocabulary.usecase import UseCaseSpec


def use_case(*deployments: ModelDeployment, **extra: object) -> UseCaseSpec:
    return UseCaseSpec.model_validate(
        {"name": "uc", "team": "t", "pool": "p", "deployments": list(deployments), **extra}
    )


def by_check(results: list, name: str):
    (hit,) = [r for r in results if r.check == name]
    return hit


def test_8b_on_l4_fits_at_8k_and_not_at_128k() -> None:
    pool = contract("g6.xlarge")
    ok = by_check(run_checks(use_case(llm()), pool), "memory_fit")
    assert ok.ok, ok.message
    bad = by_check(
        run_checks(use_case(llm(engine={"max_model_len": 131072, "max_num_seqs": 1})), pool),
        "memory_fit",
    )
    assert not bad.ok
    # The message carries the numbers a user acts on.
    assert "weights 15.0 GiB" in bad.message and "131072 tokens x 1 seqs" in bad.message
    assert (
        "1 x 22.35 GiB x 0.9 = 20.1 GiB" in bad.message and "max_model_len <= 33790" in bad.message
    )


def test_70b_tp4_on_p4d_fits_and_tp2_on_l40s_does_not() -> None:
    big = {"model": "llama-3.3-70b", "source": "meta-llama/Llama-3.3-70B-Instruct"}
    fits = llm(gpu="A100", engine={"tensor_parallel_size": 4, "max_model_len": 4096}, **big)
    results = run_checks(use_case(fits), contract("p4d.24xlarge"))
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    assert "4 x 40 GiB" in by_check(results, "memory_fit").message
    fails = llm(gpu="L40S", engine={"tensor_parallel_size": 2, "max_model_len": 4096}, **big)
    bad = by_check(run_checks(use_case(fails), contract("g6e.12xlarge")), "memory_fit")
    assert not bad.ok and "weights 131.5 GiB" in bad.message
    assert "vs 2 x 44.7 GiB x 0.9 = 80.5 GiB; the weights alone exceed" in bad.message


def test_fp8_kv_cache_halves_kv_bytes() -> None:
    size = fit.lookup("meta-llama/Llama-3.1-8B-Instruct")
    assert size is not None
    kw = dict(
        gpus=1, gpu_memory_gib=22.5, gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=8
    )
    assert fit.fit(size, **kw, kv_cache_dtype="fp8").kv_gib == pytest.approx(
        fit.fit(size, **kw).kv_gib / 2
    )
    assert fit.fit(size, **kw, quantization="awq").weights_gib < 5


def test_config_json_sizes_an_unknown_model(tmp_path) -> None:
    cfg = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    size = fit.size_from_config(path)
    assert size.params == pytest.approx(8.03e9, rel=0.01)  # Llama-3.1-8B's published count
    unknown = llm(model="acme-chat", source="s3://models/acme-chat", config_json=str(path))
    assert by_check(run_checks(use_case(unknown), contract("g6.xlarge")), "memory_fit").ok
    nothing = llm(model="acme-chat", source="s3://models/acme-chat")
    miss = by_check(run_checks(use_case(nothing), contract("g6.xlarge")), "memory_fit")
    assert not miss.ok and "config_json" in miss.message


def test_gpus_per_replica_must_fit_a_node_and_divide_heads() -> None:
    results = run_checks(use_case(llm(engine={"tensor_parallel_size": 4})), contract("g6.12xlarge"))
    check = by_check(results, "gpus_per_replica")
    assert check.ok and "worker nvidia.com/gpu limit 4" in check.message
    too_many = llm(engine={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    bad = by_check(run_checks(use_case(too_many), contract("g6.xlarge")), "gpus_per_replica")
    assert not bad.ok and "Pending" in bad.message
    odd = llm(gpu="A100", engine={"tensor_parallel_size": 3})
    bad = by_check(run_checks(use_case(odd), contract("p4d.24xlarge")), "gpus_per_replica")
    assert not bad.ok and "not divisible by TP 3" in bad.message


def test_gpu_class_must_match_the_pool() -> None:
    bad = by_check(run_checks(use_case(llm(gpu="H100")), contract("g6.xlarge")), "gpu_class")
    assert not bad.ok and "runs L4" in bad.message
    assert by_check(
        run_checks(
            use_case(llm(gpu="A100-40GB", engine={"tensor_parallel_size": 2})),
            contract("p4d.24xlarge"),
        ),
        "gpu_class",
    ).ok


def test_admission_at_least_max_num_seqs() -> None:
    ok = by_check(run_checks(use_case(llm()), contract("g6.xlarge")), "admission")
    assert ok.ok and "max_ongoing_requests 8 vs max_num_seqs 4" in ok.message
    low = llm(admission={"max_ongoing_requests": 2})
    bad = by_check(run_checks(use_case(low), contract("g6.xlarge")), "admission")
    assert not bad.ok and "cap the engine at 2" in bad.message
    batch = embedder(admission={"max_ongoing_requests": 4})
    assert not by_check(run_checks(use_case(batch), None), "admission").ok


def test_lora_limits() -> None:
    good = llm(
        lora={
            "adapters": [{"name": "tone", "source": "s3://a/tone", "rank": 16}],
            "dynamic_loading_path": "s3://a",
            "max_loras": 2,
        }
    )
    assert by_check(run_checks(use_case(good), contract("g6.xlarge")), "lora").ok
    bad = llm(
        lora={
            "adapters": [{"name": "tone", "source": "s3://a/tone", "rank": 64}],
            "max_loras": 8,
            "max_lora_rank": 32,
        }
    )
    check = by_check(run_checks(use_case(bad), contract("g6.xlarge")), "lora")
    assert not check.ok
    assert (
        "max_loras 8 > max_num_seqs 4" in check.message
        and "rank 64 > max_lora_rank 32" in check.message
    )
    assert "dynamic_loading_path" in check.message


def test_pool_capacity_and_surge() -> None:
    uc = use_case(llm(autoscaling={"min_replicas": 1, "max_replicas": 2}))
    pool = contract("g6.xlarge", max_nodes=4)
    assert by_check(run_checks(uc, pool), "pool_capacity").ok
    surge = upgrade_surge(uc, pool)
    assert (surge.gpus, surge.nodes, surge.fits_in_pool) == (2, 2, True)
    assert surge.hourly_usd == pytest.approx(2 * 0.8048)  # two g6.xlarge nodes
    tight = upgrade_surge(uc, contract("g6.xlarge", max_nodes=3))
    assert not tight.fits_in_pool and "pool max 3" in tight.message
    incremental = use_case(
        llm(autoscaling={"min_replicas": 1, "max_replicas": 4}),
        upgrade={"strategy": "NewClusterWithIncrementalUpgrade", "max_surge_percent": 25},
    )
    inc = upgrade_surge(incremental, contract("g6.xlarge", max_nodes=5))
    assert (inc.gpus, inc.fits_in_pool) == (1, True)
    assert set(inc.to_dict()) >= {"use_case", "gpus", "hourly_usd", "fits_in_pool"}
    over = use_case(llm(autoscaling={"min_replicas": 1, "max_replicas": 9}))
    assert not by_check(run_checks(over, pool), "pool_capacity").ok


def test_cpu_only_use_case_needs_no_pool() -> None:
    results = run_checks(use_case(embedder()), None)
    assert results and all(r.ok for r in results)
    assert upgrade_surge(use_case(embedder()), None).gpus == 0
    assert set(results[0].to_dict()) >= {"use_case", "check", "ok", "message"}


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"engine": {"max_num_seq": 4}}, "engine.max_num_seq"),
        (
            {"autoscaling": {"min_replicas": 3, "max_replicas": 1}},
            "min_replicas (3) > max_replicas (1)",
        ),
        ({"name": "Chat_Bot"}, "lowercase"),
        ({"kind": "embed"}, "kind"),
        ({"engine": {"gpu_memory_utilization": 1.5}}, "gpu_memory_utilization"),
        ({"lora": {"max_lora_rank": 12}}, "max_lora_rank 12"),
        ({"gpu": "cpu", "engine": {"tensor_parallel_size": 2}}, "needs a GPU class"),
        ({"gpu": "B300"}, "not in the GPU catalog"),
        # settings that would do nothing for the kind or the hardware
        ({"batching": {"max_batch_size": 8}}, "batching applies to kind 'batch'"),
        (
            {"kind": "batch", "engine": {"max_num_seqs": 8, "dtype": "float16"}},
            "engine.max_num_seqs: vLLM settings do nothing for kind 'batch'",
        ),
        (
            {"gpu": "cpu", "engine": {"gpu_memory_utilization": 0.8}},
            "engine.gpu_memory_utilization does nothing on 'cpu'",
        ),
    ],
)
def test_spec_errors_name_the_field(patch: dict, needle: str) -> None:
    data = {"name": "chat", "model": "m", "source": "org/m", "gpu": "L4"} | patch
    with pytest.raises(ValidationError) as err:
        ModelDeployment.model_validate(data)
    assert needle in str(err.value)


def test_use_case_refuses_a_budget_nothing_would_enforce() -> None:
    with pytest.raises(ValidationError, match="gateway.budget"):
        use_case(embedder(), budget={"usd": 500})


def test_use_case_rejects_duplicate_deployments() -> None:
    with pytest.raises(ValidationError, match="unique"):
        use_case(embedder(), embedder())


def test_resolve_contract_by_name_then_by_gpu_model() -> None:
    l4, l40s = contract("g6.2xlarge", pool="l4-spot"), contract("g6e.xlarge", pool="l40s")
    uc = use_case(llm())  # pool "p", gpu L4
    assert resolve_contract(uc, {"l4-spot": l4, "l40s": l40s}) is l4
    assert resolve_contract(uc.model_copy(update={"pool": "l40s"}), {"l40s": l40s}) is l40s
    assert resolve_contract(uc, {"l40s": l40s}) is None
    assert resolve_contract(use_case(embedder()), {"l4-spot": l4}) is None


def test_checks_and_surge_cover_both_examples_on_the_dev_pool() -> None:
    from vocabulary.usecase import load_use_case

    usecases = Path(__file__).resolve().parents[2] / "stacks" / "usecases"
    ucs = [
        load_use_case(usecases / f) for f in ("support-chatbot.yaml", "document-embeddings.yaml")
    ]
    pool = contract("g6.xlarge", max_nodes=4)  # 2 replicas, and 2 more while a canary runs
    checks = [
        r.to_dict() for uc in ucs for r in run_checks(uc, resolve_contract(uc, {"l4-spot": pool}))
    ]
    surges = [upgrade_surge(uc, pool).to_dict() for uc in ucs if uc.gpu_deployments]
    assert checks and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    assert {c["use_case"] for c in checks} == {"support-chatbot", "document-embeddings"}
    (surge,) = surges  # the CPU-only use case has none
    assert surge["use_case"] == "support-chatbot" and surge["fits_in_pool"] is False
    capacity = next(c for c in checks if c["check"] == "pool_capacity")
    assert "4 GPUs on 4 g6.xlarge" in capacity["message"] and "canary" in capacity["message"]
    small = contract("g6.xlarge", max_nodes=3)
    (failed,) = [r for r in run_checks(ucs[0], small) if not r.ok]
    assert failed.check == "pool_capacity"  # 2 stable + 2 canary replicas do not fit 3 nodes


def test_overhead_is_the_cuda_context_plus_one_prefill_step() -> None:
    """Activations of vLLM's largest prefill step (its default grows with the GPU) come out of
    the KV cache's room: on an L4 an 8B model's 8,192-token step costs 1.1 GiB more than 2,048."""
    size = fit.size_by_name("llama-3.1-8b")
    kw = dict(gpus=1, gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=8)
    l4 = fit.fit(size, gpu_memory_gib=22.35, gpu_model="L4", **kw).overhead_gib
    assert l4 == pytest.approx(fit.overhead_gib_per_gpu(size, 2048))
    big_step = fit.fit(size, gpu_memory_gib=22.35, max_num_batched_tokens=8192, **kw)
    assert big_step.overhead_gib - l4 == pytest.approx(1.25 * 6144 * 118784 / fit.GIB)
    assert fit.default_batched_tokens(79.6, "H100") == 8192
    assert fit.default_batched_tokens(80, "A100-80GB") == 2048  # vLLM keeps A100s at 2,048
    assert fit.default_batched_tokens(180, "B200") == 16384
    tp2 = fit.fit(size, gpu_memory_gib=22.35, tensor_parallel=2, **dict(kw, gpus=2))
    assert tp2.overhead_gib < 2 * l4  # the MLP's activations split across the shards
    one_token = fit.fit(size, gpu_memory_gib=22.35, **dict(kw, max_model_len=1, max_num_seqs=1))
    assert one_token.overhead_gib == pytest.approx(fit.CUDA_CONTEXT_GIB, abs=0.01)


# --- issue 21: checks that looked at one use case, settings beyond the model, unknown values ----


def test_two_use_cases_that_each_fit_a_shared_pool_but_not_together() -> None:
    from dataclasses import replace

    from serving.checks import SHARED_POOLS, shared_pool_checks

    pool = replace(contract("g6.2xlarge", max_nodes=5, pool="l4"))
    a = UseCaseSpec.model_validate(
        {"name": "a", "team": "t", "pool": "l4", "deployments": [llm(name="chat")]}
    )
    b = UseCaseSpec.model_validate(
        {"name": "b", "team": "t", "pool": "l4", "deployments": [llm(name="summ")]}
    )
    # each alone: 2 nodes at peak + 2 surge = 4 <= 5
    assert by_check(run_checks(a, pool), "pool_capacity").ok
    assert upgrade_surge(a, pool).fits_in_pool
    (shared,) = shared_pool_checks([a, b], {"l4": pool})
    assert shared.use_case == SHARED_POOLS and not shared.ok
    assert "a 2 + b 2 node(s) at peak + 2 for the largest upgrade surge = 6 vs max_nodes 5" in (
        shared.message
    )
    (roomy,) = shared_pool_checks([a, b], {"l4": replace(pool, max_nodes=6)})
    assert roomy.ok


def test_max_model_len_beyond_the_models_context_fails() -> None:
    pool = contract("p5.48xlarge")
    long = llm(
        gpu="H100",
        model="llama-2-13b",
        source="meta-llama/Llama-2-13b-chat-hf",
        engine={"max_model_len": 8192},
    )
    bad = by_check(run_checks(use_case(long), pool), "context_length")
    assert not bad.ok and "llama-2-13b's context 4096" in bad.message
    assert "max_model_len <= 4096" in bad.message
    ok = by_check(run_checks(use_case(llm(gpu="H100")), pool), "context_length")
    assert ok.ok


def test_an_unknown_size_is_a_failed_check_naming_the_field() -> None:
    results = run_checks(use_case(llm(size="llama-9b")), contract("g6.xlarge"))
    bad = by_check(results, "memory_fit")
    assert not bad.ok and "chat: size: size 'llama-9b' is not an architecture" in bad.message
    assert "llama-3.1-8b" in bad.message  # the allowed values


def test_weights_that_do_not_fit_the_nodes_disk_fail() -> None:
    from dataclasses import replace

    big = llm(
        gpu="H100",
        model="llama-3.1-70b",
        source="s3://models/llama-3.1-70b",
        engine={"tensor_parallel_size": 8, "max_model_len": 4096},
    )
    small_disk = replace(contract("p5.48xlarge"), disk_gib=200)
    bad = by_check(run_checks(use_case(big), small_disk), "worker_fits_node")
    assert not bad.ok and "raise the pool's rootVolumeGib to at least" in bad.message
    roomy = replace(contract("p5.48xlarge"), disk_gib=1000)
    assert by_check(run_checks(use_case(big), roomy), "worker_fits_node").ok


def test_incremental_upgrade_options_need_the_incremental_strategy() -> None:
    with pytest.raises(ValidationError, match="max_surge_percent apply only to strategy"):
        use_case(llm(), upgrade={"strategy": "NewCluster", "max_surge_percent": 50})
    ok = use_case(
        llm(), upgrade={"strategy": "NewClusterWithIncrementalUpgrade", "max_surge_percent": 50}
    )
    assert ok.upgrade.max_surge_percent == 50
