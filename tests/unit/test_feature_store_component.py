"""The FeatureStore component in both shipped stacks (under mocks), and the policies that guard
it: what `pulumi up` would create for the customer_care project, and each mistake a policy must
catch (plaintext online store, a public feature server, a view without TTL or schedule)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json

import pytest
import yaml

from components.feature_store import SERVER_PORT, server_name
from features import rules
from policies.harness import evaluate
from vocabulary import labels, pins

NS = labels.NS_FEATURES
SERVER = server_name("customer_care")
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
CRON_JOB = "kubernetes:batch/v1:CronJob"


def _feature(stack_resources, stack: str, token: str, name: str):
    return stack_resources[stack].one(token, name)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_feature_server_runs_the_pinned_chart_privately_with_metrics(
    stack_resources, stack
) -> None:
    release = _feature(stack_resources, stack, RELEASE, "feature-store-customer_care-server")
    assert release.inputs["chart"] == pins.FEAST_FEATURE_SERVER.name
    assert release.inputs["version"] == pins.FEAST_VERSION
    assert release.inputs["repositoryOpts"]["repo"] == pins.FEAST_FEATURE_SERVER.repo
    values = release.inputs["values"]
    assert values["image"] == {
        "repository": "quay.io/feastdev/feature-server",
        "tag": pins.FEAST_VERSION,
    }
    assert values["service"]["type"] == "ClusterIP"
    assert "--metrics" in values["commandArgs"] and values["serviceAccount"]["name"] == "feast"
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    store = yaml.safe_load(base64.b64decode(values["feature_store_yaml_base64"]))
    assert store["project"] == "customer_care"
    assert store["registry"]["path"].startswith("s3://") and store["registry"]["path"].endswith(
        "/registry/customer_care.db"
    )
    assert store["online_store"]["connection_string"].endswith(",db=0,ssl=true")  # ElastiCache TLS
    assert store["entity_key_serialization_version"] == 3
    hpa = stack_resources[stack].one(
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", f"feature-store-{SERVER}-hpa"
    )
    assert hpa.inputs["spec"]["scaleTargetRef"]["name"] == SERVER
    assert hpa.inputs["spec"]["minReplicas"] == (1 if stack == "dev" else 2)


def test_definitions_are_applied_by_a_job_named_by_their_hash(stack_resources) -> None:
    res = stack_resources["prod"]
    cm = res.one(CONFIG_MAP, "feature-store-customer_care-repo")
    assert "customers.py" in cm.inputs["data"] and "feature_store.yaml" in cm.inputs["data"]
    summary = json.loads(cm.inputs["data"]["tandem-summary.json"])
    assert {v["name"]: v["ttl_s"] for v in summary["views"]} == {
        "customer_profile": 172800,
        "support_activity": 21600,
    }
    (job,) = [r for r in res.of_type("kubernetes:batch/v1:Job") if "customer_care-apply-" in r.name]
    pod = job.inputs["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][-1]
    assert script.endswith("exec feast apply") and pod["serviceAccountName"] == "feast"
    assert pod["containers"][0]["image"] == pins.FEAST_IMAGE.ref


def test_materialization_runs_on_the_stack_schedule_one_at_a_time(stack_resources) -> None:
    cron = stack_resources["prod"].one(CRON_JOB, "feature-store-customer_care-materialize")
    spec = cron.inputs["spec"]
    assert spec["schedule"] == "*/15 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    script = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert 'feast materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)"' in script


def test_registry_and_offline_store_on_a_private_encrypted_bucket_through_irsa(
    stack_resources,
) -> None:
    res = stack_resources["prod"]
    sa = res.one("kubernetes:core/v1:ServiceAccount", "feature-store-sa")
    assert "eks.amazonaws.com/role-arn" in sa.inputs["metadata"]["annotations"]
    role = res.one("aws:iam/role:Role", "feature-store-irsa")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    cond = trust["Statement"][0]["Condition"]["StringEquals"]
    assert any(v == f"system:serviceaccount:{NS}:feast" for v in cond.values())
    policy = json.loads(
        res.one("aws:iam/rolePolicy:RolePolicy", "feature-store-irsa-s3").inputs["policy"]
    )
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert all("feature-store-bucket" in r for r in resources)  # its own bucket only
    sse = res.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "feature-store-bucket-sse",
    )
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"


def test_online_store_is_its_own_encrypted_redis_and_the_gateway_reads_it(stack_resources) -> None:
    res = stack_resources["prod"]
    group = res.one("aws:elasticache/replicationGroup:ReplicationGroup", "feature-store-redis")
    assert group.inputs["transitEncryptionEnabled"] and group.inputs["atRestEncryptionEnabled"]
    routes = yaml.safe_load(res.one(CONFIG_MAP, "gateway-routes").inputs["data"]["routes.yaml"])
    assert routes["feature_store"]["redis_url"].startswith("rediss://")
    assert routes["feature_store"]["redis_url"] != routes["redis"]["url"]  # not the gateway's
    features = routes["routes"]["support-chat"]["features"]
    assert features["service"] == "support_chat_context" and features["on_missing"] == "skip"
    assert features["entity"] == {"name": "customer_id", "from": "body", "field": "user"}


def test_metrics_are_scraped_once_with_the_label_observability_selects(stack_resources) -> None:
    res = stack_resources["prod"]
    svc = res.one("kubernetes:core/v1:Service", "feature-store-customer_care-metrics")
    assert svc.inputs["metadata"]["labels"][labels.LABEL_COMPONENT] == "feature-store"
    assert svc.inputs["metadata"]["name"] == rules.metrics_job("customer_care")
    assert svc.inputs["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": 8000}]
    monitors = res.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    feast = [
        m
        for m in monitors
        if m.inputs["spec"]["selector"]["matchLabels"].get(labels.LABEL_COMPONENT)
        == "feature-store"
    ]
    assert [m.name for m in feast] == ["feature-store-monitor"]  # observability's own one dropped
    rule = res.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "feature-store-rules")
    alerts = [r for g in rule.inputs["spec"]["groups"] for r in g["rules"]]
    assert {a["labels"]["feature_view"] for a in alerts} == {"customer_profile", "support_activity"}
    assert all(a["labels"]["team"] == "customer-care" for a in alerts)


def test_feature_servers_admit_only_cluster_clients(stack_resources) -> None:
    policy = stack_resources["prod"].one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "feature-store-servers"
    )
    ingress = policy.inputs["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"port": SERVER_PORT, "protocol": "TCP"}]
    names = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in ingress[0]["from"]]
    assert {"kubernetes.io/metadata.name": labels.NS_GATEWAY} in names


# -- policies --------------------------------------------------------------------------------


def _patched(stack_resources, stack: str, token: str, name: str, change) -> list:
    out = []
    for r in stack_resources[stack]:
        if r.type == token and r.name == name:
            inputs = copy.deepcopy(r.inputs)
            change(inputs)
            r = dataclasses.replace(r, inputs=inputs)
        out.append(r)
    return out


def _violations(resources, stack: str = "prod") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for v in evaluate(resources, stack=stack):
        found.setdefault(v.policy, []).append(v.message)
    return found


def test_shipped_stacks_are_clean(stack_resources) -> None:
    for stack in ("dev", "prod"):
        found = _violations(stack_resources[stack], stack)
        assert not {k for k in found if k.startswith("feature")}, found


def test_plaintext_online_store_is_reported(stack_resources) -> None:
    def plaintext(inputs: dict) -> None:
        store = yaml.safe_load(inputs["data"]["feature_store.yaml"])
        store["online_store"]["connection_string"] = "feature-store-redis:6379,db=0"
        inputs["data"]["feature_store.yaml"] = yaml.safe_dump(store)

    found = _violations(
        _patched(stack_resources, "prod", CONFIG_MAP, "feature-store-customer_care-repo", plaintext)
    )
    assert "without TLS" in found["feature-store-online-encrypted"][0]


def test_public_feature_server_is_reported(stack_resources) -> None:
    def public(inputs: dict) -> None:
        inputs["values"]["service"]["type"] = "LoadBalancer"

    found = _violations(
        _patched(stack_resources, "prod", RELEASE, "feature-store-customer_care-server", public)
    )
    assert "exposes a LoadBalancer Service" in found["feature-store-private"][0]


def test_view_without_ttl_or_schedule_is_reported(stack_resources) -> None:
    def no_ttl(inputs: dict) -> None:
        summary = json.loads(inputs["data"]["tandem-summary.json"])
        summary["views"][0]["ttl_s"] = 0
        inputs["data"]["tandem-summary.json"] = json.dumps(summary)

    found = _violations(
        _patched(stack_resources, "prod", CONFIG_MAP, "feature-store-customer_care-repo", no_ttl)
    )
    assert "has no online TTL" in found["feature-materialization-ttl"][0]
    unscheduled = [
        r for r in stack_resources["prod"] if not (r.type == CRON_JOB and "materialize" in r.name)
    ]
    found = _violations(unscheduled)
    assert "no materialization CronJob" in found["feature-materialization-ttl"][0]
