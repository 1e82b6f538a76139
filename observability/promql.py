"""The metric and label scheme, and the PromQL that attributes GPUs to teams.

A real cluster never puts `team` on a DCGM sample. dcgm-exporter (with pod attribution and
`honorLabels: true` on its ServiceMonitor) labels each GPU with the `pod` and `namespace` using it;
kube-state-metrics says how many GPUs each pod requested, on which `node`, and — through
`kube_pod_labels` / `kube_node_labels` with a `--metric-labels-allowlist` — the Tandem labels of
pods and nodes. Attribution is therefore a join on (namespace, pod) and on node. Recording rules,
dashboards and the FinOps report all build their queries here so the join is written once.
"""

from __future__ import annotations

import re

from vocabulary import labels

# --- metric names (what the exporters really expose) -------------------------------------------
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"
SM_OCCUPANCY = "DCGM_FI_PROF_SM_OCCUPANCY"
TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
POWER = "DCGM_FI_DEV_POWER_USAGE"  # W
XID = "DCGM_FI_DEV_XID_ERRORS"  # last XID code, 0 = none
DCGM_PROFILING = (GR_ENGINE_ACTIVE, SM_ACTIVE, SM_OCCUPANCY, TENSOR_ACTIVE, DRAM_ACTIVE)
DCGM_DEVICE = (FB_USED, FB_FREE, POWER, XID)

KSM_REQUESTS = "kube_pod_container_resource_requests"
KSM_POD_LABELS = "kube_pod_labels"
KSM_NODE_LABELS = "kube_node_labels"
KSM_NODE_CAPACITY = "kube_node_status_capacity"
KSM_GPU_RESOURCE = "nvidia_com_gpu"  # kube-state-metrics' spelling of nvidia.com/gpu

VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_TTFT = "vllm:time_to_first_token_seconds"
VLLM_ITL = "vllm:inter_token_latency_seconds"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE = "vllm:kv_cache_usage_perc"
# Ray Serve's per-replica processing latency (the `batch` kind's request latency), milliseconds
SERVE_LATENCY_MS = "ray_serve_deployment_processing_latency_ms"


def vllm(name: str, **matchers: str) -> str:
    """A selector for a vLLM series whether scraped from vLLM itself (`vllm:*`) or re-exported by
    Ray Serve LLM's metrics agent (`ray_vllm:*`)."""
    extra = "".join(f', {k}="{v}"' for k, v in matchers.items())
    return f'{{__name__=~"(ray_)?{name}"{extra}}}'


GW_REQUESTS = "tandem_gateway_requests_total"
GW_LATENCY = "tandem_gateway_request_duration_seconds"
GW_TTFT = "tandem_gateway_time_to_first_token_seconds"
GW_TOKENS = "tandem_gateway_tokens_total"
GW_COST = "tandem_gateway_cost_usd_total"
GW_FALLBACKS = "tandem_gateway_fallbacks_total"
GW_BREAKER = "tandem_gateway_breaker_state"  # 0 closed, 1 open, 2 half-open
GW_CACHE_HITS = "tandem_gateway_cache_hits_total"
# requests that named a prompt, by version, arm and outcome (rendered | invalid)
GW_PROMPT_RENDERS = "tandem_gateway_prompt_renders_total"
# The rollout controller's own series (lifecycle/metrics.py), by use case (a prompt's rollout:
# `prompt:<name>`).
ROLLOUT_PHASE = "tandem_rollout_phase"  # 1 for the current phase
ROLLOUT_WEIGHT = "tandem_rollout_canary_weight_percent"
ROLLOUT_ANALYSES = "tandem_rollout_analyses_total"  # {outcome}
ROLLOUT_DECISIONS = "tandem_rollout_decisions_total"  # {decision}
ROLLOUT_CHECK = "tandem_rollout_check_value"  # {check}: the canary's last analysed value
ROLLOUT_TIME_TO_DEPLOY = "tandem_rollout_time_to_deploy_seconds"
# Dollars the cache saved ({team, layer}): cached answers priced at their route's backends.
GW_CACHE_SAVED = "tandem_gateway_cache_saved_usd_total"
# The semantic cache's sampled re-check estimate (gateway/cache/metrics.py), 0..1, per replica
# and route ({team, model}); the threshold gauge is per replica.
GW_CACHE_WRONG_HIT = "tandem_cache_estimated_wrong_hit_rate"
GW_CACHE_WRONG_HIT_THRESHOLD = "tandem_cache_wrong_hit_rate_alert_threshold"
# Re-checks since the replica started ({team, model, result}): the estimate above is only as good
# as its count.
GW_CACHE_RECHECKS = "tandem_cache_rechecks_total"

# Coding assistants through the gateway ({team, developer, tool}; requests also {model, code},
# tokens {direction: in | out | cached}); the adoption denominator per team.
GW_ASSISTANT_REQUESTS = "tandem_gateway_assistant_requests_total"
GW_ASSISTANT_TOKENS = "tandem_gateway_assistant_tokens_total"
GW_ASSISTANT_COST = "tandem_gateway_assistant_cost_usd_total"
GW_ASSISTANT_SAVED = "tandem_gateway_assistant_cache_saved_usd_total"
GW_ASSISTANT_SESSIONS = "tandem_gateway_assistant_sessions_total"
GW_DEVELOPERS_WITH_KEYS = "tandem_gateway_developers_with_keys"


def active_developers(window: str, selector: str = "") -> str:
    """Developers per team with at least one assistant request in `window` (e.g. `7d`)."""
    return (
        f"count by (team) (sum by (team, developer) "
        f"(increase({GW_ASSISTANT_REQUESTS}{{{selector}}}[{window}])) > 0)"
    )


def adoption(window: str = "7d", selector: str = "") -> str:
    """Active developers over developers with keys, per team (0..1)."""
    return (
        f"{active_developers(window, selector)} / "
        f"max by (team) ({GW_DEVELOPERS_WITH_KEYS}{{{selector}}})"
    )


# --- label scheme -------------------------------------------------------------------------------
POD_LABEL_KEYS = {
    "team": labels.LABEL_TEAM,
    "use_case": labels.LABEL_USE_CASE,
    "model": labels.LABEL_MODEL,
    "model_version": labels.LABEL_MODEL_VERSION,
    "rollout": labels.LABEL_ROLLOUT,
}
NODE_LABEL_KEYS = {
    "pool": labels.LABEL_POOL,
    "capacity_type": labels.LABEL_CAPACITY_TYPE,
    "instance_type": "node.kubernetes.io/instance-type",
    "gpu_model": labels.LABEL_GPU_MODEL,
}
assert tuple(POD_LABEL_KEYS) + ("pool",) == labels.METRIC_LABELS
WORKLOAD = tuple(POD_LABEL_KEYS)
NODE = tuple(NODE_LABEL_KEYS)
GROUP = WORKLOAD + NODE  # the grain of every FinOps number


# One hour of samples, counted once: Prometheus 2 range selectors include both ends, so `[1h]`
# evaluated every hour would count the boundary sample twice (Prometheus 3 excludes the start).
HOUR = "3599999ms"


def ksm_label(k8s_key: str) -> str:
    """kube-state-metrics' name for a Kubernetes label key (`tandem.dev/team` → label_tandem_dev_team)."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k8s_key)


def by(*names: str) -> str:
    return ", ".join(names)


def _relabel(expr: str, mapping: dict[str, str]) -> str:
    for short, key in mapping.items():
        expr = f'label_replace({expr}, "{short}", "$1", "{ksm_label(key)}", "(.*)")'
    return expr


def _over(metric: str, window: str | None) -> str:
    return f"max_over_time({metric}[{window}])" if window else metric


def pod_labels(window: str | None = None) -> str:
    """One series per pod carrying the short workload labels (max_over_time keeps ended pods)."""
    inner = _relabel(_over(KSM_POD_LABELS, window), POD_LABEL_KEYS)
    return f"max by ({by('namespace', 'pod', *WORKLOAD)}) ({inner})"


def node_labels(window: str | None = None) -> str:
    inner = _relabel(_over(KSM_NODE_LABELS, window), NODE_LABEL_KEYS)
    return f"max by ({by('node', *NODE)}) ({inner})"


def dcgm_node(expr: str) -> str:
    """dcgm-exporter names the node `Hostname`; kube-state-metrics calls it `node`."""
    return f'label_replace({expr}, "node", "$1", "Hostname", "(.*)")'


UNLABELLED = "unlabelled"
# Where a pod (or node) has no Tandem labels its GPUs are reported under these values, never
# dropped: an inner join would silently lose exactly the GPUs nobody owns.
UNLABELLED_WORKLOAD = (UNLABELLED, UNLABELLED, UNLABELLED, "", "")
UNLABELLED_NODE = (UNLABELLED, "", "", "")


def _or_unlabelled(
    labels_expr: str,
    per_pod: str,
    keys: tuple[str, ...],
    names: tuple[str, ...],
    values: tuple[str, ...],
) -> str:
    fallback = f"group by ({by(*keys)}) ({per_pod})"
    for name, value in zip(names, values, strict=True):
        if value:
            fallback = f'label_replace({fallback}, "{name}", "{value}", "", "")'
    return f"({labels_expr} or on ({by(*keys)}) {fallback})"


def with_pod_labels(per_pod: str, window: str | None = None) -> str:
    """Add the workload labels to a vector with `namespace` and `pod` (unlabelled pods kept)."""
    pods = _or_unlabelled(
        pod_labels(window), per_pod, ("namespace", "pod"), WORKLOAD, UNLABELLED_WORKLOAD
    )
    return f"({per_pod}) * on (namespace, pod) group_left({by(*WORKLOAD)}) {pods}"


def attribute(per_pod: str, window: str | None = None) -> str:
    """Join a per-(namespace, pod, node) vector with its pod's and node's labels."""
    nodes = _or_unlabelled(node_labels(window), per_pod, ("node",), NODE, UNLABELLED_NODE)
    return f"{with_pod_labels(per_pod, window)} * on (node) group_left({by(*NODE)}) {nodes}"


def gpu_requests(window: str | None = None, fn: str = "sum_over_time") -> str:
    sel = f'{KSM_REQUESTS}{{resource="{KSM_GPU_RESOURCE}"}}'
    inner = f"{fn}({sel}[{window}])" if window else sel
    return f"sum by (namespace, pod, node) ({inner})"


def dcgm_pods(metric: str, window: str | None = None, fn: str = "sum_over_time") -> str:
    """A DCGM metric on GPUs that a pod holds, with `node`, keeping one series per GPU."""
    sel = f'{metric}{{pod!=""}}'
    return dcgm_node(f"{fn}({sel}[{window}])" if window else sel)


def node_capacity(window: str | None = None, fn: str = "sum_over_time") -> str:
    sel = f'{KSM_NODE_CAPACITY}{{resource="{KSM_GPU_RESOURCE}"}}'
    inner = f"{fn}({sel}[{window}])" if window else sel
    return f"sum by (node) ({inner}) * on (node) group_left({by(*NODE)}) {node_labels(window)}"


def tokens(counter: str, window: str, fn: str = "increase") -> str:
    """Tokens (or tokens/s with fn="rate") per workload from vLLM's counters, which Prometheus
    scrapes with the serving pod's own namespace/pod labels."""
    labels_window = window if fn == "increase" else None
    per_pod = f"sum by (namespace, pod) ({fn}({vllm(counter)}[{window}]))"
    return f"sum by ({by(*WORKLOAD)}) ({with_pod_labels(per_pod, labels_window)})"
