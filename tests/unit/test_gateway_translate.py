"""The translation modules (gateway/translate/): Messages and Responses to and from chat completions.

Pure functions and stream translators, fed the way the relay feeds them: chunks cut anywhere, even
inside an event, must give the same events as whole ones.
"""

from __future__ import annotations

import json

import orjson
import pytest

from gateway.sse import EventSplitter
from gateway.translate import messages as m
from gateway.translate import responses as r


def chat_stream(*deltas: dict, finish: str = "stop", usage: dict | None = None) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "x"}
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        events.append({**base, "choices": [], "usage": usage})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def feed_in_pieces(tap, data: bytes, size: int) -> bytes:
    out = b"".join(tap.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + tap.rest()


def named(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            name, payload = block.split("\n", 1)
            out.append((name.removeprefix("event: "), json.loads(payload.removeprefix("data: "))))
    return out


USAGE = {"prompt_tokens": 20, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}}
TOOL_DELTAS = (
    {"role": "assistant", "content": ""},
    {"reasoning_content": "hmm"},
    {"content": "Let me look."},
    {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_9",
                "type": "function",
                "function": {"name": "Read", "arguments": ""},
            }
        ]
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"file_'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": 'path":"/a"}'}}]},
)


# -- Messages -> chat ---------------------------------------------------------------------------


def test_a_claude_code_conversation_becomes_chat_messages() -> None:
    body = {
        "model": "coder",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix it"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "text", "text": "Reading."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Read",
                        "input": {"file_path": "/a"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "x = 1"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "boom",
                        "is_error": True,
                    },
                    {"type": "text", "text": "go on"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                ],
            },
            {"role": "system", "content": [{"type": "text", "text": "Today is Monday."}]},
        ],
        "tools": [
            {"name": "Read", "description": "read a file", "input_schema": {"type": "object"}},
            {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "stream": True,
    }
    chat = m.to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "fix it"},
        {
            "role": "assistant",
            "content": "Reading.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"file_path":"/a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "x = 1"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "go on"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
        },
        {"role": "system", "content": "Today is Monday."},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "parameters": {"type": "object"},
                "description": "read a file",
            },
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert (chat["max_tokens"], chat["temperature"], chat["stop"]) == (100, 0.2, ["END"])
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "model" not in chat  # set per backend


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
    ],
)
def test_tool_choice(choice: dict, expected) -> None:
    body = {
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "Read"}],
        "tool_choice": choice,
    }
    assert m.to_chat(body)["tool_choice"] == expected


def test_a_chat_completion_becomes_a_message() -> None:
    obj = {
        "choices": [
            {
                "message": {
                    "content": "Here.",
                    "reasoning_content": "thought",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "Read", "arguments": '{"a": 1}'}}
                    ],
                },
                "finish_reason": "stop",  # some servers finish a tool call with "stop"
            }
        ],
        "usage": USAGE,
    }
    msg = m.from_chat(obj, "coder")
    assert msg["model"] == "coder" and msg["stop_reason"] == "tool_use"
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][2] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "Read",
        "input": {"a": 1},
    }
    assert msg["usage"] == {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 8,
    }
    assert (
        m.from_chat({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}, "c")[
            "stop_reason"
        ]
        == "max_tokens"
    )


@pytest.mark.parametrize("size", [1, 7, 100_000])
def test_a_chat_stream_becomes_a_messages_stream_however_it_is_cut(size: int) -> None:
    tap = m.ChatToMessagesStream("coder")
    events = named(
        feed_in_pieces(tap, chat_stream(*TOOL_DELTAS, finish="tool_calls", usage=USAGE), size)
    )
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    starts = [
        (d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"
    ]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use")]
    assert names.count("content_block_stop") == 3
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert deltas[0] == {"type": "thinking_delta", "thinking": "hmm"}
    assert deltas[1] == {"type": "signature_delta", "signature": ""}
    assert deltas[2] == {"type": "text_delta", "text": "Let me look."}
    assert "".join(d["partial_json"] for d in deltas[3:]) == '{"file_path":"/a"}'
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"]["input_tokens"] == 12 and final["usage"]["cache_read_input_tokens"] == 8
    assert tap.usage == {"prompt_tokens": 20, "completion_tokens": 3, "cached_tokens": 8}


def test_a_stream_that_ends_without_done_is_still_closed_and_an_error_event_is_one() -> None:
    tap = m.ChatToMessagesStream("coder")
    cut = chat_stream({"content": "hi"}).split(b"data: [DONE]")[0]
    names = [n for n, _ in named(tap.feed(cut) + tap.rest())]
    assert names[-2:] == ["message_delta", "message_stop"]
    err = named(m.ChatToMessagesStream("c").fail("gone", "stream_broken"))
    assert err == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "gone",
                    "details": {"error_code": "stream_broken"},
                },
            },
        )
    ]


def test_pass_through_usage_is_read_from_start_and_delta_events_cut_anywhere() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,'
        b'"cache_creation_input_tokens":2,"cache_read_input_tokens":40,"output_tokens":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}\n\n'
    )
    for size in (1, 13, len(stream)):
        tap = m.MessagesUsageTap()
        assert feed_in_pieces(tap, stream, size) == stream  # byte for byte
        assert tap.usage == {"prompt_tokens": 47, "completion_tokens": 9, "cached_tokens": 40}


def test_errors_in_the_anthropic_shape() -> None:
    body = json.loads(m.error_body(429, "slow down", "rate_limit_exceeded"))
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"] == {
        "type": "rate_limit_error",
        "message": "slow down",
        "details": {"error_code": "rate_limit_exceeded"},
    }
    reshaped = json.loads(m.from_openai_error(400, b'{"error": {"message": "bad", "type": "x"}}'))
    assert reshaped["error"] == {"type": "invalid_request_error", "message": "bad"}
    assert json.loads(m.from_openai_error(422, b"not json"))["error"]["message"].endswith("(422).")


# -- Responses -> chat --------------------------------------------------------------------------


def test_responses_items_become_chat_messages() -> None:
    body = {
        "instructions": "Be brief.",
        "max_output_tokens": 50,
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "parameters": {"type": "object"},
                "strict": False,
            },
            {"type": "web_search"},
            {"type": "namespace", "name": "agents", "tools": []},
        ],
        "tool_choice": {"type": "function", "name": "exec_command"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "reasoning": {"effort": "high"},
        "stream": True,
    }
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "rules"}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/i.png"},
            ],
        },
        {"type": "reasoning", "encrypted_content": "zz"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Running."}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "exec_command",
            "arguments": '{"cmd":"ls"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "exec_command",
            "arguments": '{"cmd":"pwd"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "/w"}],
        },
    ]
    chat = r.to_chat(body, items)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Running.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"pwd"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": "/w"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "exec_command", "parameters": {"type": "object"}, "strict": False},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "exec_command"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["max_tokens"] == 50 and chat["stream_options"] == {"include_usage": True}
    assert r.input_items({"input": "hi"}) == [{"type": "message", "role": "user", "content": "hi"}]


def test_a_chat_completion_becomes_a_response() -> None:
    body = {"model": "coder", "input": "x", "metadata": {"k": "v"}}
    obj = {
        "created": 5,
        "choices": [
            {
                "message": {
                    "content": "Hi",
                    "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "length",
            }
        ],
        "usage": USAGE,
    }
    resp = r.from_chat(obj, body, "resp_1")
    assert (resp["id"], resp["object"], resp["created_at"], resp["model"]) == (
        "resp_1",
        "response",
        5,
        "coder",
    )
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert [o["type"] for o in resp["output"]] == ["message", "function_call"]
    assert resp["output"][0]["content"][0]["text"] == "Hi"
    assert resp["output"][1]["call_id"] == "call_1" and resp["metadata"] == {"k": "v"}
    assert (
        resp["usage"]["input_tokens_details"] == {"cached_tokens": 8}
        and resp["usage"]["total_tokens"] == 23
    )


@pytest.mark.parametrize("size", [1, 9, 100_000])
def test_a_chat_stream_becomes_responses_events_however_it_is_cut(size: int) -> None:
    tap = r.ChatToResponsesStream({"model": "coder", "input": "x"}, "resp_1")
    events = [
        d
        for _, d in named(
            feed_in_pieces(tap, chat_stream(*TOOL_DELTAS, finish="tool_calls", usage=USAGE), size)
        )
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert (
        kinds[:2] == ["response.created", "response.in_progress"]
        and kinds[-1] == "response.completed"
    )
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert added == ["reasoning", "message", "function_call"] == [i["type"] for i in done]
    assert done[1]["content"][0]["text"] == "Let me look."
    assert done[2]["arguments"] == '{"file_path":"/a"}' and done[2]["call_id"] == "call_9"
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [
        0,
        1,
        2,
    ]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == done and tap.response == final
    assert final["usage"]["input_tokens"] == 20


def test_a_broken_responses_stream_ends_with_response_failed() -> None:
    tap = r.ChatToResponsesStream({"model": "coder"}, "resp_1")
    tap.feed(chat_stream({"content": "hi"}).split(b"data: [DONE]")[0][:60])
    failed = named(tap.fail("gone", "stream_broken"))[-1][1]
    assert failed["type"] == "response.failed" and failed["response"]["error"] == {
        "code": "stream_broken",
        "message": "gone",
    }


def test_the_event_splitter_holds_a_partial_event() -> None:
    s = EventSplitter()
    assert s.feed(b"data: a\n\ndata: b") == [b"a"]
    assert s.feed(b"\r\n\r\n") == [] and s.rest() == [b"b"]
