"""Plan-time checks and upgrade surge for one use case against its pool's scheduling contract.

Pure functions that `tandem plan` calls and the policy pack can reuse:

- `run_checks(use_case, contract) -> list[CheckResult]`: every check, passing ones included, each
  with the numbers in its message. A failing check means the cluster would crash-loop or never
  schedule, so the plan fails.
- `upgrade_surge(use_case, contract) -> SurgeResult`: the extra GPUs (and their hourly cost) a
  RayService upgrade holds while old and new clusters overlap, and whether the pool's max holds
  them on top of the running footprint.

`contract` may be None for a use case whose deployments all run on CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gpu_pools import fit
from gpu_pools.contract import SchedulingContract
from serving.builder import model_size, worker_shape
from vocabulary.deployment import ModelDeployment
from vocabulary.errors import InputError
from vocabulary.usecase import UPGRADE_INCREMENTAL, UseCaseSpec


@dataclass(frozen=True)
class CheckResult:
    use_case: str
    check: str
    ok: bool
    message: str
    deployment: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SurgeResult:
    use_case: str
    strategy: str
    gpus: int
    nodes: int
    hourly_usd: float
    fits_in_pool: bool
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_contract(
    use_case: UseCaseSpec, pools: dict[str, SchedulingContract]
) -> SchedulingContract | None:
    """The pool a use case runs on in this stack: `pool` by name, else the stack's one pool of
    the deployments' GPU model that is not another's fallback (dev and prod name their pools
    differently). None when the use case needs no GPU or nothing matches (the `gpu_class` check
    then says so)."""
    gpus = {d.gpu for d in use_case.gpu_deployments}
    if not gpus:
        return None
    if use_case.pool in pools:
        return pools[use_case.pool]
    matches = [c for c in pools.values() if all(_same_gpu(g, c.gpu_model) for g in gpus)]
    # a pool that is another match's fallback is not a candidate of its own: the workload lands
    # on the primary and may move to the fallback (gpu_pools.contract placement)
    primaries = [c for c in matches if not any(c.pool in m.fallback_pools for m in matches)]
    return primaries[0] if len(primaries) == 1 else None


def _same_gpu(spec_gpu: str, pool_gpu: str) -> bool:
    a, b = spec_gpu.upper(), pool_gpu.upper()
    return a == b or a.startswith(b + "-") or b.startswith(a + "-") or a.split("-")[0] == b


def _check_gpu(d: ModelDeployment, c: SchedulingContract | None) -> tuple[str, bool, str]:
    if c is None:
        return "gpu_class", False, f"{d.name} asks for {d.gpu} but the use case has no GPU pool"
    ok = _same_gpu(d.gpu, c.gpu_model)
    return (
        "gpu_class",
        ok,
        f"{d.name} asks for {d.gpu}; pool {c.pool} runs {c.gpu_model} ({c.instance_type})",
    )


def _check_parallelism(
    d: ModelDeployment, c: SchedulingContract, size: fit.ModelSize | None
) -> tuple[str, bool, str]:
    e = d.engine
    want = e.gpus_per_replica if d.kind == "llm" else 1
    shape = worker_shape(d, c)
    msg = (
        f"{d.name}: TP {e.tensor_parallel_size} x PP {e.pipeline_parallel_size} = {want} GPUs per "
        f"replica; worker nvidia.com/gpu limit {shape.gpus}; {c.instance_type} has {c.gpus_per_node}"
    )
    ok = shape.gpus == want and want <= c.gpus_per_node
    if want > c.gpus_per_node:
        msg += " (the worker pod would stay Pending)"
    elif c.gpus_per_node % want:
        msg += f" ({c.gpus_per_node % want} GPU(s) per node stranded)"
    if d.kind == "llm" and size and size.heads % e.tensor_parallel_size:
        ok = False
        msg += f"; {size.heads} attention heads are not divisible by TP {e.tensor_parallel_size}"
    return "gpus_per_replica", ok, msg


def _check_memory(
    d: ModelDeployment, c: SchedulingContract, size: fit.ModelSize | None
) -> tuple[str, bool, str]:
    if size is None:
        return (
            "memory_fit",
            False,
            (
                f"{d.name}: unknown architecture for {d.model!r}; set `size:` to one of "
                f"{fit.known_sizes()} or `config_json:` to the model's config.json"
            ),
        )
    e = d.engine
    lora = fit.lora_gib(size, d.lora.max_loras, d.lora.max_lora_rank) if d.lora else 0.0
    if d.kind == "batch":  # one request batch, no KV cache
        result = fit.fit(
            size,
            gpus=1,
            gpu_memory_gib=c.gpu_memory_gib_per_gpu,
            gpu_memory_utilization=e.gpu_memory_utilization,
            max_model_len=1,
            max_num_seqs=1,
            dtype=e.dtype,
        )
        return "memory_fit", result.fits, f"{d.name}: " + result.message(1, 1)
    result = fit.fit(
        size,
        gpus=e.gpus_per_replica,
        gpu_memory_gib=c.gpu_memory_gib_per_gpu,
        gpu_memory_utilization=e.gpu_memory_utilization,
        max_model_len=e.max_model_len,
        max_num_seqs=e.max_num_seqs,
        dtype=e.dtype,
        quantization=e.quantization,
        kv_cache_dtype=e.kv_cache_dtype,
        extra_weights_gib=lora,
        max_num_batched_tokens=e.max_num_batched_tokens,
        tensor_parallel=e.tensor_parallel_size,
        gpu_model=c.gpu_model,
    )
    return (
        "memory_fit",
        result.fits,
        f"{d.name}: " + result.message(e.max_model_len, e.max_num_seqs),
    )


def _check_admission(d: ModelDeployment) -> tuple[str, bool, str]:
    engine_slots = d.engine.max_num_seqs if d.kind == "llm" else d.batching.max_batch_size
    what = "max_num_seqs" if d.kind == "llm" else "max_batch_size"
    target = d.target_ongoing_requests
    ok = d.max_ongoing_requests >= engine_slots and target <= d.max_ongoing_requests
    msg = (
        f"{d.name}: max_ongoing_requests {d.max_ongoing_requests} vs {what} {engine_slots}, "
        f"target_ongoing_requests {target:g}"
    )
    if d.max_ongoing_requests < engine_slots:
        msg += f" (Serve would cap the engine at {d.max_ongoing_requests} concurrent requests)"
    if target > d.max_ongoing_requests:
        msg += " (the autoscaling target is above what a replica admits: it never scales out)"
    return "admission", ok, msg


def _check_lora(d: ModelDeployment) -> tuple[str, bool, str] | None:
    lo = d.lora
    if lo is None:
        return None
    problems = []
    if lo.max_loras > d.engine.max_num_seqs:
        problems.append(f"max_loras {lo.max_loras} > max_num_seqs {d.engine.max_num_seqs}")
    if lo.max_cpu_loras is not None and lo.max_cpu_loras < lo.max_loras:
        problems.append(f"max_cpu_loras {lo.max_cpu_loras} < max_loras {lo.max_loras}")
    if lo.max_adapters_per_replica < lo.max_loras:
        problems.append(
            f"max_adapters_per_replica {lo.max_adapters_per_replica} < max_loras {lo.max_loras}"
        )
    for a in lo.adapters:
        if a.rank and a.rank > lo.max_lora_rank:
            problems.append(f"adapter {a.name} rank {a.rank} > max_lora_rank {lo.max_lora_rank}")
    if not lo.dynamic_loading_path:
        problems.append("Serve LLM loads adapters only from dynamic_loading_path: set it")
    for a in lo.adapters:
        if lo.dynamic_loading_path and not a.source.startswith(lo.dynamic_loading_path + "/"):
            problems.append(f"adapter {a.name} ({a.source}) is not under {lo.dynamic_loading_path}")
    msg = (
        f"{d.name}: {len(lo.adapters)} adapter(s), max_loras {lo.max_loras}, max_lora_rank "
        f"{lo.max_lora_rank}, max_num_seqs {d.engine.max_num_seqs}"
    )
    return "lora", not problems, msg + ("; " + "; ".join(problems) if problems else "")


# What the node's volume holds besides a worker's ephemeral storage: the ray-llm image (about
# 25 GiB unpacked), the system and the kubelet's eviction threshold.
NODE_DISK_RESERVED_GIB = 40


def _check_node_fit(d: ModelDeployment, c: SchedulingContract) -> tuple[str, bool, str]:
    shape = worker_shape(d, c)
    ok = not c.memory_gib or shape.memory_gib <= c.memory_gib
    msg = (
        f"{d.name}: worker requests {shape.gpus} GPU, {shape.cpus:g} CPU, {shape.memory_gib:g} GiB "
        f"(/dev/shm {shape.shm_gib:g} GiB), {shape.disk_gib} GiB ephemeral storage on "
        f"{c.instance_type} ({c.vcpu} vCPU, {c.memory_gib:g} GiB)"
    )
    if c.disk_gib:
        room = c.disk_gib - NODE_DISK_RESERVED_GIB
        msg += f", volume {c.disk_gib} GiB ({room} GiB after the image and system)"
        if shape.disk_gib > room:
            ok = False
            msg += (
                f": the weights do not fit on the node's disk; raise the pool's rootVolumeGib to "
                f"at least {shape.disk_gib + NODE_DISK_RESERVED_GIB}"
            )
    return "worker_fits_node", ok, msg


def _check_context(d: ModelDeployment, size: fit.ModelSize | None) -> tuple[str, bool, str] | None:
    """vLLM refuses a max_model_len above the model's max_position_embeddings at start-up: the
    replica crash-loops on the cluster while the plan looked fine."""
    if d.kind != "llm" or size is None or not size.context:
        return None
    ok = d.engine.max_model_len <= size.context
    msg = (
        f"{d.name}: max_model_len {d.engine.max_model_len} vs {size.name}'s context {size.context}"
    )
    if not ok:
        msg += f" (vLLM refuses to start; allowed: max_model_len <= {size.context})"
    return "context_length", ok, msg


def deployment_checks(
    use_case: str, d: ModelDeployment, contract: SchedulingContract | None
) -> list[CheckResult]:
    raw: list[tuple[str, bool, str] | None] = [_check_admission(d), _check_lora(d)]
    if d.uses_gpu:
        gpu = _check_gpu(d, contract)
        raw.append(gpu)
        if contract is not None and gpu[1]:
            try:
                size = model_size(d)
            except InputError:
                raise  # a config_json that is missing or not a config.json: bad input (exit 2)
            except (fit.UnknownModelSize, OSError, ValueError, KeyError) as exc:
                # a `size:` the fit math does not know: a failed check naming the field and the
                # sizes it knows, not a traceback
                field = "size" if d.size and not d.config_json else "config_json"
                raw.append(("memory_fit", False, f"{d.name}: {field}: {exc}"))
                return [CheckResult(use_case, n, ok, m, d.name) for n, ok, m in filter(None, raw)]
            raw += [
                _check_parallelism(d, contract, size),
                _check_memory(d, contract, size),
                _check_node_fit(d, contract),
                _check_context(d, size),
            ]
    return [CheckResult(use_case, n, ok, m, d.name) for n, ok, m in filter(None, raw)]


def max_replicas(use_case: UseCaseSpec, d: ModelDeployment) -> int:
    """Replicas a deployment may hold at peak: its max_replicas, twice for the deployment a
    rollout moves (the stable and the canary version run side by side, each up to its max)."""
    rolling = use_case.rollout_deployment
    both = rolling is not None and rolling.name == d.name
    return d.autoscaling.max_replicas * (2 if both else 1)


def _replicas_per_node(d: ModelDeployment, c: SchedulingContract) -> int:
    return max(c.gpus_per_node // max(d.gpus_per_replica, 1), 1)


def _nodes(replicas: dict[str, int], use_case: UseCaseSpec, c: SchedulingContract) -> int:
    return sum(
        math.ceil(replicas[d.name] / _replicas_per_node(d, c)) for d in use_case.gpu_deployments
    )


def peak_nodes(use_case: UseCaseSpec, c: SchedulingContract) -> int:
    """Nodes the use case holds with every GPU deployment at max_replicas (a rollout's two
    versions both at theirs)."""
    return _nodes(
        {d.name: max_replicas(use_case, d) for d in use_case.gpu_deployments}, use_case, c
    )


def run_checks(use_case: UseCaseSpec, contract: SchedulingContract | None) -> list[CheckResult]:
    results = [
        r for d in use_case.deployments for r in deployment_checks(use_case.name, d, contract)
    ]
    if use_case.gpu_deployments and contract is not None:
        nodes = peak_nodes(use_case, contract)
        gpus = sum(max_replicas(use_case, d) * d.gpus_per_replica for d in use_case.gpu_deployments)
        both = " (stable and canary versions both up)" if use_case.rollout else ""
        results.append(
            CheckResult(
                use_case.name,
                "pool_capacity",
                nodes <= contract.max_nodes,
                f"at max_replicas the use case needs {gpus} GPUs on {nodes} {contract.instance_type} "
                f"node(s){both}; pool {contract.pool} allows {contract.max_nodes} "
                f"({contract.max_gpus} GPUs)",
            )
        )
    return results


SHARED_POOLS = "(shared pools)"  # the `use_case` of checks that span several use cases


def shared_pool_checks(
    use_cases: list[UseCaseSpec], pools: dict[str, SchedulingContract]
) -> list[CheckResult]:
    """A pool several use cases land on must hold all of them at once: each one's peak (every
    GPU deployment at max_replicas) plus the largest single upgrade surge (KubeRay upgrades one
    RayService at a time). Checked per use case, each may fit while together they do not."""
    tenants: dict[str, list[UseCaseSpec]] = {}
    for uc in use_cases:
        contract = resolve_contract(uc, pools)
        if contract is not None and uc.gpu_deployments:
            tenants.setdefault(contract.pool, []).append(uc)
    results = []
    for pool, ucs in sorted(tenants.items()):
        if len(ucs) < 2:
            continue
        contract = pools[pool]
        peaks = {uc.name: peak_nodes(uc, contract) for uc in ucs}
        surge = max(upgrade_surge(uc, contract).nodes for uc in ucs)
        need = sum(peaks.values()) + surge
        ok = need <= contract.max_nodes
        msg = (
            f"pool {pool}: {' + '.join(f'{n} {p}' for n, p in sorted(peaks.items()))} node(s) at "
            f"peak + {surge} for the largest upgrade surge = {need} vs max_nodes "
            f"{contract.max_nodes}"
        )
        if not ok:
            msg += ": raise the pool's maxNodes or move a use case to another pool"
        results.append(CheckResult(SHARED_POOLS, "pool_capacity_shared", ok, msg, ",".join(peaks)))
    return results


@dataclass(frozen=True)
class RolloutCost:
    """What running a candidate beside the stable version adds while a rollout lasts."""

    use_case: str
    strategy: str
    deployment: str
    canary_gpus: int
    canary_nodes: int
    hourly_usd: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def rollout_cost(use_case: UseCaseSpec, contract: SchedulingContract | None) -> RolloutCost | None:
    """The canary copy of the rolling deployment at its max_replicas, priced per hour (None
    without a rollout)."""
    d = use_case.rollout_deployment
    if use_case.rollout is None or d is None:
        return None
    strategy = use_case.rollout.strategy
    if not d.uses_gpu or contract is None:
        return RolloutCost(
            use_case.name, strategy, d.name, 0, 0, 0.0,
            f"{d.name}: the canary runs {d.autoscaling.max_replicas} CPU replica(s) beside the stable",
        )  # fmt: skip
    gpus = d.autoscaling.max_replicas * d.gpus_per_replica
    nodes = math.ceil(d.autoscaling.max_replicas / _replicas_per_node(d, contract))
    hourly = round(nodes * contract.hourly_usd, 4)
    return RolloutCost(
        use_case.name,
        strategy,
        d.name,
        gpus,
        nodes,
        hourly,
        f"{d.name}: the candidate beside the stable version adds up to {gpus} GPUs on {nodes} "
        f"{contract.instance_type} node(s) (${hourly:.2f}/h) while a {strategy} runs",
    )


def upgrade_surge(use_case: UseCaseSpec, contract: SchedulingContract | None) -> SurgeResult:
    """Extra GPUs while a RayService upgrade runs two clusters side by side.

    NewCluster (blue-green) brings up a full second cluster able to carry peak load, so the surge
    is every GPU deployment at max_replicas. The incremental upgrade surges at most
    `max_surge_percent` of that. `fits_in_pool`: the pool's max nodes hold peak + surge (counted
    for this use case alone; other tenants of the pool are the plan's business).
    """
    strategy = use_case.upgrade.strategy
    if contract is None or not use_case.gpu_deployments:
        return SurgeResult(use_case.name, strategy, 0, 0, 0.0, True, "no GPU deployments")
    pct = use_case.upgrade.max_surge_percent if strategy == UPGRADE_INCREMENTAL else 100
    replicas = {
        d.name: math.ceil(max_replicas(use_case, d) * pct / 100) for d in use_case.gpu_deployments
    }
    gpus = sum(replicas[d.name] * d.gpus_per_replica for d in use_case.gpu_deployments)
    nodes = _nodes(replicas, use_case, contract)
    hourly = round(nodes * contract.hourly_usd, 4)
    peak = peak_nodes(use_case, contract)
    fits = peak + nodes <= contract.max_nodes
    msg = (
        f"{strategy} upgrade surges {gpus} GPUs on {nodes} {contract.instance_type} node(s) "
        f"(${hourly:.2f}/h); peak {peak} + surge {nodes} nodes vs pool max {contract.max_nodes}"
    )
    if not fits:
        msg += ": raise the pool's max_nodes or use the incremental upgrade with a smaller surge"
    return SurgeResult(use_case.name, strategy, gpus, nodes, hourly, fits, msg)
