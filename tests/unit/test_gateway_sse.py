"""A streamed answer rebuilt into the complete response the cache stores (gateway.app.assemble_stream)."""

from __future__ import annotations

import orjson
import pytest

from gateway.app import assemble_stream, replay_as_sse

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
TEXT = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1700000000,
    "model": "m",
    "choices": [{"index": 0, "text": " Paris.", "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
}


@pytest.mark.parametrize(
    ("answer", "endpoint"), [(CHAT, "chat.completions"), (TEXT, "completions")]
)
def test_a_replayed_answer_assembles_back_to_itself(answer: dict, endpoint: str) -> None:
    assert assemble_stream(replay_as_sse(answer, endpoint, include_usage=True), endpoint) == answer


def test_chunked_deltas_join_in_order_across_split_reads() -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        *(
            {**head, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
            for t in ("The ", "capital ", "is Paris.")
        ),
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    answer = assemble_stream(data, "chat.completions")
    assert (
        answer is not None and answer["choices"][0]["message"]["content"] == "The capital is Paris."
    )
    assert answer["choices"][0]["finish_reason"] == "stop" and "usage" not in answer


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.replace(b"data: [DONE]\n\n", b""),  # cut off: not a complete answer
        lambda d: d.replace(b"data: [DONE]", b'data: {"error": {"message": "x"}}\n\ndata: [DONE]'),
        lambda d: d.replace(b'"content":"Paris."', b'"tool_calls":[{"index":0,"id":"t"}]'),
    ],
)
def test_incomplete_failed_or_tool_streams_are_not_rebuilt(mutate) -> None:
    data = mutate(replay_as_sse(CHAT, "chat.completions", include_usage=False))
    assert assemble_stream(data, "chat.completions") is None
