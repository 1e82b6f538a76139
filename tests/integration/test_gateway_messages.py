"""Anthropic's Messages API at the gateway, driven by the official `anthropic` SDK.

Two routes: `claude` passes through to a scripted Anthropic-compatible upstream (answers and
streams with every event type, tool use, thinking; tests/support/anthropic_upstream.py), `coder`
is translated to the scripted OpenAI-compatible upstream (tests/support/upstream.py), as a
self-hosted vLLM model would be. Both: text, streams, tool use round trips, count_tokens,
Anthropic-shaped errors the SDK raises its own exceptions for, x-api-key and bearer auth, and
what each request costs a developer (prompt-cache reads priced at the cached price).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from gateway.audit import FIELDS
from gateway.config import hash_key
from tests.support.anthropic_upstream import CACHE_READ, AnthropicUpstream
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration

KEY, PROXY_KEY, CODER_ONLY, POOR = "sk-alice", "sk-proxy", "sk-coder-only", "sk-poor"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK_WEATHER = 'call get_weather {"city":"Paris"}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    os.environ["TANDEM_TEST_MESSAGES_KEY"] = "sk-ant-provider"
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    a_up, o_up = AnthropicUpstream("claude"), Upstream("local")
    with ServerThread(a_up.app) as a_srv, ServerThread(o_up.app) as o_srv:
        config = {
            "backends": {
                "claude": {
                    "url": a_srv.url + "/v1",
                    "protocol": "anthropic",
                    "api_key_env": "TANDEM_TEST_MESSAGES_KEY",
                    "model": "claude-sonnet-4-5",
                },
                "local": {"url": o_srv.url + "/v1"},
            },
            "routes": {
                "claude": {"backends": [{"backend": "claude"}], "retries": {"attempts": 0}},
                "coder": {"backends": [{"backend": "local"}], "retries": {"attempts": 0}},
                "claude-or-coder": {
                    "backends": [{"backend": "claude"}],
                    "fallbacks": ["coder"],
                    "retries": {"attempts": 0},
                },
            },
            "prices": {
                "claude": {
                    "input_per_mtok": 3,
                    "output_per_mtok": 15,
                    "cached_input_per_mtok": 0.3,
                },
                "local": {"input_per_mtok": 0.2, "output_per_mtok": 0.6},
            },
            "teams": {
                "platform": {"developers": ["alice", "bob"]},
                "thrifty": {"developer_budget": {"usd": 1e-9, "period": "day"}},
            },
            "keys": [
                {"id": "alice", "team": "platform", "sha256": hash_key(KEY), "developer": "alice"},
                {
                    "id": "proxy",
                    "team": "platform",
                    "sha256": hash_key(PROXY_KEY),
                    "developer_header": "X-Forwarded-User",
                },
                {
                    "id": "coder-only",
                    "team": "platform",
                    "sha256": hash_key(CODER_ONLY),
                    "models": ["coder"],
                },
                {"id": "poor", "team": "thrifty", "sha256": hash_key(POOR), "developer": "dora"},
            ],
            "audit": {"path": str(audit)},
        }
        with RunningGateway(config) as gw:
            yield {"gw": gw, "anthropic": a_up, "openai": o_up, "audit": audit}


@pytest.fixture
def fresh(stack) -> dict:
    stack["anthropic"].reset()
    stack["openai"].set()
    stack["openai"].reset_counts()
    return stack


def client(gw: RunningGateway, key: str = KEY, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, **kwargs)


def raw_events(gw: RunningGateway, body: dict, key: str = KEY) -> list[tuple[str, dict]]:
    """(event name, data) of a streamed Messages answer, as sent on the wire."""
    events = []
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        for block in r.read().decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in lines:
                data = json.loads(lines["data"])
                assert data["type"] == lines["event"]
                events.append((lines["event"], data))
    return events


@pytest.mark.parametrize(
    "model, text", [("claude", "claude: hello there"), ("coder", "local: tok0 tok1 tok2 tok3")]
)
def test_a_message_through_pass_through_and_translation(fresh, model: str, text: str) -> None:
    msg = client(fresh["gw"]).messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert (
        msg.type == "message"
        and msg.role == "assistant"
        and msg.model in (model, "claude-sonnet-4-5")
    )
    assert [b.text for b in msg.content] == [text]
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0


def test_messages_say_the_cache_was_bypassed_for_their_endpoint(fresh) -> None:
    gw = fresh["gw"]
    before = gw.metric("tandem_gateway_cache_status_total", status="bypass", reason="endpoint")
    r = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "coder", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["X-Tandem-Cache"] == "bypass; reason=endpoint"
    after = gw.metric("tandem_gateway_cache_status_total", status="bypass", reason="endpoint")
    assert after == before + 1


def test_pass_through_is_byte_for_byte_with_the_provider_s_key_and_the_caller_s_betas(
    fresh,
) -> None:
    c = client(fresh["gw"])
    msg = c.beta.messages.create(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14"],
    )
    assert msg.id == "msg_claude"  # the upstream's own answer, not a rebuilt one
    seen = fresh["anthropic"].requests[0]
    assert seen["headers"]["x-api-key"] == "sk-ant-provider"  # never the developer's key
    assert seen["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert seen["body"]["model"] == "claude-sonnet-4-5"  # the backend's model name


def test_a_pass_through_stream_carries_every_event_type(fresh) -> None:
    body = {
        "model": "claude",
        "max_tokens": 64,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": ASK_WEATHER}],
    }
    events = raw_events(fresh["gw"], body)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
    assert deltas == {"thinking_delta", "signature_delta", "input_json_delta"}
    assert {n for n in names} >= {"content_block_start", "content_block_stop"}


def test_a_translated_stream_is_a_messages_stream(fresh) -> None:
    fresh["openai"].set(reasoning=True)
    body = {
        "model": "coder",
        "max_tokens": 64,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": ASK_WEATHER}],
    }
    events = raw_events(fresh["gw"], body)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= set(deltas)
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if d.get("delta", {}).get("type") == "input_json_delta"
    )
    assert json.loads(partial) == {"city": "Paris"}
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use" and final["usage"]["output_tokens"] == 4


@pytest.mark.parametrize("model", ["claude", "coder"])
def test_sdk_stream_and_a_tool_use_round_trip(fresh, model: str) -> None:
    c = client(fresh["gw"])
    with c.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
    assert text in ("claude: hello there", "tok0 tok1 tok2 tok3 ")
    messages: list = [{"role": "user", "content": ASK_WEATHER}]
    with c.messages.stream(model=model, max_tokens=64, messages=messages, tools=[WEATHER]) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    answer = c.messages.create(model=model, max_tokens=64, messages=messages, tools=[WEATHER])
    assert answer.content[0].text.endswith("done")
    if model == "coder":  # the tool result reached the chat model as a tool message
        sent = fresh["openai"].bodies[-1]["messages"]
        assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
        assert sent[-2]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }


def test_count_tokens_on_both_kinds_of_backend(fresh) -> None:
    c = client(fresh["gw"])
    asked = c.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert (
        asked.input_tokens
        == len(json.dumps([{"role": "user", "content": "hi"}], separators=(",", ":"))) // 4
    )
    assert fresh["anthropic"].requests[0]["path"] == "/v1/messages/count_tokens"
    estimated = c.messages.count_tokens(model="coder", messages=[{"role": "user", "content": "hi"}])
    assert estimated.input_tokens > 0 and fresh["openai"].requests == 0  # estimated here


def test_errors_are_anthropic_shaped_and_the_sdk_raises_its_own_exceptions(fresh) -> None:
    gw = fresh["gw"]
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gw, key="sk-wrong").messages.create(model="claude", max_tokens=8, messages=hi)
    assert auth.value.body["type"] == "error"
    assert auth.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        client(gw, key=CODER_ONLY).messages.create(model="claude", max_tokens=8, messages=hi)
    with pytest.raises(anthropic.NotFoundError):
        client(gw).messages.create(model="nope", max_tokens=8, messages=hi)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(gw).messages.create(model="claude", max_tokens=0, messages=hi)
    assert "max_tokens" in bad.value.message
    fresh["anthropic"].status = 400  # the provider's own refusal, passed through as it is
    with pytest.raises(anthropic.BadRequestError) as upstream:
        client(gw).messages.create(model="claude", max_tokens=8, messages=hi)
    assert upstream.value.body["error"]["message"] == "claude says no"
    fresh["openai"].set(status=400)  # a translated backend's refusal, reshaped
    with pytest.raises(anthropic.BadRequestError) as reshaped:
        client(gw).messages.create(model="coder", max_tokens=8, messages=hi)
    assert reshaped.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "upstream local says 400",
    }
    fresh["anthropic"].status = 529  # overloaded, and no fallback
    with pytest.raises(anthropic.InternalServerError) as failed:
        client(gw).messages.create(model="claude", max_tokens=8, messages=hi)
    assert failed.value.body["error"]["details"]["error_code"] == "upstream_error"


def test_an_overloaded_provider_falls_back_to_the_self_hosted_model(fresh) -> None:
    fresh["anthropic"].status = 529
    msg = client(fresh["gw"]).messages.create(
        model="claude-or-coder", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text.startswith("local:")  # translated on the fallback route


def test_bearer_auth_as_claude_code_sends_with_an_auth_token(fresh) -> None:
    c = anthropic.Anthropic(base_url=fresh["gw"].url, auth_token=KEY, max_retries=0)
    msg = c.messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == "claude: hello there"


def test_a_proxy_names_the_developer_the_roster_bounds_it(fresh) -> None:
    gw = fresh["gw"]
    hi = [{"role": "user", "content": "hi"}]
    before = gw.metric("tandem_gateway_assistant_requests_total", developer="bob")
    client(gw, key=PROXY_KEY, default_headers={"X-Forwarded-User": "bob"}).messages.create(
        model="claude", max_tokens=8, messages=hi
    )
    assert (
        gw.metric("tandem_gateway_assistant_requests_total", developer="bob", tool="anthropic-sdk")
        == before + 1
    )
    with pytest.raises(anthropic.AuthenticationError) as missing:
        client(gw, key=PROXY_KEY).messages.create(model="claude", max_tokens=8, messages=hi)
    assert missing.value.body["error"]["details"]["error_code"] == "missing_developer"
    with pytest.raises(anthropic.PermissionDeniedError) as stranger:
        client(gw, key=PROXY_KEY, default_headers={"X-Forwarded-User": "mallory"}).messages.create(
            model="claude", max_tokens=8, messages=hi
        )
    assert stranger.value.body["error"]["details"]["error_code"] == "developer_not_allowed"


def test_what_a_developer_spent_and_saved_and_their_sessions(fresh) -> None:
    gw = fresh["gw"]
    c = client(gw, default_headers={"X-Claude-Code-Session-Id": "s-123"})
    cost0 = gw.metric("tandem_gateway_assistant_cost_usd_total", developer="alice")
    saved0 = gw.metric("tandem_gateway_assistant_cache_saved_usd_total", developer="alice")
    sessions0 = gw.metric("tandem_gateway_assistant_sessions_total", developer="alice")
    msg = c.messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    c.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    u = msg.usage
    assert u.cache_read_input_tokens == CACHE_READ
    one = (u.input_tokens * 3 + CACHE_READ * 0.3 + u.output_tokens * 15) / 1e6
    assert gw.metric("tandem_gateway_assistant_cost_usd_total", developer="alice") == pytest.approx(
        cost0 + 2 * one
    )
    assert gw.metric(
        "tandem_gateway_assistant_cache_saved_usd_total", developer="alice"
    ) == pytest.approx(saved0 + 2 * CACHE_READ * (3 - 0.3) / 1e6)
    from tests.support.upstream import wait_until

    assert wait_until(
        lambda: (
            gw.metric("tandem_gateway_assistant_sessions_total", developer="alice") == sessions0 + 1
        )
    )
    assert gw.metric("tandem_gateway_developers_with_keys", team="platform") == 2  # alice, bob


def test_a_developer_past_their_budget_is_refused(fresh) -> None:
    c = client(fresh["gw"], key=POOR)
    c.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError) as refused:
        c.messages.create(
            model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body["error"]["details"]["error_code"] == "developer_budget_exceeded"


def test_audit_records_name_the_developer_and_tool_and_hold_no_prompt(fresh) -> None:
    client(fresh["gw"]).messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "the secret plan"}]
    )
    text = fresh["audit"].read_text()
    last = json.loads(text.splitlines()[-1])
    assert set(last) == set(FIELDS)  # the documented record, nothing more
    assert last["developer"] == "alice" and last["tool"] == "anthropic-sdk"
    assert last["model"] == "claude" and last["backend"] == "claude" and last["status"] == 200
    assert last["tokens_cached"] == CACHE_READ and last["cost_usd"] > 0
    assert "secret plan" not in text


def test_a_traced_messages_request_is_a_chat_span(stack) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    cfg = {
        "backends": {"local": {"url": stack["gw"].gateway.cfg.backends["local"].url}},
        "routes": {"coder": {"backends": [{"backend": "local"}]}},
    }
    with RunningGateway(cfg, span_exporter=exporter) as gw:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(
            model="coder", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat coder" and span.attributes["gen_ai.usage.output_tokens"] == 4
