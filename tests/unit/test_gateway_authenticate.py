"""Stage 1, authenticate: a key is matched by its SHA-256; no keys in the file means no auth."""

from __future__ import annotations

import pytest

from gateway.config import ANONYMOUS, compile_config, hash_key, parse_config
from gateway.errors import GatewayError
from gateway.stages.authenticate import authenticate, developer_of

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


DEV = compile_config(
    parse_config(
        {
            **ROUTES,
            "teams": {"platform": {"developers": ["alice", "bob"]}},
            "keys": [
                {
                    "id": "alice",
                    "team": "platform",
                    "sha256": hash_key("sk-a"),
                    "developer": "alice",
                },
                {
                    "id": "proxy",
                    "team": "platform",
                    "sha256": hash_key("sk-p"),
                    "developer_header": "X-Forwarded-User",
                },
                {"id": "svc", "team": "platform", "sha256": hash_key("sk-s")},
            ],
        }
    )
)


def test_claude_code_s_x_api_key_is_accepted_where_asked_for() -> None:
    assert authenticate(DEV, None, "sk-a").id == "alice"
    assert authenticate(DEV, "Bearer sk-a", "").id == "alice"  # ANTHROPIC_AUTH_TOKEN
    with pytest.raises(GatewayError) as err:
        authenticate(DEV, None, "")
    assert "x-api-key" in err.value.message and err.value.code == "missing_api_key"
    with pytest.raises(GatewayError):
        authenticate(DEV, None, "sk-wrong")


def test_a_developer_is_the_key_s_own_or_the_proxy_s_header_on_its_key_only() -> None:
    key = {k.id: k for k in DEV.keys.values()}
    assert developer_of(DEV, key["alice"], {"X-Forwarded-User": "bob"}) == "alice"  # not claimable
    assert developer_of(DEV, key["proxy"], {"X-Forwarded-User": "bob"}) == "bob"
    assert developer_of(DEV, key["svc"], {"X-Forwarded-User": "bob"}) is None  # header ignored
    with pytest.raises(GatewayError) as missing:
        developer_of(DEV, key["proxy"], {})
    assert (missing.value.status, missing.value.code) == (401, "missing_developer")
    with pytest.raises(GatewayError) as stranger:
        developer_of(DEV, key["proxy"], {"X-Forwarded-User": "mallory"})
    assert (stranger.value.status, stranger.value.code) == (403, "developer_not_allowed")
    assert DEV.developers_with_keys == {"platform": 2}  # alice's key and the roster: alice, bob
