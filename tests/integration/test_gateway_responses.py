"""OpenAI's Responses API at the gateway, translated to chat completions, driven by the `openai` SDK.

Text, the semantic stream events, function calls carried on by `previous_response_id` (stored)
or by sending the whole conversation back (`store: false`, as Codex does), stored responses read
and deleted by id (only by the team that made them), and errors the SDK raises its own exceptions
for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.config import hash_key
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration

KEY, OTHER_TEAM = "sk-resp", "sk-other-team"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK_WEATHER = 'call get_weather {"city":"Paris"}'


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Upstream, RunningGateway]]:
    up = Upstream("local")
    with ServerThread(up.app) as srv:
        config = {
            "backends": {"local": {"url": srv.url + "/v1", "model": "served-coder"}},
            "routes": {"coder": {"backends": [{"backend": "local"}], "retries": {"attempts": 0}}},
            "keys": [
                {"id": "a", "team": "platform", "sha256": hash_key(KEY)},
                {"id": "b", "team": "other", "sha256": hash_key(OTHER_TEAM)},
            ],
        }
        with RunningGateway(config) as gw:
            yield up, gw


@pytest.fixture
def fresh(stack) -> tuple[Upstream, RunningGateway]:
    up, gw = stack
    up.set()
    up.reset_counts()
    return up, gw


def client(gw: RunningGateway, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def test_a_response_from_a_chat_completions_backend(fresh) -> None:
    up, gw = fresh
    r = client(gw).responses.create(
        model="coder", instructions="Be brief.", input="hi", max_output_tokens=32, temperature=0
    )
    assert r.object == "response" and r.status == "completed" and r.model == "coder"
    assert r.output_text == "local: tok0 tok1 tok2 tok3"
    assert r.usage.output_tokens == 4 and r.usage.total_tokens == r.usage.input_tokens + 4
    sent = up.bodies[0]
    assert sent["model"] == "served-coder" and sent["max_tokens"] == 32
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_the_stream_is_the_responses_api_s_semantic_events(fresh) -> None:
    _, gw = fresh
    with client(gw).responses.stream(model="coder", input="hi") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert {
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    } <= set(kinds)
    assert final.output_text == "tok0 tok1 tok2 tok3 " and final.usage.output_tokens == 4


def test_sequence_numbers_count_up_and_a_function_call_streams_its_arguments(fresh) -> None:
    up, gw = fresh
    up.set(reasoning=True)
    events = []
    with httpx.stream(
        "POST",
        gw.url + "/v1/responses",
        json={"model": "coder", "input": ASK_WEATHER, "tools": [WEATHER], "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ) as r:
        for block in r.read().decode().split("\n\n"):
            data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
            if data:
                events.append(json.loads(data[0]))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert "response.reasoning_text.delta" in kinds
    args = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    assert json.loads(args) == {"city": "Paris"}
    done = events[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["reasoning", "function_call"]
    assert done["output"][1]["arguments"] == args and done["output"][1]["call_id"] == "call_1"


def test_a_function_call_carried_on_by_previous_response_id(fresh) -> None:
    up, gw = fresh
    c = client(gw)
    first = c.responses.create(model="coder", input=ASK_WEATHER, tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    second = c.responses.create(
        model="coder",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "local: done"
    sent = up.bodies[-1]["messages"]  # the stored conversation, then the tool's output
    assert sent[0] == {"role": "user", "content": ASK_WEATHER}
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_store_false_with_the_whole_conversation_as_codex_sends_it(fresh) -> None:
    up, gw = fresh
    c = client(gw)
    first = c.responses.create(model="coder", input=ASK_WEATHER, tools=[WEATHER], store=False)
    call = first.output[0]
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)  # not stored
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "rules"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": ASK_WEATHER}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    r = c.responses.create(model="coder", input=items, tools=[WEATHER], store=False)
    assert r.output_text == "local: done"
    roles = [m["role"] for m in up.bodies[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]  # the reasoning item dropped


def test_stored_responses_are_read_and_deleted_by_their_team_only(fresh) -> None:
    _, gw = fresh
    c = client(gw)
    r = c.responses.create(model="coder", input="hi")
    assert c.responses.retrieve(r.id).output_text == r.output_text
    items = c.responses.input_items.list(r.id)
    assert [i.role for i in items.data] == ["user"]
    with pytest.raises(openai.NotFoundError):
        client(gw, OTHER_TEAM).responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client(gw, OTHER_TEAM).responses.delete(r.id)
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_errors_are_openai_shaped(fresh) -> None:
    up, gw = fresh
    c = client(gw)
    with pytest.raises(openai.BadRequestError) as missing:
        c.responses.create(model="coder", input="hi", previous_response_id="resp_nope")
    assert missing.value.code == "previous_response_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-wrong").responses.create(model="coder", input="hi")
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="nope", input="hi")
    up.set(status=503)
    with pytest.raises(openai.InternalServerError):
        c.responses.create(model="coder", input="hi")
