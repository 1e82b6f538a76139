"""The gateway's drift side against a real upstream on loopback: a monitored route samples its
answers into the signal log the drift service reads (`GET /drift/signals`), with the prompt
embedding the semantic cache already computed (one encoding per question, not two), and rates
answers through `POST /v1/feedback`; an unmonitored route samples nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration
QUESTIONS = ["How do I reset my password?", "Where is my card?", "Can I change my PIN online?"]


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    upstream = Upstream("a")
    with ServerThread(upstream.app) as server:
        cfg = {
            "backends": {"a": {"url": server.url + "/v1", "labels": {"model_version": "7"}}},
            "routes": {
                "chat": {
                    "backends": [{"backend": "a"}],
                    "use_case": "support",
                    "monitoring": {"sample_rate": 1.0},
                },
                "plain": {"backends": [{"backend": "a"}], "use_case": "other"},
            },
            "cache": {"mode": "semantic", "decision": "threshold", "threshold": 0.99},
        }
        with RunningGateway(cfg) as g:
            yield g


def ask(url: str, model: str, question: str) -> httpx.Response:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": question}]}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=20)


def signals(url: str, after: int = 0) -> dict:
    return httpx.get(f"{url}/drift/signals?after={after}", timeout=10).json()


def test_a_monitored_route_samples_its_answers_with_the_cache_s_embedding(gw) -> None:
    before = signals(gw.url)["last"]
    encoder = gw.gateway.cache._embedder  # type: ignore[attr-defined]
    batches = encoder.batches
    for q in QUESTIONS:
        assert ask(gw.url, "chat", q).status_code == 200
    ask(gw.url, "plain", "an unmonitored question")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(signals(gw.url, before)["events"]) < 3:
        time.sleep(0.1)
    page = signals(gw.url, before)
    events = page["events"]
    assert [e["use_case"] for e in events] == ["support"] * 3  # the plain route: nothing
    for e in events:
        assert e["model_version"] == "7" and e["arm"] == "stable" and e["kind"] == "answer"
        assert len(e["embedding"]) == 384 and e["prompt_tokens"] > 0
        assert e["finish_reason"] and e["outcome"] in ("answer", "empty", "refusal")
        assert not any(q in str(e) for q in QUESTIONS)  # no prompt text
    # the cache encoded each question once (the stores reuse it) and drift added no encoding
    assert encoder.batches - batches <= len(QUESTIONS) + 1
    assert gw.metric("tandem_gateway_drift_samples_total", use_case="support") >= 3


def test_feedback_is_attributed_counted_and_logged(gw) -> None:
    answer = ask(gw.url, "chat", "What is the exchange rate fee?").json()
    rid = answer["id"]
    r = httpx.post(gw.url + "/v1/feedback", json={"response_id": rid, "rating": "down"})
    assert r.status_code == 200 and r.json()["recorded"]
    assert (
        gw.metric(
            "tandem_gateway_feedback_total", use_case="support", model_version="7", rating="down"
        )
        == 1
    )
    logged = [e for e in signals(gw.url)["events"] if e["kind"] == "feedback"]
    assert logged[-1]["response_id"] == rid and logged[-1]["rating"] == "down"
    unknown = httpx.post(gw.url + "/v1/feedback", json={"response_id": "nope", "rating": "up"})
    assert unknown.status_code == 404 and "response_id" in unknown.text
    bad = httpx.post(gw.url + "/v1/feedback", json={"response_id": rid, "rating": "meh"})
    assert bad.status_code == 400 and "allowed: up, down" in bad.text


def test_the_drift_evidence_names_the_nearest_cached_questions(gw) -> None:
    cache = gw.gateway.cache
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(cache.local) < len(QUESTIONS):  # stores: background
        time.sleep(0.1)
    sample = next(e for e in signals(gw.url)["events"] if e.get("embedding"))
    body = {"use_case": "support", "vectors": [sample["embedding"]], "k": 2}
    (near,) = httpx.post(gw.url + "/drift/nearest", json=body, timeout=10).json()["nearest"]
    assert near[0]["question"] == QUESTIONS[0] and near[0]["similarity"] > 0.99
    other = {**body, "use_case": "other"}  # another use case's route: only its own questions
    (theirs,) = httpx.post(gw.url + "/drift/nearest", json=other, timeout=10).json()["nearest"]
    assert [q["question"] for q in theirs] == ["an unmonitored question"]
