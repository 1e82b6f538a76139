"""Feature store rules: the online store encrypted, the feature servers private, and every
feature view materialized with an online TTL.

Features are customer data (plan, tickets, spend) joined to a person's id: an online store
readable in plaintext on the network or a feature server reachable from the internet leaks them
one HMGET or one `/get-online-features` at a time. A view without a TTL or without a
materialization schedule silently serves values of any age to a model that was trained on fresh
ones. The rules read what components/feature_store.py writes: each project's ConfigMap
(`feature_store.yaml`, and `tandem-summary.json`: every view's TTL, online flag and source, from
Feast's plan of the definitions), the feature-server Helm releases, Services and Ingresses, and
the materialization CronJobs. At rest, the online store's ElastiCache group is checked by
`elasticache-encryption`, the registry and offline bucket by `s3-encrypted` and `s3-private`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from policies.framework import (
    Finding,
    ResourceView,
    each,
    get,
    is_list,
    k8s_labels,
    resource_rule,
    stack_rule,
)
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels, pins

COMPONENT = "feature-store"
LABEL_PROJECT = f"{labels.DOMAIN}/feature-project"
STORE_YAML = "feature_store.yaml"
SUMMARY = "tandem-summary.json"
MATERIALIZE = "materialize"


def _strings(obj: Any) -> Iterator[str]:
    """Every string inside a property tree (engine proxies are Mappings and sequences too)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _strings(value)
    elif is_list(obj):
        for item in obj:
            yield from _strings(item)


def _is_feature_store(res: ResourceView) -> bool:
    return k8s_labels(res).get(labels.LABEL_COMPONENT) == COMPONENT


def _repo_config_maps(resources: Sequence[ResourceView]) -> Iterator[ResourceView]:
    for cm in each(resources, (c.CONFIG_MAP,)):
        if _is_feature_store(cm) and isinstance(get(cm.props, "data", SUMMARY), str):
            yield cm


@resource_rule(
    "feature-store-online-encrypted",
    "Feast's online store is reached over TLS (ElastiCache with transit and at-rest encryption).",
    "high",
    "Set tandem:featureStore.redis: elasticache (TLS in transit, encrypted at rest; the "
    "connection string then carries ssl=true). The in-cluster Redis is plaintext: for "
    "non-production stacks only.",
    (c.CONFIG_MAP,),
    tags=("security", "data", "features"),
)
def online_store_encrypted(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not _is_feature_store(res):
        return
    text = get(res.props, "data", STORE_YAML)
    if not isinstance(text, str):  # not a feature repo ConfigMap, or unknown during preview
        return
    try:
        store = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        yield f"ConfigMap '{res.name}' holds a feature_store.yaml that is not YAML"
        return
    online = store.get("online_store") or {}
    if online.get("type") != "redis":
        yield f"feature project '{store.get('project')}' uses online store {online.get('type')!r}, not Redis"
        return
    params = {p.strip() for p in str(online.get("connection_string", "")).split(",")}
    if "ssl=true" not in params:
        yield (
            f"feature project '{store.get('project')}' reaches its online store without TLS "
            f"({online.get('connection_string')}): customer features cross the network in "
            "plaintext"
        )


def _service_type(values: Any) -> str:
    return str(get(values, "service", "type", default="ClusterIP"))


@stack_rule(
    "feature-store-private",
    "Feature servers have no public endpoint: ClusterIP Services only, no Ingress to them.",
    "critical",
    "Keep the feast-feature-server release's service.type ClusterIP, add no LoadBalancer or "
    "NodePort Service and no Ingress for the feature servers; producers push from inside the "
    "cluster (label their namespace tandem.dev/feature-store-client=true).",
    tags=("security", "features"),
)
def feature_store_private(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    findings = []
    servers: set[str] = set()
    for rel in each(resources, (c.HELM_RELEASE,)):
        chart = str(get(rel.props, "chart", default=""))
        if not chart.endswith(pins.FEAST_FEATURE_SERVER.name):
            continue
        name = str(get(rel.props, "name", default=rel.name))
        servers.add(name)
        kind = _service_type(get(rel.props, "values", default={}))
        if kind != "ClusterIP":
            findings.append(
                Finding(f"feature server release '{name}' exposes a {kind} Service", rel.urn)
            )
    for svc in each(resources, (c.SERVICE,)):
        kind = str(get(svc.props, "spec", "type", default="ClusterIP"))
        if _is_feature_store(svc) and kind in ("LoadBalancer", "NodePort"):
            findings.append(Finding(f"feature store Service '{svc.name}' is a {kind}", svc.urn))
    for ing in each(resources, (c.INGRESS,)):
        names = set(_strings(get(ing.props, "spec", default={})))
        hits = sorted(servers & names)
        if hits or _is_feature_store(ing):
            findings.append(
                Finding(f"Ingress '{ing.name}' exposes feature servers {hits or ''}", ing.urn)
            )
    return findings


def _materializes(job: ResourceView) -> str | None:
    """The feature project a CronJob materializes (None when it runs something else)."""
    if not _is_feature_store(job):
        return None
    containers = get(
        job.props, "spec", "jobTemplate", "spec", "template", "spec", "containers", default=[]
    )
    if not any("materialize" in text for text in _strings(containers)):
        return None
    return str(k8s_labels(job).get(LABEL_PROJECT, ""))


@stack_rule(
    "feature-materialization-ttl",
    "Every feature view is online with a TTL, and its project has a materialization schedule.",
    "high",
    "Give each FeatureView ttl=timedelta(...) and online=True in stacks/features/<project>/, "
    "and keep the project in tandem:featureStore.projects (Tandem adds its materialization "
    "CronJob); `tandem plan` also checks the TTL against the schedule.",
    tags=("data", "features"),
)
def materialization_ttl(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    findings = []
    scheduled = {p for job in each(resources, (c.CRON_JOB,)) if (p := _materializes(job))}
    for cm in _repo_config_maps(resources):
        try:
            summary = json.loads(get(cm.props, "data", SUMMARY))
        except ValueError:
            findings.append(Finding(f"ConfigMap '{cm.name}' holds an unreadable summary", cm.urn))
            continue
        project = summary.get("project") or k8s_labels(cm).get(LABEL_PROJECT)
        for view in summary.get("views", []):
            if not view.get("online"):
                findings.append(
                    Finding(f"feature view {project}/{view.get('name')} is not online", cm.urn)
                )
            if not view.get("ttl_s"):
                findings.append(
                    Finding(f"feature view {project}/{view.get('name')} has no online TTL", cm.urn)
                )
        if project not in scheduled:
            findings.append(
                Finding(
                    f"feature project '{project}' has no materialization CronJob: its views "
                    "would only ever hold what was pushed",
                    cm.urn,
                )
            )
    return findings


RULES = [online_store_encrypted, feature_store_private, materialization_ttl]
