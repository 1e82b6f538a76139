"""The Observability component under Pulumi mocks: pinned charts, monitors, rules, dashboards."""

from __future__ import annotations

import json

import pytest
import yaml

from components.observability import WORKLOAD_MONITORS, Observability, ObservabilityArgs
from observability import dashboards, promql
from tandem import manifests
from tandem.engine import run_under_mocks
from vocabulary import pins
from vocabulary.config import BudgetConfig, GpuPoolConfig, ObservabilityConfig

RELEASE = "kubernetes:helm.sh/v3:Release"
CR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def program(**cfg):
    def run() -> None:
        Observability(
            "obs",
            ObservabilityArgs(
                config=ObservabilityConfig(**cfg),
                pools=[
                    GpuPoolConfig(name="h100", instance_types=["p5.48xlarge"], max_nodes=2),
                    GpuPoolConfig(
                        name="l4", instance_types=["g6.12xlarge"], capacity_type="spot", max_nodes=4
                    ),
                ],
                budget=BudgetConfig(monthly_usd=50_000),
            ),
        )

    return run


@pytest.fixture(scope="module")
def res():
    return run_under_mocks(
        program(
            remote_write_url="https://metrics.example.com/api/v1/write",
            team_budgets_usd={"support": 9000},
            storage_gib=200,
        )
    )


def _release(res, chart: pins.Chart):
    return next(r for r in res.of_type(RELEASE) if r.inputs["chart"] == chart.name)


def test_charts_are_pinned(res) -> None:
    for chart in (pins.KUBE_PROMETHEUS_STACK, pins.DCGM_EXPORTER):
        rel = _release(res, chart)
        assert rel.inputs["version"] == chart.version
        assert rel.inputs["repositoryOpts"]["repo"] == chart.repo


def test_prometheus_selects_monitors_and_rules_from_every_namespace(res) -> None:
    spec = _release(res, pins.KUBE_PROMETHEUS_STACK).inputs["values"]["prometheus"][
        "prometheusSpec"
    ]
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{kind}Selector"] == {} and spec[f"{kind}NamespaceSelector"] == {}
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
    assert spec["retention"] == "15d"
    assert (
        spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
        == "200Gi"
    )
    assert spec["remoteWrite"] == [{"url": "https://metrics.example.com/api/v1/write"}]


def test_kube_state_metrics_exports_the_labels_the_rules_join_on(res) -> None:
    values = _release(res, pins.KUBE_PROMETHEUS_STACK).inputs["values"]
    allow = " ".join(values["kube-state-metrics"]["metricLabelsAllowlist"])
    for key in (*promql.POD_LABEL_KEYS.values(), *promql.NODE_LABEL_KEYS.values()):
        assert key in allow


def test_dcgm_exporter_attributes_pods_and_collects_profiling_metrics(res) -> None:
    values = _release(res, pins.DCGM_EXPORTER).inputs["values"]
    assert values["serviceMonitor"]["honorLabels"] is True  # keep the workload's pod/namespace
    csv = res.one("kubernetes:core/v1:ConfigMap", "obs-dcgm-metrics").inputs["data"]["metrics.csv"]
    for metric in (*promql.DCGM_PROFILING, *promql.DCGM_DEVICE):
        assert f"{metric}," in csv
    assert values["arguments"][1].endswith("metrics.csv")
    assert values["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_one_monitor_per_workload(res) -> None:
    monitors = [r for r in res if r.inputs.get("kind") in ("PodMonitor", "ServiceMonitor")]
    assert sorted(r.name for r in monitors) == sorted(f"obs-monitor-{w}" for w in WORKLOAD_MONITORS)
    for m in monitors:
        assert m.inputs["spec"]["namespaceSelector"] == {"any": True}


def test_rules_and_dashboards_present(res) -> None:
    rule = res.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    groups = {g["name"]: g for g in rule.inputs["spec"]["groups"]}
    assert {"tandem.gpu.recording", "tandem.slo.recording", "tandem.alerts"} <= set(groups)
    alerts = {r["alert"]: r for r in groups["tandem.alerts"]["rules"]}
    assert "vector(9000)" in alerts["TandemTeamBudgetBurn"]["expr"]
    assert "50000" in alerts["TandemPlatformBudgetBurn"]["expr"]
    cost = next(
        r
        for r in groups["tandem.gpu.recording"]["rules"]
        if r["record"] == "tandem:gpu_cost_usd_per_hour:sum"
    )
    assert "p5.48xlarge" in cost["expr"] and '"spot"' in cost["expr"]
    boards = [
        r
        for r in res.of_type("kubernetes:core/v1:ConfigMap")
        if r.name.startswith("obs-dashboard-")
    ]
    assert len(boards) == len(dashboards.all_dashboards())
    for b in boards:
        assert b.inputs["metadata"]["labels"]["grafana_dashboard"] == "1"
        (body,) = b.inputs["data"].values()
        assert json.loads(body)["panels"]


def test_custom_resources_valid_against_crds(res) -> None:
    kinds = {r.inputs.get("kind") for r in res if r.inputs.get("kind")}
    assert kinds >= CR_KINDS
    assert manifests.validate_all(res, "1.31") == []


def test_no_grafana_means_no_dashboards_and_optional_remote_write() -> None:
    res = run_under_mocks(program(grafana=False))
    assert not [
        r
        for r in res.of_type("kubernetes:core/v1:ConfigMap")
        if r.name.startswith("obs-dashboard-")
    ]
    spec = _release(res, pins.KUBE_PROMETHEUS_STACK).inputs["values"]["prometheus"][
        "prometheusSpec"
    ]
    assert "remoteWrite" not in spec


def test_alertmanager_reads_tandems_secret_and_no_credential_is_in_values(stack_resources) -> None:
    """Receivers become Alertmanager's config Secret; the Helm values only name it, so no webhook
    URL, routing key or SMTP password reaches Helm's release Secret or the plan."""
    res = stack_resources["prod"]
    kps = _release(res, pins.KUBE_PROMETHEUS_STACK)
    spec = kps.inputs["values"]["alertmanager"]["alertmanagerSpec"]
    assert spec == {"useExistingSecret": True, "configSecret": "tandem-alertmanager"}
    secret = res.one("kubernetes:core/v1:Secret", "observability-alertmanager")
    assert secret.inputs["metadata"]["name"] == "tandem-alertmanager"
    body = manifests.plain(secret.inputs["stringData"])["alertmanager.yaml"]
    config = yaml.safe_load(body)
    assert {r["name"] for r in config["receivers"]} == {
        "platform-oncall",
        "ml-platform",
        "customer-care",
        "knowledge",
    }
    assert config["route"]["receiver"] == "ml-platform"
    budget = [
        r for r in config["route"]["routes"] if "TandemPlatformBudgetBurn" in r["matchers"][0]
    ]
    assert [r["receiver"] for r in budget] == ["ml-platform", "platform-oncall"]
    # the secret is marked secret on the wire: the engine encrypts it in state
    assert manifests.SECRET_SIG in json.dumps(secret.inputs["stringData"])
    assert "offline-plan-placeholder" not in json.dumps(kps.inputs["values"])


def test_budget_thresholds_become_alerts(res) -> None:
    rule = res.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs["spec"]
    alerts = [
        r
        for g in rule["groups"]
        for r in g["rules"]
        if r.get("alert") == "TandemPlatformBudgetBurn"
    ]
    assert sorted(a["labels"]["threshold"] for a in alerts) == ["0.5", "0.8", "1"]
    assert any("> 25000" in a["expr"] for a in alerts)  # 50 % of the $50k budget


def test_use_case_slos_become_team_routed_alerts(stack_resources) -> None:
    """The use-case files' `slo:` sections are alert targets (they were read by nothing)."""
    rule = stack_resources["prod"].one(
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule", "observability-rules"
    )
    alerts = {
        (r["alert"], r["labels"]["model"]): r
        for g in rule.inputs["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert", "").startswith("TandemDeployment")
    }
    ttft = alerts[("TandemDeploymentTTFTSlo", "support-chat-8b")]
    assert ttft["labels"]["team"] == "customer-care" and ttft["expr"].endswith("> 1")
    assert alerts[("TandemDeploymentITLSlo", "support-chat-8b")]["expr"].endswith("> 0.06")
    embed = alerts[("TandemDeploymentLatencySlo", "all-minilm-l6-v2")]
    assert embed["labels"]["team"] == "knowledge" and embed["expr"].endswith("> 250")
