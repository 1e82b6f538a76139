"""`tandem:tracing`: the config's errors, the Tracing component under mocks (collector and
Phoenix charts, pinned; Secret; NetworkPolicies), and what every key changes in both stacks: the
gateway's routes file, the RayServices' environment, the collector's and Phoenix's values."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from components.tracing import (
    AUTH_SECRET,
    Tracing,
    TracingArgs,
    collector_values,
    derive,
    phoenix_values,
    routes_tracing,
    serve_env,
)
from gateway.config import parse_config as parse_routes
from observability import tracing as otel
from tandem.stack import from_flat, read_stack_file
from vocabulary import labels, pins
from vocabulary.config import TracingConfig, parse_config
from vocabulary.errors import ConfigError

RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def release(res, chart: pins.Chart):
    return next(r for r in res.of_type(RELEASE) if chart.name in json.dumps(r.inputs["chart"]))


def tracing_errors(tracing: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({"environment": "dev", "tracing": tracing})
    return str(err.value)


# -- config ------------------------------------------------------------------------------------


def test_errors_name_the_field_and_what_is_allowed() -> None:
    assert "tracing.sampling" in tracing_errors({"sampling": 1.5})
    msg = tracing_errors({"enabled": True, "backend": "none"})
    assert "backend" in msg and "allowed: backend 'phoenix', or set export" in msg
    msg = tracing_errors({"backend": "langfuse"})
    assert "tracing.backend" in msg and "'phoenix' or 'none'" in msg
    msg = tracing_errors({"capture": {"redact": ["ssn"]}})
    assert "tracing.capture.redact[0]" in msg and "'email', 'phone', 'card' or 'key'" in msg
    assert "is not a regular expression" in tracing_errors({"capture": {"patterns": ["("]}})
    assert "is not an http(s):// URL" in tracing_errors({"export": {"endpoint": "otlp:4317"}})
    assert "tracing.export.protocol" in tracing_errors(
        {"export": {"endpoint": "https://x:4317", "protocol": "thrift"}}
    )
    assert "tracing.retentionDays" in tracing_errors({"retentionDays": 0})
    assert "tracing.unknownKey" in tracing_errors({"unknownKey": 1})


def test_capture_must_name_a_route_of_the_stack() -> None:
    flat = copy.deepcopy(read_stack_file("dev"))
    flat["tandem:tracing"]["capture"]["routes"] = ["support-chat", "suport-chat"]
    with pytest.raises(ConfigError) as err:
        from_flat("dev", flat)
    msg = str(err.value)
    assert "tracing.capture.routes[1]: 'suport-chat' is not a gateway route of this stack" in msg
    assert "allowed: " in msg and "support-chat" in msg and "claude-sonnet-4-6" in msg


def test_off_by_default_and_nothing_is_set() -> None:
    cfg = TracingConfig()
    assert not cfg.enabled
    assert routes_tracing(cfg).exporter == "none"
    assert serve_env(cfg, "uc-serve") == []


def test_the_routes_file_section_carries_every_gateway_key() -> None:
    cfg = TracingConfig.model_validate(
        {
            "enabled": True,
            "sampling": 0.25,
            "capture": {
                "routes": ["chat"],
                "redact": ["email"],
                "patterns": ["C-\\d+"],
                "maxChars": 100,
            },
        }
    )
    section = routes_tracing(cfg)
    assert section.exporter == "otlp" and section.protocol == "http/protobuf"
    assert section.endpoint == otel.collector_http_endpoint()
    assert section.sampling == 0.25
    assert section.capture.model_dump() == {
        "routes": ["chat"],
        "redact": ["email"],
        "patterns": ["C-\\d+"],
        "max_chars": 100,
    }
    # the gateway accepts it, and refuses a capture route it does not serve
    routes = {
        "backends": {"a": {"url": "http://x/v1"}},
        "routes": {"chat": {"backends": [{"backend": "a"}]}},
    }
    parse_routes({**routes, "tracing": section.model_dump()})
    with pytest.raises(Exception, match=r"tracing.capture.routes\[0\]: unknown route 'other'"):
        parse_routes({**routes, "tracing": {"capture": {"routes": ["other"]}}})


def test_ray_serve_exports_through_the_collector_at_the_stack_sampling() -> None:
    env = {e["name"]: e["value"] for e in serve_env(TracingConfig(enabled=True, sampling=0.1), "s")}
    assert env == {
        "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": "serving.tracing:otlp_processors",
        "RAY_SERVE_TRACING_SAMPLING_RATIO": "0.1",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otel.collector_endpoint(),
        "OTEL_SERVICE_NAME": "s",
    }


def test_serves_exporter_is_what_ray_serve_accepts(monkeypatch) -> None:
    from ray.serve._private.tracing_utils import (
        _validate_tracing_exporter,
        _validate_tracing_exporter_processors,
    )

    from serving.tracing import otlp_processors

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1")
    _validate_tracing_exporter(otlp_processors)
    processors = otlp_processors()
    _validate_tracing_exporter_processors(processors)
    for p in processors:
        p.shutdown()


# -- the collector's and Phoenix's values ------------------------------------------------------


def test_collector_to_phoenix_and_the_users_endpoint() -> None:
    cfg = TracingConfig.model_validate(
        {
            "enabled": True,
            "collectorReplicas": 3,
            "export": {
                "endpoint": "https://otlp.example.com",
                "protocol": "http",
                "authSecret": {"name": "vendor", "key": "token"},
            },
        }
    )
    values = collector_values(TracingArgs(config=cfg))
    assert values["image"] == {
        "repository": "otel/opentelemetry-collector-k8s",
        "tag": pins.OTEL_COLLECTOR.app_version,
    }
    assert values["mode"] == "deployment" and values["replicaCount"] == 3
    conf = values["alternateConfig"]
    assert conf["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["otlp/backend", "otlphttp/user"],
    }
    backend = conf["exporters"]["otlp/backend"]
    assert backend["endpoint"] == otel.phoenix_endpoint()
    assert backend["headers"] == {"authorization": "Bearer ${env:PHOENIX_API_KEY}"}
    user = conf["exporters"]["otlphttp/user"]
    assert user["endpoint"] == "https://otlp.example.com"
    assert user["headers"] == {"authorization": "${env:OTLP_EXPORT_AUTHORIZATION}"}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in values["extraEnvs"]}
    assert env == {
        "PHOENIX_API_KEY": {"name": AUTH_SECRET, "key": "PHOENIX_ADMIN_SECRET"},
        "OTLP_EXPORT_AUTHORIZATION": {"name": "vendor", "key": "token"},
    }
    # nothing that would print spans (text included) to a log
    assert "debug" not in json.dumps(conf["exporters"])
    grpc = TracingConfig.model_validate(
        {"enabled": True, "backend": "none", "export": {"endpoint": "http://c:4317"}}
    )
    conf = collector_values(TracingArgs(config=grpc))["alternateConfig"]
    assert (
        list(conf["exporters"]) == ["otlp/user"] and "headers" not in conf["exporters"]["otlp/user"]
    )


def test_phoenix_keeps_traces_for_retention_days_on_its_volume() -> None:
    cfg = TracingConfig(enabled=True, retention_days=7, storage_gib=33)
    values = phoenix_values(TracingArgs(config=cfg))
    assert values["database"]["defaultRetentionPolicyDays"] == 7
    assert values["persistence"] == {"enabled": True, "size": "33Gi"}
    assert values["postgresql"] == {"enabled": False} and values["replicaCount"] == 1
    assert values["auth"]["enableAuth"] is True and values["auth"]["createSecret"] is False
    keys = {s["key"] for s in values["auth"]["secret"]}
    assert keys == {"PHOENIX_SECRET", "PHOENIX_ADMIN_SECRET"}


def test_the_component_under_mocks(run_program) -> None:
    cfg = TracingConfig(enabled=True)
    res = run_program(lambda: Tracing("tracing", TracingArgs(config=cfg, secret="s3cret")))
    for chart in (pins.OTEL_COLLECTOR, pins.PHOENIX):
        rel = release(res, chart)
        assert rel.inputs["version"] == chart.version
        assert rel.inputs["namespace"] == labels.NS_TRACING
    secret = res.one(SECRET)
    string_data = secret.inputs["stringData"]
    assert "4dabf18193072939515e22adb298388d" in string_data, "must be a Pulumi secret"
    data = string_data["value"]
    assert data == {
        "PHOENIX_SECRET": derive("s3cret", "phoenix-session"),
        "PHOENIX_ADMIN_SECRET": derive("s3cret", "phoenix-admin"),
    }
    assert data["PHOENIX_SECRET"] != data["PHOENIX_ADMIN_SECRET"]
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in res.of_type(NETPOL)}
    sources = policies["collector-netpol"]["ingress"][0]["from"]
    allowed = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources
    }
    assert allowed == {labels.NS_GATEWAY, labels.NS_SERVING, labels.NS_BATCH}
    assert policies["phoenix-netpol"]["ingress"][0]["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "opentelemetry-collector",
                    "app.kubernetes.io/instance": otel.COLLECTOR_RELEASE,
                }
            }
        }
    ]


def test_phoenix_needs_the_stack_secret_and_none_needs_no_phoenix(run_program) -> None:
    with pytest.raises(ValueError, match="tandem:tracingSecret"):
        run_program(lambda: Tracing("tracing", TracingArgs(config=TracingConfig(enabled=True))))
    cfg = TracingConfig.model_validate(
        {"enabled": True, "backend": "none", "export": {"endpoint": "https://o:4317"}}
    )
    res = run_program(lambda: Tracing("tracing", TracingArgs(config=cfg)))
    charts = [json.dumps(r.inputs["chart"]) for r in res.of_type(RELEASE)]
    assert len(charts) == 1 and pins.OTEL_COLLECTOR.name in charts[0]
    assert res.of_type(SECRET) == []


# -- both shipped stacks ---------------------------------------------------------------------------


def gateway_routes(res) -> dict:
    cm = res.one("kubernetes:core/v1:ConfigMap", "gateway-routes")
    return yaml.safe_load(cm.inputs["data"]["routes.yaml"])


def ray_env(res) -> list[dict]:
    envs = []
    for rs in res.of_type("kubernetes:ray.io/v1:RayService"):
        head = rs.inputs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        envs.append({e["name"]: e.get("value") for e in head["containers"][0]["env"]})
    return envs


@pytest.mark.parametrize(
    ("stack", "sampling", "capture", "retention", "exporters"),
    [
        ("dev", 1.0, ["support-chat"], 14, ["otlp/backend"]),
        ("prod", 0.1, [], 30, ["otlp/backend", "otlp/user"]),
    ],
)
def test_both_stacks_plan_the_collector_and_phoenix(
    stack_resources, stack, sampling, capture, retention, exporters
) -> None:
    res = stack_resources[stack]
    collector, phoenix = release(res, pins.OTEL_COLLECTOR), release(res, pins.PHOENIX)
    conf = collector.inputs["values"]["alternateConfig"]
    assert sorted(conf["exporters"]) == exporters
    assert phoenix.inputs["values"]["database"]["defaultRetentionPolicyDays"] == retention
    tracing = gateway_routes(res)["tracing"]
    assert tracing["exporter"] == "otlp" and tracing["protocol"] == "http/protobuf"
    assert tracing["endpoint"] == otel.collector_http_endpoint()
    assert tracing["sampling"] == sampling and tracing["capture"]["routes"] == capture
    envs = ray_env(res)
    assert envs and all(
        e["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"] == "serving.tracing:otlp_processors"
        and e["RAY_SERVE_TRACING_SAMPLING_RATIO"] == str(sampling)
        for e in envs
    )
