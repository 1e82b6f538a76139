"""Routes file validation: a bad file names the field path and the allowed values."""

from __future__ import annotations

import pytest

from gateway.config import compile_config, hash_key, load_config, parse_config
from vocabulary.errors import ConfigError

KEY = hash_key("sk-test")


def base(**extra: object) -> dict:
    cfg: dict = {
        "backends": {
            "small": {"url": "http://127.0.0.1:1/v1"},
            "big": {"url": "http://127.0.0.1:2/v1", "model": "llama-70b"},
        },
        "routes": {
            "chat": {
                "backends": [{"backend": "small", "weight": 3}, {"backend": "big"}],
                "fallbacks": ["long"],
            },
            "long": {"backends": [{"backend": "big"}]},
        },
    }
    cfg.update(extra)
    return cfg


def test_unknown_backend_names_path_and_allowed_values() -> None:
    cfg = base()
    cfg["routes"]["chat"]["backends"][1]["backend"] = "nope"
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, "routes.yaml")
    assert err.value.errors == [
        "routes.chat.backends[1].backend: unknown backend 'nope'; allowed: ['big', 'small']"
    ]
    # one problem, one line
    assert str(err.value).startswith("invalid routes.yaml: routes.chat.backends[1]")


def test_one_line_per_problem_across_schema_and_references() -> None:
    """The routes file raises the one ConfigError of the vocabulary, one line per problem."""
    cfg = base(prices={"nope": {}})
    cfg["routes"]["chat"]["fallbacks"] = ["gone", "chat"]
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert err.value.errors == [
        "routes.chat.fallbacks[0]: unknown route 'gone'; allowed: ['chat', 'long']",
        "routes.chat.fallbacks[1]: a route cannot fall back to itself",
        "prices.nope: unknown backend; allowed: ['big', 'small']",
    ]


def test_enum_error_lists_allowed_values() -> None:
    cfg = base(teams={"a": {"budget": {"usd": 5, "period": "week"}}})
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert "teams.a.budget.period" in str(err.value)
    assert "'hour', 'day' or 'month'" in str(err.value)


def test_budget_without_prices_is_refused() -> None:
    with pytest.raises(ConfigError, match="have no price"):
        parse_config(base(teams={"a": {"budget": {"usd": 5}}}))


def test_bad_key_hash_and_unknown_model() -> None:
    cfg = base(keys=[{"id": "k", "team": "a", "sha256": "abc", "models": ["gpt-9"]}])
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert 'keys[0].sha256: "abc": must be 64 hex characters' in str(err.value)
    assert "keys[0].models: unknown route 'gpt-9'" not in str(err.value)  # the schema failed first


def test_typo_in_field_is_refused() -> None:
    cfg = base()
    cfg["routes"]["chat"]["deadline"] = 3
    with pytest.raises(
        ConfigError,
        match=r"routes\.chat\.deadline: unknown key 'deadline'; allowed keys: .*deadline_s",
    ):
        parse_config(cfg)


def test_compiled_route_has_chain_weights_and_upstream_urls() -> None:
    c = compile_config(parse_config(base()))
    chat = c.routes["chat"]
    assert [r.alias for r in chat.chain] == ["chat", "long"]
    assert chat.cum_weights == [3.0, 4.0]
    assert chat.backends[1].urls["chat.completions"] == "http://127.0.0.1:2/v1/chat/completions"
    assert chat.backends[1].label_values[1] == "llama-70b"


def test_keys_file_is_merged(tmp_path) -> None:
    import yaml

    (tmp_path / "keys.yaml").write_text(yaml.safe_dump([{"id": "k", "team": "a", "sha256": KEY}]))
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(base(keys_file="keys.yaml")))
    c = compile_config(load_config(tmp_path / "routes.yaml"))
    assert c.auth_required and len(c.keys) == 1


def test_route_cache_policy_is_checked_when_the_file_loads() -> None:
    """A typo in a route's `cache:` fails at start-up with its path, not on the route's first
    request, and replica-level keys are refused where they would be ignored."""
    policy_keys = (
        "allow_sampled, ambiguity_ratio, candidates, decision, enabled, max_temperature, "
        "min_probability, min_similarity, mode, threshold, ttl_s"
    )
    cfg = base()
    cfg["routes"]["chat"]["cache"] = {"decision": "neighbourhod"}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert err.value.errors == [
        'routes.chat.cache.decision: "neighbourhod": '
        "Input should be 'evidence', 'verifier', 'neighbourhood' or 'threshold'"
    ]
    cfg["routes"]["chat"]["cache"] = {"treshold": 0.9, "max_entries": 10}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert err.value.errors == [
        f"routes.chat.cache.treshold: unknown key 'treshold'; allowed keys: {policy_keys}",
        f"routes.chat.cache.max_entries: unknown key 'max_entries'; allowed keys: {policy_keys}",
    ]
    cfg["routes"]["chat"]["cache"] = {"decision": "neighbourhood", "ambiguity_ratio": 0.7}
    assert parse_config(cfg).routes["chat"].cache.model_dump(exclude_unset=True) == {
        "decision": "neighbourhood",
        "ambiguity_ratio": 0.7,
    }


def test_top_level_cache_section_is_checked_too() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cache\.max_entrys: unknown key 'max_entrys'; allowed keys: .*, max_entries, ",
    ):
        parse_config(base(cache={"mode": "semantic", "max_entrys": 10}))
    with pytest.raises(ConfigError, match=r"cache\.recheck\.fraction: 2: Input should be less"):
        parse_config(base(cache={"recheck": {"fraction": 2}}))
    assert parse_config(base(cache={"mode": "exact", "recheck": {"fraction": 0.1}})).cache


def test_generated_files_may_leave_nulls_out() -> None:
    """RoutesConfig.to_yaml drops null values: that is only right while every field that may be
    null has null as its default."""
    from pydantic import BaseModel

    from gateway.config import RoutesConfig

    def check(model: type[BaseModel]) -> None:
        for name, f in model.model_fields.items():
            if type(None) in getattr(f.annotation, "__args__", ()):
                assert f.default is None, (
                    f"{model.__name__}.{name} may be null but defaults to {f.default!r}"
                )
            for inner in getattr(f.annotation, "__args__", (f.annotation,)):
                for arg in (*getattr(inner, "__args__", ()), inner):
                    if isinstance(arg, type) and issubclass(arg, BaseModel):
                        check(arg)

    check(RoutesConfig)


def test_an_anthropic_backend_serves_messages_only_and_routes_default_to_what_all_serve() -> None:
    cfg = base(
        backends={
            "small": {"url": "http://127.0.0.1:1/v1"},
            "claude": {"url": "https://api.anthropic.com/v1", "protocol": "anthropic"},
        },
        routes={
            "coder": {"backends": [{"backend": "small"}]},
            "claude": {"backends": [{"backend": "claude"}], "fallbacks": ["coder"]},
        },
    )
    compiled = compile_config(parse_config(cfg))
    assert compiled.routes["claude"].endpoints == {"messages"}
    assert compiled.routes["coder"].endpoints == {
        "chat.completions",
        "completions",
        "embeddings",
        "messages",
        "responses",
    }
    claude = compiled.backends["claude"]
    assert claude.urls["messages"] == "https://api.anthropic.com/v1/messages"
    assert claude.headers["anthropic-version"] == "2023-06-01"
    cfg["routes"]["claude"]["endpoints"] = ["messages", "chat.completions"]
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert (
        "routes.claude.endpoints: 'chat.completions' is not served by backend 'claude' "
        "(protocol anthropic); allowed: ['messages']"
    ) in str(err.value)


def test_provider_keys_go_in_the_header_the_provider_reads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant")
    token = tmp_path / "vertex-token"
    token.write_text("ya29.token\n")
    backends = {
        "claude": {
            "url": "https://api.anthropic.com/v1",
            "protocol": "anthropic",
            "api_key_env": "TEST_ANTHROPIC_KEY",
        },
        "bedrock": {
            "url": "https://bedrock-mantle.us-east-1.api.aws/anthropic/v1",
            "protocol": "anthropic",
            "api_key_env": "TEST_ANTHROPIC_KEY",
            "auth": "bearer",
        },
        "vertex": {
            "url": "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models",
            "protocol": "anthropic",
            "vertex": True,
            "model": "claude-sonnet-4-5@20250929",
            "api_key_file": str(token),
        },
    }
    routes = {n: {"backends": [{"backend": n}]} for n in backends}
    b = compile_config(parse_config({"backends": backends, "routes": routes})).backends
    assert (
        b["claude"].headers["x-api-key"] == "sk-ant" and "Authorization" not in b["claude"].headers
    )
    assert b["bedrock"].headers["Authorization"] == "Bearer sk-ant"
    assert b["vertex"].headers["Authorization"] == "Bearer ya29.token"
    assert "anthropic-version" not in b["vertex"].headers  # Vertex takes it in the body
    assert (
        b["vertex"].urls["messages.stream"].endswith("/claude-sonnet-4-5@20250929:streamRawPredict")
    )
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "backends": {"v": {"url": "https://x/v1", "vertex": True}},
                "routes": {"v": {"backends": [{"backend": "v"}]}},
            }
        )
    assert "vertex: only for protocol anthropic" in str(err.value)


def test_developer_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            base(
                keys=[
                    {
                        "id": "a",
                        "team": "t",
                        "sha256": KEY,
                        "developer": "a",
                        "developer_header": "X-User",
                    },
                    {"id": "b", "team": "t", "sha256": KEY, "developer_header": "X User"},
                ]
            )
        )
    text = str(err.value)
    assert "developer and developer_header" in text
    assert "'X User' is not an HTTP header name" in text
    with pytest.raises(ConfigError) as err:  # a developer budget needs prices, as a team's does
        parse_config(base(teams={"t": {"developer_budget": {"usd": 5}}}))
    assert "teams ['t'] have budgets but backends" in str(err.value)
