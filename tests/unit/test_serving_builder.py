"""Serve-config builder: golden files for both kinds, and the config Ray itself accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from serving import builder
from tests.support.serving import contract, embedder, llm

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TANDEM_UPDATE_GOLDEN") == "1"


def chatbot():
    return llm(
        lora={
            "adapters": [{"name": "tone", "source": "s3://adapters/tone", "rank": 16}],
            "dynamic_loading_path": "s3://adapters",
            "max_loras": 2,
        },
        engine={
            "max_model_len": 8192,
            "max_num_seqs": 4,
            "kv_cache_dtype": "fp8",
            "max_num_batched_tokens": 4096,
        },
        slo={"ttft_p95_ms": 800, "itl_p95_ms": 60},
    )


CASES = {
    "serving_llm.yaml": lambda: builder.serve_config([chatbot()]),
    "serving_batch.yaml": lambda: builder.serve_config([embedder()]),
    "serving_llm_cpu_s3.yaml": lambda: builder.serve_config(
        [
            llm(
                gpu="cpu",
                source="s3://models/llama-3.2-1b",
                model="llama-3.2-1b",
                autoscaling={"min_replicas": 0, "max_replicas": 2, "initial_replicas": 1},
            )
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    text = builder.to_yaml(CASES[name]())
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"missing golden {path}: rerun with TANDEM_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed: review, then TANDEM_UPDATE_GOLDEN=1"


def test_llm_goes_through_serve_llm_and_autoscales_from_max_num_seqs() -> None:
    (app,) = builder.serve_config([llm(engine={"max_num_seqs": 32})])["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (cfg,) = app["args"]["llm_configs"]
    dep = cfg["deployment_config"]
    # Serve LLM's own default never scales out; ours scales at 80% of the engine's batch.
    assert dep["autoscaling_config"]["target_ongoing_requests"] == 25
    assert dep["max_ongoing_requests"] >= cfg["engine_kwargs"]["max_num_seqs"] == 32
    assert "serve.batch" not in str(app)


def test_batch_app_carries_batching_in_user_config() -> None:
    (app,) = builder.serve_config([embedder()])["applications"]
    (dep,) = app["deployments"]
    assert app["import_path"] == "serving.batch_app:build_app"
    assert dep["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}
    assert dep["autoscaling_config"]["max_replicas"] == 3


def test_ray_accepts_the_config() -> None:
    """Ray's own schema for `serve deploy` / serveConfigV2 (ray is in the serving extra)."""
    from ray.serve.schema import ServeDeploySchema

    for make in CASES.values():
        ServeDeploySchema.model_validate(make())


def test_worker_shape_follows_the_pool() -> None:
    shape = builder.worker_shape(
        llm(gpu="L40S", engine={"tensor_parallel_size": 2}), contract("g6e.12xlarge")
    )
    assert (shape.gpus, shape.cpus, shape.memory_gib, shape.shm_gib) == (2, 23.0, 172.0, 51.0)
    cpu = builder.worker_shape(embedder(), None)
    assert (cpu.gpus, cpu.on_gpu_pool) == (0, False)


def test_yaml_round_trips() -> None:
    cfg = builder.serve_config([chatbot(), embedder()])
    assert yaml.safe_load(builder.to_yaml(cfg)) == cfg
