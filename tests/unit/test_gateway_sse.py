"""The SSE module: a streamed answer rebuilt into the complete response the cache stores
(`assemble_stream`), a cached one replayed as a stream, and the usage event read or dropped."""

from __future__ import annotations

import orjson
import pytest

from gateway.sse import KeepTail, StripUsage, assemble_stream, replay_as_sse
from tests.support.upstream import stream_events, styled

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


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def relay(tap: StripUsage | KeepTail, data: bytes, size: int) -> bytes:
    """What the relay sends on when the stream arrives in reads of `size` bytes."""
    out = b"".join(tap.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + tap.rest()


@pytest.mark.parametrize("size", [7, 64, 100_000])
def test_the_usage_event_the_gateway_asked_for_is_read_and_dropped(size: int) -> None:
    asked = b"".join(stream_events("a", "m", 3, USAGE))
    tap = StripUsage()
    assert relay(tap, asked, size) == b"".join(stream_events("a", "m", 3, None))
    assert tap.usage == USAGE
    assert tap.events == 6  # role, three tokens, finish, [DONE]: the estimate's fallback count


@pytest.mark.parametrize("size", [7, 100_000])
def test_a_stream_the_caller_asked_usage_for_passes_byte_for_byte(size: int) -> None:
    data = b"".join(stream_events("a", "m", 3, USAGE))
    tap = KeepTail()
    assert relay(tap, data, size) == data
    assert tap.usage == USAGE
    assert KeepTail().usage is None


def test_a_partial_event_at_the_end_is_sent_as_it_is() -> None:
    tap = StripUsage()
    assert tap.feed(b'data: {"choices": []') == b""
    assert tap.rest() == b'data: {"choices": []'


HEAD = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
STREAM = [
    {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {**HEAD, "choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    {**HEAD, "choices": [], "usage": USAGE},
]
STYLES = [
    pytest.param(dict(spaces=s, reverse_keys=r, line_end=e), id=f"{n}-{'rev' if r else 'fwd'}-{i}")
    for s, n in ((False, "compact"), (True, "spaced"))
    for r in (False, True)
    for e, i in ((b"\n", "lf"), (b"\r\n", "crlf"), (b"\r", "cr"))
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [1, 5, 100_000])
def test_the_usage_event_is_found_by_parsing_whatever_the_upstream_writes(
    style: dict, size: int
) -> None:
    """Parsed, not matched: `"choices": []` (a space), keys in any order, CRLF line ends, each
    split across reads anywhere. The usage-only event the caller did not ask for is dropped (a
    `chunk.choices[0]` loop never meets it); every other byte passes as it came."""
    asked = styled(STREAM, **style)
    expected = styled(STREAM[:-1], **style)
    tap = StripUsage()
    out = relay(tap, asked, size)
    assert out == expected and tap.usage == USAGE
    for event in out.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n"):
        if event.startswith(b"data: {"):
            assert orjson.loads(event[6:])["choices"], event  # choices[0] exists in every chunk
    kept = KeepTail()
    assert relay(kept, asked, size) == asked and kept.usage == USAGE
    assert assemble_stream(asked, "chat.completions")["usage"] == USAGE  # type: ignore[index]
