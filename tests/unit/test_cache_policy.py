"""Scoping and exclusions: what the cache may serve to whom, decided before any similarity."""

from __future__ import annotations

import pytest

from gateway.cache.policy import Policy, derive_keys, request_exclusion, response_exclusion
from tests.support.cache_requests import answer, chat
from vocabulary.cache import (
    CachePolicy,
    CacheRecheck,
    CacheSection,
    parse_cache_policy,
    parse_cache_section,
)
from vocabulary.errors import ConfigError


def test_only_the_last_user_turn_is_compared_the_rest_is_scope() -> None:
    base = derive_keys(chat("What is the capital of France?"))
    assert base.text == "What is the capital of France?"
    same_scope = derive_keys(chat("Which city is France's capital?"))
    assert same_scope.scope == base.scope and same_scope.exact != base.exact
    for other in (
        chat("What is the capital of France?", tenant="team-b"),
        chat("What is the capital of France?", model="gpt-4o"),
        chat("What is the capital of France?", system="Answer in French."),
        chat(
            "What is the capital of France?",
            history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        ),
        chat("What is the capital of France?", max_tokens=5),
        chat(
            "What is the capital of France?",
            tools=[{"type": "function", "function": {"name": "f"}}],
        ),
        chat("What is the capital of France?", response_format={"type": "json_object"}),
    ):
        k = derive_keys(other)
        assert k.scope != base.scope and k.exact != base.exact


def test_exact_key_ignores_key_order_and_delivery_fields() -> None:
    a = chat("Hi there", stream=True, user="u1")
    b = chat("Hi there")
    b.body = dict(reversed(list(b.body.items())))
    assert derive_keys(a).exact == derive_keys(b).exact


def test_non_text_turns_are_exact_only() -> None:
    req = chat("x")
    req.body["messages"][-1]["content"] = [{"type": "image_url", "image_url": {"url": "data:"}}]
    assert derive_keys(req).text is None


def test_sampled_requests_are_not_cached_unless_the_route_opts_in() -> None:
    policy = Policy()
    assert request_exclusion(chat("q", temperature=0.9), policy) == "sampled"
    unset = chat("q")
    del unset.body["temperature"]  # the API's default temperature is 1: it samples
    assert request_exclusion(unset, policy) == "sampled"
    assert request_exclusion(chat("q", temperature=0.2), policy) is None
    assert (
        request_exclusion(
            chat("q", temperature=0.9), policy.merged(CachePolicy(allow_sampled=True))
        )
        is None
    )
    assert request_exclusion(chat("q"), policy.merged(CachePolicy(enabled=False))) == "disabled"


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (answer("Paris.", finish="length"), "truncated"),
        ({"error": {"message": "boom"}}, "error"),
        ({"choices": []}, "error"),
        (
            {
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [{"id": "1", "type": "function"}],
                        },
                        "finish_reason": "tool_calls",
                    }
                ]
            },
            "tool_calls",
        ),
        (answer("Paris.", finish="content_filter"), "incomplete"),
        (answer("Paris."), None),
    ],
)
def test_unfit_answers_are_not_stored(response: dict, reason: str | None) -> None:
    assert response_exclusion("chat.completions", response) == reason


def test_bad_policy_values_name_the_field() -> None:
    """Values are checked where the section is parsed (vocabulary/cache.py), with the key's path
    and what is allowed; the cache then only merges valid blocks."""
    with pytest.raises(ConfigError) as err:
        parse_cache_policy({"mode": "fuzzy"}, "routes.x.cache")
    assert err.value.errors == [
        "routes.x.cache.mode: \"fuzzy\": Input should be 'off', 'exact' or 'semantic'"
    ]
    with pytest.raises(ConfigError, match=r"cache\.threshold: 1\.5: Input should be less than"):
        parse_cache_section({"threshold": 1.5})
    with pytest.raises(ConfigError, match=r"cache\.ttl_s: \"1h\": Input should be a valid number"):
        parse_cache_section({"ttl_s": "1h"})


def test_ambiguity_ratio_is_validated() -> None:
    assert Policy().merged(CachePolicy(decision="neighbourhood")).decision == "neighbourhood"
    with pytest.raises(ConfigError, match=r"cache\.ambiguity_ratio: 1\.5: Input should be less"):
        parse_cache_section({"ambiguity_ratio": 1.5})


def test_a_route_block_overrides_only_what_it_sets() -> None:
    section = Policy().merged(CachePolicy(mode="exact", ttl_s=60, min_probability=0.9))
    route = section.merged(CachePolicy(ttl_s=600, min_probability=None))
    assert (route.mode, route.ttl_s, route.min_probability) == ("exact", 600, None)
    assert section.merged(CachePolicy(enabled=False, mode="semantic")).mode == "off"
    assert section.merged(CachePolicy()) is section


def test_settings_read_every_section_key() -> None:
    """The section model (vocabulary/cache.py) and the cache's settings name the same keys: a
    key accepted in a file but dropped by the cache would be dead config."""
    from gateway.cache.core import RecheckSettings, Settings

    policy = set(CachePolicy.model_fields) - {"enabled"}
    assert set(Policy.__dataclass_fields__) == policy
    replica = set(CacheSection.model_fields) - set(CachePolicy.model_fields)
    assert set(Settings.__dataclass_fields__) - {"policy"} == replica
    assert set(RecheckSettings.__dataclass_fields__) == set(CacheRecheck.model_fields)
    settings = Settings.from_config(
        {"mode": "exact", "max_entries": 7, "redis_url": None, "recheck": {"window": 9}}
    )
    assert (settings.policy.mode, settings.max_entries, settings.redis_url) == ("exact", 7, None)
    assert settings.recheck.window == 9 and settings.recheck.min_samples == 20
