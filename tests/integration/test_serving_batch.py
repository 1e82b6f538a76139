"""The document-embeddings example use case through `tandem serve --local` on a real local Ray.

The CLI generates the Serve config and deploys it the way KubeRay does. Under 64 concurrent
requests batches larger than one form, every response is a correct embedding (dimension,
paraphrases closer than unrelated sentences), and Serve runs with the autoscaling config the
use-case file asked for. `tandem serve --stop` ends it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving import builder, local
from vocabulary.usecase import load_use_case

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "stacks" / "usecases" / "document-embeddings.yaml"
(SPEC,) = load_use_case(EXAMPLE).deployments
PAIRS = [
    ("How do I reset my password?", "What are the steps to change my password?"),
    ("The invoice total is wrong.", "My bill shows an incorrect amount."),
    ("When does the store open tomorrow?", "What time do you open tomorrow?"),
    ("My package never arrived.", "I did not receive my delivery."),
]
UNRELATED = "Photosynthesis converts light into chemical energy in plants."


def _tandem(*args: str, timeout: float = 200) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=local.ray_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    state = tmp_path_factory.mktemp("serve-local")
    port = local.free_port()
    try:
        out = _tandem(
            "--local",
            str(EXAMPLE),
            "--port",
            str(port),
            "--num-cpus",
            "4",
            "--timeout",
            "150",
            "--state-dir",
            str(state),
        )
        assert f"http://127.0.0.1:{port}/embed/v1/embeddings" in out
        server = local.LocalServe(**json.loads((state / local.STATE_FILE).read_text()))
        yield server
    finally:
        stopped = _tandem("--stop", "--state-dir", str(state))
    assert "stopped local Serve" in stopped
    assert (
        not Path(f"/proc/{server.pid}").exists()
        or "Z" in Path(f"/proc/{server.pid}/stat").read_text().split()[2]
    )


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
    assert max(sizes) <= SPEC.batching.max_batch_size  # user_config reached the replica


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
    a = SPEC.autoscaling
    assert (auto["min_replicas"], auto["max_replicas"]) == (a.min_replicas, a.max_replicas)
    assert auto["target_ongoing_requests"] == a.target_ongoing_requests
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (
        a.upscale_delay_s,
        a.downscale_delay_s,
    )
    assert cfg["max_ongoing_requests"] == SPEC.admission.max_ongoing_requests
    assert cfg["max_queued_requests"] == SPEC.admission.max_queued_requests
    assert cfg["user_config"] == {
        "max_batch_size": SPEC.batching.max_batch_size,
        "batch_wait_timeout_s": SPEC.batching.batch_wait_timeout_s,
    }


def test_batch_size_metric_is_exported(served) -> None:
    """What the PodMonitor scrapes: Ray's endpoint carries the batch-size histogram."""
    deadline = time.monotonic() + 45
    samples: list[str] = []
    while time.monotonic() < deadline and not samples:
        text = httpx.get(served.metrics, timeout=10).text
        samples = [
            ln for ln in text.splitlines() if ln.startswith("ray_tandem_serve_batch_size_count")
        ]
        time.sleep(1)
    assert samples, "ray_tandem_serve_batch_size not exported"
    assert 'model="all-minilm-l6-v2"' in samples[0]
    assert sum(float(s.rsplit(" ", 1)[1]) for s in samples) >= 1


def test_the_batch_app_receives_the_requests_features_through_the_gateway(served, tmp_path) -> None:
    """A non-LLM model gets its features beside the input: the gateway reads them from the
    online store real Feast materialized into, adds them to the body, and the batch app's model
    call receives them with the texts (and says so in its answer and /stats)."""
    from features.repo import feature_read, inspect
    from tests.support.feast import seeded_customer_care
    from tests.support.gateway_harness import RunningGateway
    from tests.support.redis_server import redis_server
    from vocabulary.features import UseCaseFeatures

    spec = UseCaseFeatures.model_validate(
        {
            "project": "customer_care",
            "service": "support_chat_context",
            "entity": {"name": "customer_id", "from": "header", "field": "X-Customer-Id"},
        }
    )
    read, problems = feature_read(inspect("customer_care"), "document-embeddings", spec)
    assert read is not None, problems
    base = f"{served.endpoint}{builder.route_prefix(SPEC)}"
    before = httpx.get(f"{base}/stats", timeout=10).json()["requests_with_features"]
    with redis_server("the batch app's features") as redis_url:
        seeded_customer_care(tmp_path, redis_url)
        routes = {
            "backends": {"embed": {"url": f"{base}/v1", "model": SPEC.model}},
            "routes": {
                "doc-embed": {
                    "backends": [{"backend": "embed"}],
                    "endpoints": ["embeddings"],
                    "features": read.model_dump(mode="json"),
                }
            },
            "feature_store": {"redis_url": redis_url},
        }
        with RunningGateway(routes) as gw:
            resp = httpx.post(
                f"{gw.url}/v1/embeddings",
                json={"model": "doc-embed", "input": ["refund policy"]},
                headers={"X-Customer-Id": "C1"},
                timeout=60,
            )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert len(answer["data"][0]["embedding"]) == 384
    assert answer["features"] == {
        "plan_tier": "enterprise",
        "tenure_months": 4,
        "open_tickets": 5,
        "last_ticket_hours_ago": 0.5,
    }
    after = httpx.get(f"{base}/stats", timeout=10).json()["requests_with_features"]
    assert after == before + 1
