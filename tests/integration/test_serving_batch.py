"""The `batch` app from a generated Serve config on a real local Ray, deployed the KubeRay way.

64 concurrent requests: batches larger than one form, every response is a correct embedding
(dimension, paraphrases closer than unrelated sentences), and Serve runs with the autoscaling
config the spec asked for.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from serving import builder, local
from serving.testing import embedder

pytestmark = pytest.mark.integration

SPEC = embedder(
    batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
    autoscaling={
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 24,
        "upscale_delay_s": 5,
        "downscale_delay_s": 120,
    },
)
PAIRS = [
    ("How do I reset my password?", "What are the steps to change my password?"),
    ("The invoice total is wrong.", "My bill shows an incorrect amount."),
    ("When does the store open tomorrow?", "What time do you open tomorrow?"),
    ("My package never arrived.", "I did not receive my delivery."),
]
UNRELATED = "Photosynthesis converts light into chemical energy in plants."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    state = tmp_path_factory.mktemp("serve-local")
    config = builder.serve_config([SPEC], port=local.free_port())
    server = local.start(config, state, num_cpus=4, timeout_s=150)
    try:
        yield server
    finally:
        local.stop(state)


async def _embed(client: httpx.AsyncClient, url: str, texts: list[str]) -> dict:
    resp = await client.post(url, json={"model": SPEC.model, "input": texts})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_64_concurrent_requests_batch_and_are_correct(served) -> None:
    url = f"{served.endpoint}{builder.route_prefix(SPEC)}/v1/embeddings"
    texts = [t for pair in PAIRS for t in pair] + [UNRELATED]
    requests = [[texts[i % len(texts)]] for i in range(64)]

    async def load() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(_embed(client, url, r) for r in requests))

    bodies = asyncio.run(load())
    vectors = {}
    for req, body in zip(requests, bodies, strict=True):
        (item,) = body["data"]
        vec = np.asarray(item["embedding"], dtype=np.float32)
        assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-3
        assert body["usage"]["prompt_tokens"] > 0 and body["model"] == SPEC.model
        vectors[req[0]] = vec
    unrelated = vectors[UNRELATED]
    for a, b in PAIRS:
        assert vectors[a] @ vectors[b] > vectors[a] @ unrelated + 0.2, (a, b)

    stats = httpx.get(f"{served.endpoint}{builder.route_prefix(SPEC)}/stats").json()
    sizes = {int(k): v for k, v in stats["batch_sizes"].items()}
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert max(sizes) <= 16  # the user_config's max_batch_size reached the replica


def test_list_input_and_errors(served) -> None:
    url = f"{served.endpoint}{builder.route_prefix(SPEC)}/v1/embeddings"
    body = httpx.post(url, json={"input": ["one", "two", "three"]}, timeout=30).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert httpx.post(url, json={"input": []}, timeout=30).status_code == 400
    assert httpx.post(url, json={"model": "other", "input": "x"}, timeout=30).status_code == 404


def test_autoscaling_config_is_what_the_spec_said(served) -> None:
    apps = local.applications(served.dashboard)["applications"]
    deployment = apps[SPEC.name]["deployments"][builder.BATCH_DEPLOYMENT]
    cfg = deployment["deployment_config"]
    auto = cfg["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 2)
    assert auto["target_ongoing_requests"] == 24
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (5, 120)
    assert cfg["max_ongoing_requests"] == SPEC.max_ongoing_requests
    assert cfg["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}
