"""LLM tier: a tiny random Llama served by Ray Serve LLM + vLLM (CPU build) from our Serve config.

Runs in its own environment (tests/llm/setup-env.sh → .venv-llm). Builds the model and tokenizer
in the test, generates the Serve config with the builder, deploys it on a local Ray the way KubeRay
does, and checks the OpenAI endpoints return the requested number of tokens and that vLLM's
metrics are scraped.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from serving import builder, local
from tests.support.serving import build_random_llama
from vocabulary.deployment import ModelDeployment

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_random_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def spec(tiny_model: Path) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "name": "tiny",
            "model": "tiny-llama",
            "source": str(tiny_model),
            "config_json": str(tiny_model / "config.json"),
            "kind": "llm",
            "gpu": "cpu",
            "engine": {
                "max_model_len": 256,
                "max_num_seqs": 4,
                "dtype": "float32",
                "enable_prefix_caching": False,
            },
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        }
    )


@pytest.fixture(scope="module")
def served(spec: ModelDeployment, tmp_path_factory):
    state = tmp_path_factory.mktemp("serve-llm")
    config = builder.serve_config([spec], port=local.free_port())
    started = time.monotonic()
    server = local.start(config, state, num_cpus=8, timeout_s=420)
    print(f"\nServe LLM app RUNNING after {time.monotonic() - started:.0f}s")
    try:
        yield server
    finally:
        local.stop(state)


def test_completions_return_the_requested_tokens(served, spec) -> None:
    url = f"{served.endpoint}{builder.route_prefix(spec)}/v1/completions"
    resp = httpx.post(
        url,
        json={
            "model": spec.model,
            "prompt": "the model serves",
            "max_tokens": 7,
            "ignore_eos": True,
            "temperature": 0,
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == 7
    assert isinstance(body["choices"][0]["text"], str)


def test_chat_completions_return_the_requested_tokens(served, spec) -> None:
    url = f"{served.endpoint}{builder.route_prefix(spec)}/v1/chat/completions"
    resp = httpx.post(
        url,
        json={
            "model": spec.model,
            "max_tokens": 5,
            "ignore_eos": True,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "scale the cluster"},
            ],
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_vllm_metrics_are_scraped(served, spec) -> None:
    """vLLM's engine series reach Ray's Prometheus endpoint (what the PodMonitor scrapes)."""
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(served.metrics, timeout=10).text
        if "vllm" in text and "generation_tokens" in text:
            break
        time.sleep(2)
    lines = [ln for ln in text.splitlines() if "vllm" in ln and not ln.startswith("#")]
    assert any("generation_tokens" in ln for ln in lines), text[-2000:]
    tokens = [float(ln.rsplit(" ", 1)[1]) for ln in lines if "generation_tokens_total" in ln]
    assert sum(tokens) >= 12  # the two requests above


def test_every_golden_llm_config_is_a_valid_llmconfig() -> None:
    """The builder's LLM configs against Serve LLM's own pydantic model (needs pyarrow, vllm)."""
    import yaml
    from ray.serve.llm import LLMConfig

    golden = Path(__file__).resolve().parents[1] / "unit" / "golden"
    configs = [
        cfg
        for path in sorted(golden.glob("serving_llm*.yaml"))
        for app in yaml.safe_load(path.read_text())["applications"]
        for cfg in app["args"]["llm_configs"]
    ]
    assert len(configs) >= 2
    for cfg in configs:
        parsed = LLMConfig(**cfg)
        auto = parsed.deployment_config["autoscaling_config"]
        assert (
            auto["target_ongoing_requests"]
            == cfg["deployment_config"]["autoscaling_config"]["target_ongoing_requests"]
        )
