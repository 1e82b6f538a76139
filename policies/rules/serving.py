"""Serving consistency: the KubeRay RayService agrees with the Ray Serve config it runs.

The Serve config (`spec.serveConfigV2`, a YAML string) and the Ray cluster spec are written by
different layers; when they disagree nothing fails at apply time. Replicas wait forever for GPUs
no worker offers, a GPU sits under an idle head, or Serve rejects requests vLLM could have
batched. These rules compare the two halves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from policies.framework import (
    Finding,
    ResourceView,
    as_list,
    as_number,
    each,
    get,
    guard,
    k8s_metadata,
    resource_rule,
    stack_rule,
)
from policies.rules import common as c
from policies.settings import PolicySettings

FT_ANNOTATION = "ray.io/ft-enabled"


def serve_config_of(res: ResourceView) -> Mapping[str, Any]:
    raw = get(res.props, "spec", "serveConfigV2")
    if isinstance(raw, Mapping):
        return raw
    if not isinstance(raw, str):
        return {}
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, Mapping) else {}


def llm_configs(res: ResourceView) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for app in as_list(get(serve_config_of(res), "applications")):
        for cfg in as_list(get(app, "args", "llm_configs")):
            yield str(get(app, "name", default="?")), cfg


def _uses_gpu(cfg: Mapping[str, Any]) -> bool:
    bundles = as_list(get(cfg, "placement_group_config", "bundles"))
    return not bundles or any((as_number(get(b, "GPU")) or 0) > 0 for b in bundles)


def gpus_per_replica(cfg: Mapping[str, Any]) -> int:
    tp = as_number(get(cfg, "engine_kwargs", "tensor_parallel_size")) or 1
    pp = as_number(get(cfg, "engine_kwargs", "pipeline_parallel_size")) or 1
    return int(tp * pp)


def worker_groups(res: ResourceView) -> list[Mapping[str, Any]]:
    return as_list(get(c.ray_cluster_spec(res), "workerGroupSpecs"))


def _group_gpus(group: Mapping[str, Any]) -> float:
    return c.pod_gpus(get(group, "template", "spec", default={}))


@resource_rule(
    "ray-head-no-gpu",
    "The Ray head pod requests no GPUs and advertises none (num-gpus: 0).",
    "high",
    "Remove nvidia.com/gpu from the head container and set headGroupSpec.rayStartParams['num-gpus']: '0' "
    "so Serve never schedules a replica on the head (GCS, dashboard and the proxy live there).",
    (c.RAY_SERVICE, c.RAY_CLUSTER),
    tags=("serving", "cost"),
)
def ray_head_no_gpu(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    head = get(c.ray_cluster_spec(res), "headGroupSpec", default={})
    gpus = c.pod_gpus(get(head, "template", "spec", default={}))
    if gpus > 0:
        yield f"'{res.name}' head pod requests {gpus:g} GPU(s)"
    declared = as_number(get(head, "rayStartParams", "num-gpus"))
    if declared:
        yield f"'{res.name}' head advertises num-gpus={declared:g}"


@resource_rule(
    "ray-gpus-match-parallelism",
    "Each LLM's GPUs per replica (tensor x pipeline parallel) equals the GPUs of a worker group's pod.",
    "high",
    "Size the worker group's nvidia.com/gpu limit to tensor_parallel_size x pipeline_parallel_size "
    "(or pick the pool whose nodes have that many GPUs); a mismatch leaves replicas Pending or GPUs idle.",
    (c.RAY_SERVICE,),
    tags=("serving", "gpu-pools"),
)
def ray_gpus_match_parallelism(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    offered = sorted({g for g in (_group_gpus(w) for w in worker_groups(res)) if g > 0})
    for app, cfg in llm_configs(res):
        if not _uses_gpu(cfg):
            continue
        need = gpus_per_replica(cfg)
        if need not in offered:
            yield (
                f"'{res.name}' app {app}: a replica needs {need} GPU(s) (TP x PP) but worker pods "
                f"offer {[int(g) for g in offered] or 'none'}"
            )


@resource_rule(
    "serve-admission-covers-batch",
    "Serve admits at least vLLM's max_num_seqs concurrent requests per replica.",
    "medium",
    "Raise deployment_config.max_ongoing_requests to >= engine_kwargs.max_num_seqs (plus queue "
    "headroom); otherwise Serve throttles below the batch size vLLM can run.",
    (c.RAY_SERVICE,),
    tags=("serving",),
)
def serve_admission_covers_batch(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for app, cfg in llm_configs(res):
        seqs = as_number(get(cfg, "engine_kwargs", "max_num_seqs"))
        admit = as_number(get(cfg, "deployment_config", "max_ongoing_requests"))
        if seqs is not None and admit is not None and admit < seqs:
            yield f"'{res.name}' app {app}: max_ongoing_requests {admit:g} < max_num_seqs {seqs:g}"


@resource_rule(
    "ray-gcs-fault-tolerance",
    "Production RayServices enable GCS fault tolerance (external Redis), so a head restart keeps serving.",
    "high",
    "Set spec.rayClusterConfig.gcsFaultToleranceOptions.redisAddress (and redisPassword from a "
    "Secret); workers then survive a head pod restart instead of the whole cluster restarting.",
    (c.RAY_SERVICE,),
    production_only=True,
    tags=("serving", "reliability"),
)
def ray_gcs_fault_tolerance(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(c.ray_cluster_spec(res), "gcsFaultToleranceOptions", "redisAddress"):
        return
    if str(get(k8s_metadata(res), "annotations", FT_ANNOTATION, default="")).lower() == "true":
        return
    yield f"'{res.name}' has no GCS fault tolerance: a head pod restart drops every in-flight request"


@resource_rule(
    "serving-autoscaling-bounds",
    "Serve and Ray autoscaling are bounded, and Ray's worker maximum can host Serve's maximum.",
    "medium",
    "Set autoscaling_config min_replicas/max_replicas on every deployment and minReplicas/maxReplicas "
    "on every worker group, with worker maxReplicas x GPUs per worker >= sum of max_replicas x TP x PP.",
    (c.RAY_SERVICE,),
    tags=("serving", "cost"),
)
def serving_autoscaling_bounds(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    cluster = c.ray_cluster_spec(res)
    if get(cluster, "enableInTreeAutoscaling") is True:
        for w in worker_groups(res):
            lo, hi = as_number(get(w, "minReplicas")), as_number(get(w, "maxReplicas"))
            if lo is None or hi is None or hi < 1 or lo > hi:
                yield f"'{res.name}' worker group {get(w, 'groupName')}: bounds minReplicas={lo} maxReplicas={hi}"
    gpu_need = 0.0
    for app, cfg in llm_configs(res):
        auto = get(cfg, "deployment_config", "autoscaling_config")
        lo, hi = (
            as_number(get(auto or {}, "min_replicas")),
            as_number(get(auto or {}, "max_replicas")),
        )
        if auto is not None and (hi is None or (lo is not None and lo > hi)):
            yield f"'{res.name}' app {app}: autoscaling max_replicas={hi} min_replicas={lo}"
        if _uses_gpu(cfg):
            gpu_need += (hi or 1) * gpus_per_replica(cfg)
    gpu_cap = sum(
        (as_number(get(w, "maxReplicas")) or 0) * _group_gpus(w) for w in worker_groups(res)
    )
    if gpu_need and gpu_cap < gpu_need:
        yield f"'{res.name}': Serve may scale to {gpu_need:g} GPUs but GPU workers cap at {gpu_cap:g}"


def _worker_labels(res: ResourceView) -> list[Mapping[str, Any]]:
    return [get(w, "template", "metadata", "labels", default={}) for w in worker_groups(res)]


def _selects(pdb: ResourceView, pod_labels: Mapping[str, Any]) -> bool:
    match = get(pdb.props, "spec", "selector", "matchLabels", default={})
    return bool(match) and all(pod_labels.get(k) == v for k, v in match.items())


@stack_rule(
    "serving-pdb",
    "Production RayServices have a PodDisruptionBudget covering their GPU workers.",
    "high",
    "Add a policy/v1 PodDisruptionBudget (maxUnavailable: 1) in the RayService's namespace selecting "
    "the worker pods' labels (e.g. tandem.dev/use-case + ray.io/node-type: worker).",
    production_only=True,
    tags=("serving", "reliability"),
)
def serving_pdb(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    pdbs = list(each(resources, (c.PDB,)))

    def check(rs: ResourceView) -> Iterator[Finding]:
        ns = get(k8s_metadata(rs), "namespace")
        local = [p for p in pdbs if get(k8s_metadata(p), "namespace") == ns]
        if not any(_selects(p, lbl) for p in local for lbl in _worker_labels(rs)):
            yield Finding(
                f"RayService '{rs.name}' has no PodDisruptionBudget selecting its workers", rs.urn
            )

    return [f for rs in each(resources, (c.RAY_SERVICE,)) for f in guard(check, rs)]


RULES = [
    ray_head_no_gpu,
    ray_gpus_match_parallelism,
    serve_admission_covers_batch,
    ray_gcs_fault_tolerance,
    serving_autoscaling_bounds,
    serving_pdb,
]
