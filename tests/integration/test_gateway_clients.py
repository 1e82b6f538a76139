"""Real clients pointed at the gateway: the openai SDK, LangChain, and schemathesis on the OpenAPI doc."""

from __future__ import annotations

import copy

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from gateway.config import hash_key
from gateway.openapi import openapi_document
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration
KEY = "sk-client-test"
KEY_RPM1 = "sk-one-per-minute"


@pytest.fixture(scope="module")
def stack():
    up = Upstream("a")
    with ServerThread(up.app) as server:
        cfg = {
            "backends": {
                "a": {"url": server.url + "/v1"},
                "dead": {"url": "http://127.0.0.1:9/v1"},
            },
            "routes": {
                "chat": {"backends": [{"backend": "a"}]},
                "limited": {"backends": [{"backend": "a"}]},
                "down": {"backends": [{"backend": "dead"}], "retries": {"attempts": 0}},
            },
            "keys": [
                {"id": "k", "team": "t", "sha256": hash_key(KEY), "models": ["chat", "down"]},
                {"id": "k1", "team": "t", "sha256": hash_key(KEY_RPM1), "rpm": 1},
            ],
        }
        with RunningGateway(cfg) as gw:
            yield up, gw


def test_openai_sdk_sync_streaming_embeddings(stack) -> None:
    up, gw = stack
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content.startswith("a:") and r.usage.completion_tokens == 4
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "tok0 tok1 tok2 tok3 "
    )
    e = client.embeddings.create(model="chat", input=["a", "b"])
    assert len(e.data) == 2 and e.data[0].embedding == [0.1, 0.2, 0.3, 0.4]
    c = client.completions.create(model="chat", prompt="once upon")
    assert c.choices[0].text == "a completion"
    assert [m.id for m in client.models.list()] == ["chat", "down"]


def test_openai_sdk_error_classes(stack) -> None:
    up, gw = stack
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="limited", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chat", messages=[])
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    assert down.value.status_code == 502
    up.set(status=429, retry_after="0")
    try:
        with pytest.raises(openai.InternalServerError) as limited:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
        assert limited.value.status_code == 503
    finally:
        up.set()


def test_openai_sdk_retrieves_a_model_and_gets_openai_errors_for_api_edges(stack) -> None:
    up, gw = stack
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    m = client.models.retrieve("chat")
    assert (m.id, m.object, m.owned_by) == ("chat", "model", "tandem")
    for hidden in ("gpt-9", "limited"):  # unknown, and not allowed for this key: both "not found"
        with pytest.raises(openai.NotFoundError) as nf:
            client.models.retrieve(hidden)
        assert nf.value.code == "model_not_found"
    up.set(context_limit=10)
    try:
        with pytest.raises(openai.BadRequestError) as too_long:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "x" * 100}]
            )
        assert too_long.value.code == "context_length_exceeded"
        assert too_long.value.body["type"] == "invalid_request_error"  # ours, not the backend's
    finally:
        up.set()


def test_every_completion_response_says_what_the_cache_did(stack) -> None:
    """This gateway has no cache: a plain answer, a stream and an upstream failure all say so."""
    _, gw = stack
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    url = gw.url + "/v1/chat/completions"
    plain = httpx.post(url, json=body, headers=headers)
    streamed = httpx.post(url, json={**body, "stream": True}, headers=headers)
    failed = httpx.post(url, json={**body, "model": "down"}, headers=headers)
    assert (plain.status_code, streamed.status_code, failed.status_code) == (200, 200, 502)
    for r in (plain, streamed, failed):
        assert r.headers["X-Tandem-Cache"] == "bypass; reason=off"
    assert gw.metric("tandem_gateway_cache_status_total", status="bypass", reason="off") >= 3


async def test_openai_sdk_async(stack) -> None:
    up, gw = stack
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    r = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.choices[0].finish_reason == "stop"
    text = ""
    async for chunk in await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        else:
            assert chunk.usage.completion_tokens == 4
    assert text == "tok0 tok1 tok2 tok3 "
    once = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY_RPM1, max_retries=0)
    await once.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as exc:
        await once.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.code == "rate_limit_exceeded"
    await once.close()
    await client.close()


def test_langchain_chat_openai(stack) -> None:
    from langchain_openai import ChatOpenAI

    up, gw = stack
    llm = ChatOpenAI(model="chat", base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    assert llm.invoke("hello").content.startswith("a:")
    assert "".join(c.content for c in llm.stream("hello")) == "tok0 tok1 tok2 tok3 "


def _schema() -> dict:
    doc = copy.deepcopy(openapi_document())
    # Mostly real aliases so generated requests reach the upstream; one unknown for the 404 path.
    doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"] = {
        "enum": ["chat", "nope"]
    }
    return doc


schema = schemathesis.openapi.from_dict(_schema())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_no_server_errors(case, stack) -> None:
    up, gw = stack
    case.call_and_validate(
        base_url=gw.url,
        headers={"Authorization": f"Bearer {KEY}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance],
    )


def test_a_path_with_a_newline_gets_a_json_error(stack) -> None:
    # schemathesis found it: aiohttp's `.` stops at %0A, so such a path matched no route and got
    # aiohttp's own text/plain 404 instead of an OpenAI-style body
    _, gw = stack
    auth = {"Authorization": f"Bearer {KEY}"}
    for path, status in (("/v1/models/a%0Ab", 404), ("/v1/nothing%0Ahere", 404)):
        r = httpx.get(gw.url + path, headers=auth)
        assert r.status_code == status and r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["message"]


def test_openapi_document_is_served(stack) -> None:
    _, gw = stack
    assert httpx.get(gw.url + "/openapi.json").json()["paths"].keys() >= {
        "/v1/chat/completions",
        "/v1/embeddings",
    }
