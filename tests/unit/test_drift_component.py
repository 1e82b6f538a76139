"""The DriftMonitor under mocks, in both shipped stacks (support-chatbot has `monitoring:`)."""

from __future__ import annotations

import json

import pytest
import yaml

from drift import rules

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_drift_monitor_runs_the_service_on_the_monitored_use_cases(
    stack_resources, stack
) -> None:
    res = stack_resources[stack]
    config = res.one("kubernetes:core/v1:ConfigMap", "drift-monitor-config").inputs
    doc = yaml.safe_load(config["data"]["drift.yaml"])
    assert [u["name"] for u in doc["use_cases"]] == ["support-chatbot"]
    assert doc["use_cases"][0]["team"] == "customer-care"
    assert doc["use_cases"][0]["monitoring"]["sample_rate"] == 0.1
    spec = res.one(DEPLOYMENT, "drift-monitor-deploy").inputs["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["drift", "serve"]
    assert any(a.startswith("--gateway=http://drift-monitor-gateway-pods.") for a in args)
    assert "--controller=http://rollout-controller.tandem-lifecycle.svc:8095" in args
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_gateway_pod_is_polled_and_may_be(stack_resources) -> None:
    res = stack_resources["prod"]
    pods = res.one("kubernetes:core/v1:Service", "drift-monitor-gateway-pods").inputs
    assert pods["spec"]["clusterIP"] == "None"
    gw = res.one(DEPLOYMENT, "gateway").inputs["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"].items() <= gw.items()
    policy = res.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "gateway").inputs
    allowed = json.dumps(policy["spec"]["ingress"])
    assert "tandem-lifecycle" in allowed


def test_the_alerts_are_a_prometheus_rule_and_the_service_is_scraped(stack_resources) -> None:
    res = stack_resources["prod"]
    rule = res.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "drift-monitor-rules")
    names = [r["alert"] for g in rule.inputs["spec"]["groups"] for r in g["rules"]]
    assert names == [rules.DETECTED, rules.NO_REFERENCE, rules.DOWN]
    res.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "drift-monitor-monitor")
