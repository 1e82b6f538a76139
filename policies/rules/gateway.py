"""Gateway and exposure rules: authentication on, no plaintext keys, TLS on public ingress.

The gateway holds provider keys and fronts every model; an unauthenticated gateway is an open
proxy to paid APIs, and a key in a ConfigMap is readable by anyone with `get configmaps`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from policies.framework import ResourceView, as_list, get, is_list, k8s_labels, resource_rule
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels

# A name that ends in a secret word (HF_TOKEN, DB_PASSWORD, CLIENT_SECRET), not one that merely
# starts with it (token_budget, secret_name, api_key_env name references).
SECRET_NAME = re.compile(
    r"(^|[_.-])(api[_-]?key|secret|token|passw(or)?d|credentials?|private[_-]?key)$", re.I
)
SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{20,}|sk-ant-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}"
    r"|xox[abp]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{36}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"  # a Slack webhook URL is its credential
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@)"  # credentials in a URL: rediss://:pw@host
)
# Keys of Helm values that hold credentials (Alertmanager receivers, chart-level passwords).
SECRET_VALUE_KEYS = re.compile(
    r"^(api_url|routing_key|service_key|auth_password|password|webhook_url|url_secret|token)$"
)


def _secret_key_value(key: str, value: Any) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    if SECRET_VALUE.search(value):
        return True
    return bool(SECRET_NAME.search(key))


def _helm_value_secrets(values: Any, path: str = "values") -> Iterator[str]:
    """Paths in Helm values that hold a credential: Helm stores values in the release Secret
    and Pulumi in its state in plaintext, and `helm get values` prints them to anyone allowed."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            where = f"{path}.{key}"
            if isinstance(value, str) and value.strip():
                if SECRET_VALUE.search(value) or (
                    SECRET_VALUE_KEYS.match(str(key)) and not value.startswith(("/", "$"))
                ):
                    yield where
            else:
                yield from _helm_value_secrets(value, where)
    elif is_list(values):
        for i, item in enumerate(values):
            yield from _helm_value_secrets(item, f"{path}[{i}]")


@resource_rule(
    "no-plaintext-secrets",
    "No API keys, tokens, webhook URLs or passwords in ConfigMaps, Helm values or literal "
    "container env values.",
    "critical",
    "Move the value into a Kubernetes Secret (or AWS Secrets Manager + External Secrets) and "
    "reference it with env.valueFrom.secretKeyRef / a mounted Secret; gateway configs name the "
    "environment variable (api_key_env) or store key hashes (sha256) only; Alertmanager receivers "
    "live in the Secret Tandem renders (alertmanagerSpec.configSecret), never in chart values.",
    (c.CONFIG_MAP, c.HELM_RELEASE, *c.WORKLOAD_TYPES),
    tags=("security", "gateway"),
)
def no_plaintext_secrets(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if res.type == c.HELM_RELEASE:
        for where in _helm_value_secrets(get(res.props, "values", default={})):
            yield f"Helm release '{res.name}' {where} holds a credential in plaintext values"
        return
    if res.type == c.CONFIG_MAP:
        for key, value in (get(res.props, "data", default={}) or {}).items():
            if isinstance(value, str) and SECRET_VALUE.search(value):
                yield f"ConfigMap '{res.name}' key {key} contains what looks like a credential"
            elif _secret_key_value(str(key), value) and "\n" not in value:
                yield f"ConfigMap '{res.name}' key {key} holds a secret-named value in plaintext"
        return
    for where, spec in c.pod_specs(res):
        for ctr in c.containers(spec):
            for env in as_list(get(ctr, "env")):
                name, value = str(get(env, "name", default="")), get(env, "value")
                if _secret_key_value(name, value):
                    yield f"{res.name} {where}/{get(ctr, 'name')}: env {name} is a literal secret"


def _gateway_configs(res: ResourceView) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key, value in (get(res.props, "data", default={}) or {}).items():
        if not (isinstance(value, str) and str(key).endswith((".yaml", ".yml", ".json"))):
            continue
        try:
            doc = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        if isinstance(doc, Mapping) and "routes" in doc and "backends" in doc:
            yield str(key), doc


@resource_rule(
    "gateway-auth",
    "The AI gateway requires API keys (keys or keys_file configured).",
    "critical",
    "Configure keys (sha256 digests) or keys_file (mounted from a Secret) in the gateway config; "
    "with neither, the gateway serves anyone who can reach it, on your provider bill.",
    (c.CONFIG_MAP,),
    tags=("security", "gateway"),
)
def gateway_auth(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(k8s_labels(res), labels.LABEL_COMPONENT) not in (None, "gateway"):
        return
    for key, doc in _gateway_configs(res):
        if not as_list(doc.get("keys")) and not doc.get("keys_file"):
            yield f"gateway config '{res.name}/{key}' has no keys and no keys_file: authentication is off"


@resource_rule(
    "ingress-tls",
    "Internet-facing Ingresses terminate TLS.",
    "critical",
    "Add spec.tls with a certificate Secret (cert-manager) or, on the AWS Load Balancer Controller, "
    "alb.ingress.kubernetes.io/certificate-arn with listen-ports HTTPS:443; or make it internal.",
    (c.INGRESS,),
    tags=("security", "gateway", "network"),
)
def ingress_tls(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    ann = get(res.props, "metadata", "annotations", default={})
    if str(get(ann, "alb.ingress.kubernetes.io/scheme", default="")).lower() == "internal":
        return
    if as_list(get(res.props, "spec", "tls")) or get(
        ann, "alb.ingress.kubernetes.io/certificate-arn"
    ):
        return
    yield f"Ingress '{res.name}' serves plaintext HTTP to the internet (no spec.tls / certificate)"


def _cache_redis_urls(doc: Mapping[str, Any]) -> list[str]:
    cache = doc.get("cache")
    if not isinstance(cache, Mapping):
        return []
    url = cache.get("redis_url") or get(doc, "redis", "url")
    return [str(url)] if url else []


@resource_rule(
    "prompt-store-encrypted",
    "Production gateways keep their response cache (prompts and completions) in a Redis reached "
    "over TLS, not in an unencrypted in-cluster Redis.",
    "high",
    "Set tandem:gateway.redis: elasticache (encrypted in transit and at rest, Multi-AZ) or point "
    "cache.redis_url at a rediss:// endpoint; an in-cluster Redis keeps prompts on an unencrypted "
    "emptyDir and serves them in plaintext inside the cluster.",
    (c.CONFIG_MAP,),
    production_only=True,
    tags=("security", "gateway", "data"),
)
def prompt_store_encrypted(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(k8s_labels(res), labels.LABEL_COMPONENT) not in (None, "gateway"):
        return
    for key, doc in _gateway_configs(res):
        for url in _cache_redis_urls(doc):
            if not url.startswith("rediss://"):
                yield (
                    f"gateway config '{res.name}/{key}' caches prompts and completions in "
                    f"{url.split('@')[-1]} without TLS"
                )


TRACE_REDACTION = ("email", "phone", "card", "key")  # gateway/redact.py's kinds


@resource_rule(
    "trace-text-redacted",
    "A gateway that records prompt and response text on its trace spans redacts emails, phone "
    "numbers, card numbers and keys before the text leaves it.",
    "high",
    "Keep tracing.capture.redact at its default (email, phone, card, key) in tandem:tracing, or "
    "take the route out of tracing.capture.routes; captured text goes to the trace backend, its "
    "volume and any export endpoint, which are not built to hold customer data unredacted.",
    (c.CONFIG_MAP,),
    tags=("security", "gateway", "data"),
)
def trace_text_redacted(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(k8s_labels(res), labels.LABEL_COMPONENT) not in (None, "gateway"):
        return
    for key, doc in _gateway_configs(res):
        capture = get(doc, "tracing", "capture", default={}) or {}
        routes = as_list(get(capture, "routes", default=[]))
        if not routes:
            continue
        kinds = get(capture, "redact", default=list(TRACE_REDACTION))
        missing = [k for k in TRACE_REDACTION if k not in as_list(kinds)]
        if missing:
            yield (
                f"gateway config '{res.name}/{key}' records the text of routes "
                f"{', '.join(map(str, routes))} without redacting {', '.join(missing)}"
            )


RULES = [
    no_plaintext_secrets,
    gateway_auth,
    ingress_tls,
    prompt_store_encrypted,
    trace_text_redacted,
]
