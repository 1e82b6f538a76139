"""The feature store's pure parts: Feast's Redis format (against bytes Feast 0.66 produces),
the prompt block and body shapes, feature_store.yaml, the config types and their errors, the
plan-time rules on a repository, and the freshness alerts under promtool."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from features import redis_format as rf
from features import rules
from features.context import block, enrich
from features.online import CompiledRead
from features.repo import Repo, View, check_repo, feature_read
from features.store_yaml import feature_store_yaml, redis_connection_string
from gateway.config import parse_config
from vocabulary.errors import ConfigError
from vocabulary.features import (
    FeatureRead,
    FeatureStoreConfig,
    UseCaseFeatures,
    schedule_interval_s,
)
from vocabulary.usecase import UseCaseSpec

READ = FeatureRead.model_validate(
    {
        "project": "customer_care",
        "service": "support_chat_context",
        "entity": {"name": "customer_id", "from": "body", "field": "user"},
        "views": [
            {"name": "customer_profile", "features": ["plan_tier", "tenure_months"]},
            {"name": "support_activity", "features": ["open_tickets"]},
        ],
    }
)


def test_entity_key_is_feasts_v3_serialization_plus_project() -> None:
    # serialize_entity_key(EntityKey(join_keys=["customer_id"], entity_values=[string "C1"]), 3)
    expected = (
        struct.pack("<III", 1, 2, len(b"customer_id"))
        + b"customer_id"
        + struct.pack("<II", 2, 2)
        + b"C1"
        + b"customer_care"
    )
    assert rf.entity_key("customer_care", "customer_id", "C1") == expected
    assert rf.entity_key("p", "id", 7)[-(8 + 1) :] == struct.pack("<q", 7) + b"p"


def test_field_key_is_murmur3_little_endian() -> None:
    # feast.infra.online_stores.helpers._mmh3("driver_hourly_stats:conv_rate")
    import mmh3

    h = mmh3.hash("customer_profile:plan_tier", signed=False)
    assert rf.field_key("customer_profile", "plan_tier") == struct.pack("<I", h)
    assert rf.timestamp_field("customer_profile") == b"_ts:customer_profile"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x12\x03pro", "pro"),  # string_val = 2
        (b"\x18\x07", 7),  # int32_val = 3
        (b"\x20" + b"\xff" * 9 + b"\x01", -1),  # int64_val = 4, negative
        (b"\x29" + struct.pack("<d", 2.5), 2.5),  # double_val = 5
        (b"\x35" + struct.pack("<f", 0.5), 0.5),  # float_val = 6
        (b"\x38\x01", True),  # bool_val = 7
        (b"\x62\x0a\x01a\x01b", None),  # string_list_val = 12 (value is a StringList message)
        (b"\x72\x04\x0a\x02\x01\x02", [1, 2]),  # int64_list_val = 14, packed
        (b"\x98\x01\x00", None),  # null_val = 19
        (b"", None),
        (None, None),
    ],
)
def test_values_decode_like_feast_protos(raw, value) -> None:
    if raw == b"\x62\x0a\x01a\x01b":
        raw = b"\x62\x06\x0a\x01a\x0a\x01b"  # StringList{val: ["a", "b"]}
        value = ["a", "b"]
    assert rf.decode_value(raw) == value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def test_timestamp_decodes_seconds_and_nanos() -> None:
    raw = b"\x08" + _varint(1745000000) + b"\x10" + _varint(500_000_000)
    assert rf.decode_timestamp(raw) == pytest.approx(1745000000 + 0.5)
    assert rf.decode_timestamp(None) is None


def test_compiled_read_tells_unknown_entities_from_null_features() -> None:
    c = CompiledRead(READ)
    assert c.names == ["plan_tier", "tenure_months", "open_tickets"]
    assert c.fields[-2:] == [b"_ts:customer_profile", b"_ts:support_activity"]
    assert c.row([None] * 5) is None
    ts = b"\x08\x01"
    row = c.row([b"\x12\x03pro", None, None, ts, None])
    assert row is not None and row.values == {
        "plan_tier": "pro",
        "tenure_months": None,
        "open_tickets": None,
    }
    assert row.event_times == {"customer_profile": 1.0, "support_activity": None}
    with pytest.raises(ValueError):
        CompiledRead(READ.model_copy(update={"key_type": "int64"})).key("abc")


def test_features_reach_each_endpoint_the_way_its_model_takes_them() -> None:
    values = {"plan_tier": "enterprise", "tenure_months": 4, "open_tickets": None}
    text = block(READ, values)
    assert text.splitlines() == [
        "Known facts about this request's customer_id (feature service support_chat_context, "
        'from the feature store; "unknown" = no value):',
        "- plan_tier: enterprise",
        "- tenure_months: 4",
        "- open_tickets: unknown",
    ]
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}],
    }
    out = enrich("chat.completions", body, READ, values)
    assert [m["role"] for m in out["messages"]] == ["system", "system", "user"]
    assert out["messages"][0]["content"] == "Be kind."  # the caller's instructions stay first
    assert body["messages"][1]["role"] == "user"  # the caller's object is not changed
    assert enrich("completions", {"prompt": "Q"}, READ, values)["prompt"].endswith("\n\nQ")
    assert enrich("embeddings", {"input": "x"}, READ, values)["features"] == values


def test_feature_store_yaml_points_feast_at_the_environments_stores() -> None:
    assert (
        redis_connection_string("rediss://cache.example.com:6379/0")
        == "cache.example.com:6379,db=0,ssl=true"
    )
    assert redis_connection_string("redis://127.0.0.1:6390") == "127.0.0.1:6390"
    doc = yaml.safe_load(
        feature_store_yaml("p", registry="s3://b/registry/p.db", redis_url="redis://r:6379/2")
    )
    assert doc["online_store"] == {"type": "redis", "connection_string": "r:6379,db=2"}
    assert doc["offline_store"] == {"type": "file"} and doc["entity_key_serialization_version"] == 3
    with pytest.raises(ValueError):
        redis_connection_string("http://x")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="not a Feast project name"):
        UseCaseFeatures.model_validate(
            {
                "project": "customer-care",
                "service": "s",
                "entity": {"name": "id", "from": "body", "field": "user"},
            }
        )
    with pytest.raises(ValueError, match="header"):
        UseCaseFeatures.model_validate(
            {
                "project": "p",
                "service": "s",
                "entity": {"name": "id", "from": "cookie", "field": "u"},
            }
        )
    with pytest.raises(ValueError, match="5-field cron"):
        FeatureStoreConfig(projects=["p"], materialize_schedule="hourly")
    with pytest.raises(ValueError, match="minReplicas"):
        FeatureStoreConfig(projects=["p"], min_replicas=3, max_replicas=2)
    spec = {
        "name": "bot", "team": "t", "pool": "p",
        "deployments": [{"name": "d", "model": "m", "source": "s3://b/m", "kind": "batch", "gpu": "cpu"}],
        "features": {"project": "p", "service": "s", "entity": {"name": "id", "from": "body", "field": "user"}},
    }  # fmt: skip
    with pytest.raises(ValueError, match="needs a `gateway:` section"):
        UseCaseSpec.model_validate(spec)


def test_routes_file_with_features_must_say_where_the_store_is() -> None:
    routes = {
        "backends": {"b": {"url": "http://127.0.0.1:1/v1"}},
        "routes": {"r": {"backends": [{"backend": "b"}], "features": READ.model_dump(mode="json")}},
    }
    with pytest.raises(ConfigError, match="feature_store"):
        parse_config(routes)
    cfg = parse_config({**routes, "feature_store": {"redis_url": "redis://127.0.0.1:6379/0"}})
    assert cfg.routes["r"].features == READ
    with pytest.raises(ConfigError, match="redis://"):
        parse_config({**routes, "feature_store": {"redis_url": "http://x"}})


def test_stack_refuses_features_without_the_project() -> None:
    from tandem.stack import read_stack_file

    flat = read_stack_file("dev")
    flat.pop("tandem:featureStore")
    from tandem.stack import from_flat

    with pytest.raises(ConfigError, match="needs the stack's feature store"):
        from_flat("dev", flat)
    flat["tandem:featureStore"] = {"projects": ["other"]}
    with pytest.raises(ConfigError, match="allowed: other"):
        from_flat("dev", flat)


def _view(
    name: str, ttl: int, source: str = "batch", push: str | None = None, **features: str
) -> View:
    return View(name, ["customer_id"], ttl, True, source, push, features or {"x": "Int64"})


REPO = Repo(
    "customer_care",
    [],
    entities={"customer": ("customer_id", "STRING")},
    views={
        "profile": _view("profile", 86400, plan="String", blob="Map"),
        "activity": _view(
            "activity", 3600, "push", "activity_push", tickets="Int64", plan="String"
        ),
    },
    services={
        "ok": [("profile", ["plan"]), ("activity", ["tickets"])],
        "clash": [("profile", ["plan"]), ("activity", ["plan"])],
        "odd": [("profile", ["blob"])],
    },
)


def test_plan_rules_on_a_repository() -> None:
    assert check_repo(REPO, "*/15 * * * *") == []
    problems = check_repo(REPO, "0 */2 * * *")  # every 2 h: the 1 h batch TTL... is a push view
    assert problems == []
    short = Repo("p", [], views={"v": _view("v", 600)})
    assert "not longer than the materialization interval" in check_repo(short, "*/15 * * * *")[0]
    assert "has no ttl" in check_repo(Repo("p", [], views={"v": _view("v", 0)}), "*/15 * * * *")[0]
    assert schedule_interval_s("*/5 * * * *") == 300 and schedule_interval_s("0 3 * * *") == 86400


def test_use_case_reads_resolve_against_the_services() -> None:
    def spec(service: str, entity: str = "customer_id") -> UseCaseFeatures:
        return UseCaseFeatures.model_validate(
            {
                "project": "customer_care",
                "service": service,
                "entity": {"name": entity, "from": "body", "field": "user"},
            }
        )

    read, problems = feature_read(REPO, "bot", spec("ok"))
    assert problems == [] and read is not None and read.feature_names == ["plan", "tickets"]
    assert "not a feature service" in feature_read(REPO, "bot", spec("nope"))[1][0]
    assert "several features named ['plan']" in feature_read(REPO, "bot", spec("clash"))[1][0]
    assert "of Feast type Map" in feature_read(REPO, "bot", spec("odd"))[1][0]
    assert "is keyed by ['customer_id']" in feature_read(REPO, "bot", spec("ok", "user_id"))[1][0]


def test_freshness_alerts_fire_when_stale_and_stay_quiet_when_fresh(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found: apt-get install -y prometheus")
    (tmp_path / "rules.yaml").write_text(rules.rule_file([REPO], annotations=False))
    doc = rules.unit_tests("rules.yaml", REPO)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for args in (("check", "rules", "rules.yaml"), ("test", "rules", "tests.yaml")):
        proc = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = [c for t in doc["tests"] for c in t["alert_rule_test"]]
    fired = {a["exp_labels"]["feature_view"] for c in checks for a in c["exp_alerts"]}
    assert fired == {"profile", "activity"}
    assert sum(1 for c in checks if not c["exp_alerts"]) == 3  # fresh x2, push keeps it fresh
    expr = rules.stale_expr("customer_care", REPO.views["activity"])
    assert 'job="feast-customer-care-metrics"' in expr and "[3600s]" in expr


def test_plan_without_the_feast_environment_says_how_to_build_it() -> None:
    """Exit 3 (the environment), one line naming `make feast-env`, no traceback."""
    import os
    import sys

    env = {**os.environ, "TANDEM_FEAST_PYTHON": "/nonexistent/feast/bin/python"}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "plan", "--stack", "dev"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "make feast-env" in proc.stderr and "Traceback" not in proc.stderr
