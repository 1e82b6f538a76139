"""Stage 2, parse: the body is checked for what its endpoint needs, and the alias for a route the
key may use; every refusal names the parameter."""

from __future__ import annotations

import orjson
import pytest

from gateway.config import compile_config, hash_key, parse_config
from gateway.errors import GatewayError
from gateway.stages.parse import check_body, resolve_route

COMPILED = compile_config(
    parse_config(
        {
            "backends": {"a": {"url": "http://127.0.0.1:1/v1"}},
            "routes": {
                "chat": {"backends": [{"backend": "a"}]},
                "embed": {"backends": [{"backend": "a"}], "endpoints": ["embeddings"]},
            },
            "keys": [
                {"id": "all", "team": "t", "sha256": hash_key("sk-all")},
                {"id": "one", "team": "t", "sha256": hash_key("sk-one"), "models": ["embed"]},
            ],
        }
    )
)
KEYS = {k.id: k for k in COMPILED.keys.values()}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def test_a_good_body_comes_back_parsed() -> None:
    assert check_body(orjson.dumps(CHAT), "chat.completions") == CHAT
    assert check_body(b'{"model": "embed", "input": ["a", "b"]}', "embeddings")["input"] == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("raw", "endpoint", "code", "param"),
    [
        (b"{not json", "chat.completions", "invalid_json", None),
        (b"[1, 2]", "chat.completions", "invalid_request", None),
        (b'{"messages": [{"role": "user"}]}', "chat.completions", "invalid_request", "model"),
        (b'{"model": "chat", "messages": []}', "chat.completions", "invalid_request", "messages"),
        (
            b'{"model": "chat", "messages": ["hi"]}',
            "chat.completions",
            "invalid_request",
            "messages",
        ),
        (b'{"model": "chat"}', "completions", "invalid_request", "prompt"),
        (b'{"model": "embed", "input": ""}', "embeddings", "invalid_request", "input"),
        (
            b'{"model": "chat", "prompt": "x", "stream": "yes"}',
            "completions",
            "invalid_request",
            "stream",
        ),
        (
            b'{"model": "e", "input": "x", "stream": true}',
            "embeddings",
            "invalid_request",
            "stream",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_parameter(
    raw: bytes, endpoint: str, code: str, param: str | None
) -> None:
    with pytest.raises(GatewayError) as err:
        check_body(raw, endpoint)
    assert (err.value.status, err.value.code, err.value.param) == (400, code, param)


def test_the_alias_names_a_route_that_serves_the_endpoint() -> None:
    assert resolve_route(COMPILED, KEYS["all"], "chat", "chat.completions").alias == "chat"
    for alias, endpoint in (("nope", "chat.completions"), ("embed", "chat.completions")):
        with pytest.raises(GatewayError) as err:
            resolve_route(COMPILED, KEYS["all"], alias, endpoint)
        assert (err.value.status, err.value.code, err.value.param) == (
            404,
            "model_not_found",
            "model",
        )


def test_a_key_uses_only_its_models() -> None:
    assert resolve_route(COMPILED, KEYS["one"], "embed", "embeddings").alias == "embed"
    with pytest.raises(GatewayError) as err:
        resolve_route(COMPILED, KEYS["one"], "chat", "chat.completions")
    assert (err.value.status, err.value.code) == (403, "model_not_allowed")
