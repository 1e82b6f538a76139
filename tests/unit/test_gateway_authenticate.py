"""Stage 1, authenticate: a key is matched by its SHA-256; no keys in the file means no auth."""

from __future__ import annotations

import pytest

from gateway.config import ANONYMOUS, compile_config, hash_key, parse_config
from gateway.errors import GatewayError
from gateway.stages.authenticate import authenticate

ROUTES = {
    "backends": {"a": {"url": "http://127.0.0.1:1/v1"}},
    "routes": {"chat": {"backends": [{"backend": "a"}]}},
}
WITH_KEY = compile_config(
    parse_config({**ROUTES, "keys": [{"id": "k1", "team": "t1", "sha256": hash_key("sk-1")}]})
)


def test_a_file_without_keys_lets_everyone_in_as_anonymous() -> None:
    assert authenticate(compile_config(parse_config(ROUTES)), None) is ANONYMOUS


def test_the_presented_key_is_hashed_and_matched() -> None:
    key = authenticate(WITH_KEY, "Bearer sk-1")
    assert (key.id, key.team) == ("k1", "t1")
    assert authenticate(WITH_KEY, "bearer  sk-1 ").id == "k1"  # scheme case, stray spaces


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic sk-1", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer sk-2", "invalid_api_key"),
    ],
)
def test_refusals_are_401_with_a_code(header: str | None, code: str) -> None:
    with pytest.raises(GatewayError) as err:
        authenticate(WITH_KEY, header)
    assert (err.value.status, err.value.code) == (401, code)
