"""A simulated GPU fleet with known ground truth, written as OpenMetrics for `promtool` backfill.

The FinOps report is only trustworthy if it finds what we know is there. This module builds a
fleet whose every number is known (who holds which GPU, how busy it is, which GPUs sit idle), emits
the series a real cluster emits for it — dcgm-exporter with pod attribution, kube-state-metrics,
vLLM counters, the gateway — and keeps the exact arrays it emitted as the ground truth.

The default fleet is built so each recommendation kind has one obvious target (see `base_fleet`);
`copies` repeats it to reach benchmark scale (13 copies = 260 GPUs).

Output is written one 54-hour window per file (54 h is one of TSDB's block ranges), so promtool
produces exactly one block per file and never re-reads a month of text once per two-hour block.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from observability import promql as q
from vocabulary import labels

BLOCK_S = 54 * 3600  # a TSDB block range (2h * 3^3): one file -> one block


@dataclass(frozen=True)
class Pool:
    name: str
    instance_type: str
    capacity_type: str  # on-demand | spot
    nodes: int
    gpus_per_node: int
    gpu_model: str
    gpu_memory_gib: float


@dataclass(frozen=True)
class Workload:
    team: str
    use_case: str
    model: str
    model_version: str
    pool: str
    replicas: int
    gr: float  # mean GR_ENGINE_ACTIVE while busy
    diurnal: float  # relative amplitude of the daily cycle
    sm_ratio: float  # SM_ACTIVE / GR_ENGINE_ACTIVE
    fb_gib: float  # framebuffer a replica keeps resident
    schedule: str = "always"  # always | business (weekdays 09-17 UTC) | idle
    in_tps: float = 0.0  # prompt tokens / s per replica at GR=1
    out_tps: float = 0.0
    rollout: str = "stable"
    labelled: bool = True  # False: a pod without Tandem labels (a debug pod, a forgotten job)

    @property
    def key(self) -> tuple[str, ...]:
        if not self.labelled:
            return q.UNLABELLED_WORKLOAD
        return (self.team, self.use_case, self.model, self.model_version, self.rollout)

    @property
    def namespace(self) -> str:
        return self.team if self.labelled else "default"

    @property
    def serves_tokens(self) -> bool:
        return self.labelled and (self.in_tps > 0 or self.out_tps > 0)


@dataclass
class FleetSpec:
    pools: list[Pool]
    workloads: list[Workload]
    end: int  # epoch seconds; samples at end - (n-1)*step ... end
    days: float
    step_s: int = 60
    seed: int = 7
    full: bool = True  # also emit the series only dashboards need

    @property
    def n(self) -> int:
        return int(round(self.days * 86400 / self.step_s))

    @property
    def start(self) -> int:
        """Exclusive start: the report's window (start, end] holds exactly the n samples."""
        return self.end - self.n * self.step_s

    @property
    def gpus(self) -> int:
        return sum(p.nodes * p.gpus_per_node for p in self.pools)


def pools_from_catalog(specs: list[tuple[str, str, str, int]]) -> list[Pool]:
    from vocabulary.catalog import load_catalog

    cat = load_catalog()
    out = []
    for name, itype, cap, nodes in specs:
        inst = cat.get(itype)
        out.append(Pool(name, itype, cap, nodes, inst.gpus, inst.gpu.name, inst.gpu_memory_gib))
    return out


def base_fleet(
    copies: int = 1, days: float = 3, step_s: int = 60, end: int | None = None, full: bool = True
) -> FleetSpec:
    """20 GPUs per copy. What the report must find in each copy:

    - research/sandbox holds an H100 and never uses it: idle GPU, scale-to-zero;
    - support/chatbot runs an 8B model on H100s at ~16 % SM: smaller GPU class (L40S),
      MIG, lower min replicas;
    - support/classifier uses 3 GiB of an A10G at ~6 % SM: time-slicing, lower min replicas;
    - marketing/copywriter keeps 3 spot L4 replicas for load that 1-2 serve: lower min replicas;
    - legal/contract-review works office hours only: scale-to-zero;
    - a debug pod without Tandem labels holds the last H100: reported as "unlabelled";
    - the a10g pool's two 4-GPU nodes are half empty: consolidation;
    - research/eval and search/rerank are healthy: no recommendation.
    """
    pools = pools_from_catalog(
        [
            ("h100", "p5.48xlarge", "on-demand", copies),
            ("a10g", "g5.12xlarge", "on-demand", 2 * copies),
            ("l4-spot", "g6.12xlarge", "spot", copies),
        ]
    )
    # fmt: off
    base = [
        Workload("research", "eval", "llama-3-70b", "v1", "h100", 4, 0.72, 0.15, 0.9, 70, "always", 2000, 500),
        Workload("support", "chatbot", "llama-3-8b", "v3", "h100", 2, 0.20, 0.25, 0.8, 17, "always", 3000, 800),
        Workload("research", "sandbox", "qwen-2.5-7b", "v1", "h100", 1, 0.0, 0.0, 0.0, 16, "idle"),
        Workload("", "gpu-debug", "", "", "h100", 1, 0.5, 0.1, 0.9, 30, labelled=False),
        Workload("search", "rerank", "bge-reranker", "v2", "a10g", 2, 0.55, 0.2, 0.8, 6, "always", 5000, 10),
        Workload("support", "classifier", "distilbert", "v1", "a10g", 2, 0.10, 0.2, 0.6, 3, "always", 4000, 5),
        Workload("marketing", "copywriter", "mistral-7b", "v1", "l4-spot", 3, 0.20, 0.5, 0.8, 20, "always", 800, 600),
        Workload("legal", "contract-review", "llama-3-8b", "v3", "l4-spot", 1, 0.6, 0.1, 0.8, 18, "business", 1500, 300),
    ]
    # fmt: on
    workloads = []
    for c in range(copies):
        for w in base:
            uc = w.use_case if c == 0 else f"{w.use_case}-{c}"
            workloads.append(Workload(**{**w.__dict__, "use_case": uc}))
    if end is None:
        import time

        end = int(time.time()) // 3600 * 3600
    return FleetSpec(pools, workloads, end=end, days=days, step_s=step_s, full=full)


# --------------------------------------------------------------------------------------------
# Ground-truth arrays


@dataclass
class Gpu:
    pool: Pool
    node: str
    index: int
    uuid: str
    # (first sample, end sample exclusive, workload index, replica, pod, namespace)
    segments: list[tuple[int, int, int, int, str, str]] = field(default_factory=list)


@dataclass
class Truth:
    """What the simulator emitted, sample by sample (samples at start + (i+1)*step)."""

    spec: FleetSpec
    ts: np.ndarray  # int64 epoch seconds, length n
    gpus: list[Gpu]
    owner: np.ndarray  # (gpus, n) int: workload index holding the GPU, -1 = unallocated
    gr: np.ndarray  # (gpus, n) float, quantised as emitted
    sm: np.ndarray
    fb_mib: np.ndarray  # (gpus, n) int
    tokens_in: dict[str, int]  # pod -> final counter value
    tokens_out: dict[str, int]
    pod_workload: dict[str, int]


def _pod_name(w: Workload, replica: int, day: int) -> str:
    h = hashlib.blake2s(f"{w.key}{replica}{day}".encode(), digest_size=4).hexdigest()
    return f"{w.use_case}-{w.model}-{h[:5]}-{replica}"[:63]


def _place(spec: FleetSpec) -> list[Gpu]:
    """Spread each workload's replicas round-robin over its pool's nodes (topology spread)."""
    gpus: list[Gpu] = []
    by_pool: dict[str, list[list[Gpu]]] = {}
    for p in spec.pools:
        nodes = []
        for k in range(p.nodes):
            node = f"ip-10-{len(by_pool)}-{k // 250}-{k % 250}.ec2.internal"
            row = []
            for i in range(p.gpus_per_node):
                uuid = "GPU-" + hashlib.blake2s(f"{node}/{i}".encode(), digest_size=8).hexdigest()
                row.append(Gpu(p, node, i, uuid))
            nodes.append(row)
            gpus.extend(row)
        by_pool[p.name] = nodes
    cursor = dict.fromkeys(by_pool, 0)
    free = {name: [list(row) for row in nodes] for name, nodes in by_pool.items()}
    placement = []
    for wi, w in enumerate(spec.workloads):
        nodes = free[w.pool]
        for r in range(w.replicas):
            for _ in range(len(nodes)):
                row = nodes[cursor[w.pool] % len(nodes)]
                cursor[w.pool] += 1
                if row:
                    placement.append((row.pop(0), wi, r))
                    break
            else:
                raise ValueError(f"pool {w.pool} has no free GPU for {w.key}")
    day_samples = 86400 // spec.step_s
    for gpu, wi, r in placement:
        w = spec.workloads[wi]
        for d0 in range(0, spec.n, day_samples):
            day = (spec.start + (d0 + 1) * spec.step_s) // 86400
            gpu.segments.append(
                (d0, min(d0 + day_samples, spec.n), wi, r, _pod_name(w, r, day), w.namespace)
            )
    return gpus


def simulate(spec: FleetSpec) -> Truth:
    rng = np.random.default_rng(spec.seed)
    ts = spec.start + (np.arange(spec.n, dtype=np.int64) + 1) * spec.step_s
    hod = (ts % 86400) / 3600.0
    weekday = ((ts // 86400) + 3) % 7  # 1970-01-01 was a Thursday (3)
    business = (weekday < 5) & (hod >= 9) & (hod < 17)
    gpus = _place(spec)
    g = len(gpus)
    owner = np.full((g, spec.n), -1, dtype=np.int32)
    gr = np.zeros((g, spec.n))
    sm = np.zeros((g, spec.n))
    fb = np.zeros((g, spec.n), dtype=np.int64)
    tokens_in: dict[str, int] = {}
    tokens_out: dict[str, int] = {}
    pod_workload: dict[str, int] = {}
    for gi, gpu in enumerate(gpus):
        fb[gi] = 450 + rng.integers(0, 20, spec.n)  # driver + context on an empty GPU
        for a, b, wi, _r, pod, _ns in gpu.segments:
            w = spec.workloads[wi]
            owner[gi, a:b] = wi
            pod_workload[pod] = wi
            if w.schedule == "idle":
                level = np.zeros(b - a)
            else:
                cyc = 1 + w.diurnal * np.sin(2 * np.pi * (hod[a:b] - 9) / 24)
                level = w.gr * cyc + rng.normal(0, 0.02, b - a)
                if w.schedule == "business":
                    level = np.where(business[a:b], level, 0.0)
            gr[gi, a:b] = np.round(np.clip(level, 0, 1), 4)
            sm[gi, a:b] = np.round(np.clip(gr[gi, a:b] * w.sm_ratio, 0, 1), 4)
            fb[gi, a:b] = int(w.fb_gib * 1024) + rng.integers(0, 64, b - a)
            tokens_in[pod] = int(np.floor(np.sum(gr[gi, a:b]) * w.in_tps * spec.step_s))
            tokens_out[pod] = int(np.floor(np.sum(gr[gi, a:b]) * w.out_tps * spec.step_s))
    return Truth(spec, ts, gpus, owner, gr, sm, fb, tokens_in, tokens_out, pod_workload)


# --------------------------------------------------------------------------------------------
# OpenMetrics writer: fixed-width lines assembled as byte matrices (tens of MB/s per core)


def _digits(values: np.ndarray, int_digits: int, frac_digits: int) -> np.ndarray:
    scaled = np.round(np.asarray(values, dtype=np.float64) * 10**frac_digits).astype(np.int64)
    width = int_digits + frac_digits
    pows = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    d = ((scaled[:, None] // pows) % 10 + 48).astype(np.uint8)
    if not frac_digits:
        return d
    dot = np.full((len(d), 1), ord("."), np.uint8)
    return np.hstack([d[:, :int_digits], dot, d[:, int_digits:]])


RATIO = (1, 4)
INT = (13, 0)
SECONDS = (9, 3)


def _lines(prefix: str, values: np.ndarray, ts_digits: np.ndarray, fmt: tuple[int, int]) -> bytes:
    v = _digits(values, *fmt)
    pre = np.frombuffer(prefix.encode() + b" ", np.uint8)
    n = len(v)
    out = np.empty((n, len(pre) + v.shape[1] + 1 + ts_digits.shape[1] + 1), np.uint8)
    out[:, : len(pre)] = pre
    c = len(pre)
    out[:, c : c + v.shape[1]] = v
    c += v.shape[1]
    out[:, c] = ord(" ")
    out[:, c + 1 : -1] = ts_digits
    out[:, -1] = ord("\n")
    return out.tobytes()


def _labelstr(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


@dataclass
class _Series:
    """One series: its name+labels, the sample range [a, b) and its values over that range."""

    name: str
    labels: str
    a: int
    b: int
    values: np.ndarray
    fmt: tuple[int, int]


def _families(t: Truth) -> Iterator[tuple[str, str, list[_Series]]]:
    spec = t.spec
    wl = spec.workloads
    gpu_names = {"H100": "NVIDIA H100 80GB HBM3", "A10G": "NVIDIA A10G", "L4": "NVIDIA L4"}

    def dcgm_series(gi: int, gpu: Gpu) -> Iterator[tuple[int, int, str]]:
        base = {
            "gpu": str(gpu.index),
            "UUID": gpu.uuid,
            "Hostname": gpu.node,
            "modelName": gpu_names.get(gpu.pool.gpu_model, gpu.pool.gpu_model),
        }
        cursor = 0
        for a, b, _wi, _r, pod, ns in gpu.segments:
            if a > cursor:
                yield cursor, a, _labelstr(**base)
            yield a, b, _labelstr(**base, container="main", namespace=ns, pod=pod)
            cursor = b
        if cursor < spec.n:
            yield cursor, spec.n, _labelstr(**base)

    gpu_segments = [(gi, list(dcgm_series(gi, gpu))) for gi, gpu in enumerate(t.gpus)]
    mem_mib = np.array([g.pool.gpu_memory_gib * 1024 for g in t.gpus])

    def per_gpu(name: str, arr: np.ndarray, fmt: tuple[int, int]) -> list[_Series]:
        return [
            _Series(name, lab, a, b, arr[gi, a:b], fmt)
            for gi, segs in gpu_segments
            for a, b, lab in segs
        ]

    yield q.GR_ENGINE_ACTIVE, "gauge", per_gpu(q.GR_ENGINE_ACTIVE, t.gr, RATIO)
    yield q.SM_ACTIVE, "gauge", per_gpu(q.SM_ACTIVE, t.sm, RATIO)
    yield q.FB_USED, "gauge", per_gpu(q.FB_USED, t.fb_mib, INT)
    if spec.full:
        yield q.SM_OCCUPANCY, "gauge", per_gpu(q.SM_OCCUPANCY, np.round(t.sm * 0.6, 4), RATIO)
        yield q.TENSOR_ACTIVE, "gauge", per_gpu(q.TENSOR_ACTIVE, np.round(t.sm * 0.5, 4), RATIO)
        yield q.DRAM_ACTIVE, "gauge", per_gpu(q.DRAM_ACTIVE, np.round(t.gr * 0.4, 4), RATIO)
        yield q.FB_FREE, "gauge", per_gpu(q.FB_FREE, mem_mib[:, None] - t.fb_mib, INT)
        tdp = np.array([700.0 if g.pool.gpu_model == "H100" else 300.0 for g in t.gpus])
        yield (
            q.POWER,
            "gauge",
            per_gpu(q.POWER, np.round(60 + (tdp - 60)[:, None] * t.gr, 3), SECONDS),
        )
        yield q.XID, "gauge", per_gpu(q.XID, np.zeros_like(t.fb_mib), INT)

    pods = [(gpu, seg) for gpu in t.gpus for seg in gpu.segments]  # one GPU per pod in this fleet
    ones = np.ones(spec.n)
    req, plab, vin, vout = [], [], [], []
    for gpu, (a, b, wi, _r, pod, ns) in pods:
        w = wl[wi]
        common = {"namespace": ns, "pod": pod}
        req.append(
            _Series(
                q.KSM_REQUESTS,
                _labelstr(
                    **common,
                    container="main",
                    node=gpu.node,
                    resource=q.KSM_GPU_RESOURCE,
                    unit="integer",
                ),
                a,
                b,
                ones[a:b],
                INT,
            )
        )
        if w.labelled:
            pod_lbl = {
                q.ksm_label(k): v for k, v in zip(q.POD_LABEL_KEYS.values(), w.key, strict=True)
            }
            plab.append(
                _Series(q.KSM_POD_LABELS, _labelstr(**common, **pod_lbl), a, b, ones[a:b], INT)
            )
        if not w.serves_tokens:
            continue
        gi = _gpu_index(t, gpu)
        cum_in = np.floor(np.cumsum(t.gr[gi, a:b]) * w.in_tps * spec.step_s)
        cum_out = np.floor(np.cumsum(t.gr[gi, a:b]) * w.out_tps * spec.step_s)
        vl = _labelstr(model_name=w.model, **common)
        vin.append(_Series(q.VLLM_PROMPT_TOKENS, vl, a, b, cum_in, INT))
        vout.append(_Series(q.VLLM_GENERATION_TOKENS, vl, a, b, cum_out, INT))
    yield q.KSM_REQUESTS, "gauge", req
    yield q.KSM_POD_LABELS, "gauge", plab
    nodes: dict[str, Pool] = {}
    for gpu in t.gpus:
        nodes.setdefault(gpu.node, gpu.pool)
    nlab, ncap = [], []
    for node, p in nodes.items():
        lbl = dict(
            zip(
                q.NODE_LABEL_KEYS.values(),
                (p.name, p.capacity_type, p.instance_type, p.gpu_model),
                strict=True,
            )
        )
        nlab.append(
            _Series(
                q.KSM_NODE_LABELS,
                _labelstr(node=node, **{q.ksm_label(k): v for k, v in lbl.items()}),
                0,
                spec.n,
                ones,
                INT,
            )
        )
        cap = _labelstr(node=node, resource=q.KSM_GPU_RESOURCE, unit="integer")
        ncap.append(_Series(q.KSM_NODE_CAPACITY, cap, 0, spec.n, ones * p.gpus_per_node, INT))
    yield q.KSM_NODE_LABELS, "gauge", nlab
    yield q.KSM_NODE_CAPACITY, "gauge", ncap
    yield "vllm:prompt_tokens", "counter", vin
    yield "vllm:generation_tokens", "counter", vout
    if spec.full:
        yield from _serving_and_gateway(t, pods)
        yield from assistant_series(spec)


def _gpu_index(t: Truth, gpu: Gpu) -> int:
    cache = t.__dict__.setdefault("_gpu_idx", {id(g): i for i, g in enumerate(t.gpus)})
    return cache[id(gpu)]


def _histogram(
    name: str,
    lab: dict[str, str],
    a: int,
    b: int,
    rate: np.ndarray,
    shares: list[tuple[str, float]],
    mean_s: float,
) -> list[_Series]:
    """A cumulative histogram whose observations fall into buckets with fixed shares."""
    count = np.floor(np.cumsum(rate))
    out = []
    for le, share in shares:
        out.append(
            _Series(name + "_bucket", _labelstr(**lab, le=le), a, b, np.floor(count * share), INT)
        )
    out.append(_Series(name + "_count", _labelstr(**lab), a, b, count, INT))
    out.append(_Series(name + "_sum", _labelstr(**lab), a, b, np.round(count * mean_s, 3), SECONDS))
    return out


def _serving_and_gateway(t: Truth, pods: list) -> Iterator[tuple[str, str, list[_Series]]]:
    """The serving and gateway series the dashboards read (not needed by the report)."""
    spec = t.spec
    ttft, itl, run, wait, kv = [], [], [], [], []
    for gpu, (a, b, wi, _r, pod, ns) in pods:
        w = spec.workloads[wi]
        if not w.serves_tokens:
            continue
        g = t.gr[_gpu_index(t, gpu), a:b]
        lab = {"model_name": w.model, "namespace": ns, "pod": pod}
        per_sample = g * 120  # requests per sample
        ttft += _histogram(
            q.VLLM_TTFT,
            lab,
            a,
            b,
            per_sample,
            [("0.1", 0.5), ("0.5", 0.9), ("1.0", 0.99), ("2.5", 0.999), ("+Inf", 1.0)],
            0.15,
        )
        itl += _histogram(
            q.VLLM_ITL,
            lab,
            a,
            b,
            per_sample * 50,
            [("0.01", 0.3), ("0.025", 0.8), ("0.05", 0.97), ("0.1", 0.995), ("+Inf", 1.0)],
            0.02,
        )
        run.append(_Series(q.VLLM_RUNNING, _labelstr(**lab), a, b, np.round(g * 16), INT))
        wait.append(
            _Series(
                q.VLLM_WAITING, _labelstr(**lab), a, b, np.round(np.maximum(g - 0.6, 0) * 10), INT
            )
        )
        kv.append(_Series(q.VLLM_KV_CACHE, _labelstr(**lab), a, b, np.round(g * 0.9, 4), RATIO))
    yield q.VLLM_TTFT, "histogram", ttft
    yield q.VLLM_ITL, "histogram", itl
    yield q.VLLM_RUNNING, "gauge", run
    yield q.VLLM_WAITING, "gauge", wait
    yield q.VLLM_KV_CACHE, "gauge", kv

    n = spec.n
    reqs: list[_Series] = []
    lat: list[_Series] = []
    gtok: list[_Series] = []
    cost: list[_Series] = []
    hits: list[_Series] = []
    saved: list[_Series] = []
    wrong: list[_Series] = []
    brk: list[_Series] = []
    fb: list[_Series] = []
    teams = sorted({w.team for w in spec.workloads if w.labelled})
    for w in spec.workloads:
        if not w.serves_tokens:
            continue
        per = dict(zip(labels.METRIC_LABELS, (*w.key, w.pool), strict=True))
        rate = np.full(n, 60.0 * w.replicas * max(w.gr, 0.05))
        for code, share in (("200", 0.995), ("500", 0.004), ("429", 0.001)):
            reqs.append(
                _Series(
                    q.GW_REQUESTS,
                    _labelstr(**per, endpoint="chat", code=code),
                    0,
                    n,
                    np.floor(np.cumsum(rate * share)),
                    INT,
                )
            )
        lat += _histogram(
            q.GW_LATENCY.removesuffix("_total"),
            {**per, "endpoint": "chat"},
            0,
            n,
            rate,
            [("0.5", 0.6), ("1", 0.9), ("2.5", 0.99), ("+Inf", 1.0)],
            0.6,
        )
        for d, k in (("in", 400), ("out", 150)):
            gtok.append(
                _Series(
                    q.GW_TOKENS,
                    _labelstr(**per, direction=d),
                    0,
                    n,
                    np.floor(np.cumsum(rate * k)),
                    INT,
                )
            )
        cost.append(
            _Series(
                q.GW_COST, _labelstr(**per), 0, n, np.round(np.cumsum(rate * 0.0004), 3), SECONDS
            )
        )
        brk.append(
            _Series(q.GW_BREAKER, _labelstr(backend=f"{w.model}-{w.pool}"), 0, n, np.zeros(n), INT)
        )
    for team in teams:
        hits.append(
            _Series(
                q.GW_CACHE_HITS,
                _labelstr(team=team, layer="semantic"),
                0,
                n,
                np.floor(np.arange(1, n + 1) * 6.0),
                INT,
            )
        )
        saved.append(  # each hit priced like an answered request (GW_COST's 0.0004 per request)
            _Series(
                q.GW_CACHE_SAVED,
                _labelstr(team=team, layer="semantic"),
                0,
                n,
                np.round(np.floor(np.arange(1, n + 1) * 6.0) * 0.0004, 4),
                SECONDS,
            )
        )
        wrong.append(
            _Series(
                q.GW_CACHE_WRONG_HIT,
                _labelstr(team=team, model="chat"),
                0,
                n,
                np.full(n, 0.01),
                RATIO,
            )
        )
    fb.append(
        _Series(
            q.GW_FALLBACKS,
            _labelstr(route="chat", to="backup"),
            0,
            n,
            np.floor(np.arange(1, n + 1) * 0.2),
            INT,
        )
    )
    for name, typ, series in (
        (q.GW_REQUESTS, "counter", reqs),
        (q.GW_LATENCY, "histogram", lat),
        (q.GW_TOKENS, "counter", gtok),
        (q.GW_COST, "counter", cost),
        (q.GW_BREAKER, "gauge", brk),
        (q.GW_CACHE_HITS, "counter", hits),
        (q.GW_CACHE_SAVED, "counter", saved),
        (q.GW_CACHE_WRONG_HIT, "gauge", wrong),
        (q.GW_FALLBACKS, "counter", fb),
    ):
        yield name.removesuffix("_total"), typ, series


# Coding assistants through the gateway, per labelled team: six developers hold keys, four use
# them (adoption 4/6), mostly on weekdays 09:00-18:00 UTC (a trickle at other times). Per request: tokens in / out / cached, dollars
# spent and saved by the prompt cache; a session every 40 requests. `tandem assistants report`
# and the assistants dashboard read these.
ASSISTANT_DEVELOPERS = 6
ASSISTANT_ACTIVE = 4
ASSISTANT_TOOLS = ("claude-code", "codex", "cursor", "claude-code")
ASSISTANT_PER_REQUEST = {"in": 6000, "out": 400, "cached": 4000, "usd": 0.012, "saved": 0.0108}
ASSISTANT_REQUESTS_PER_MINUTE = 1.5  # per active developer, in working hours


def assistant_series(spec: FleetSpec) -> Iterator[tuple[str, str, list[_Series]]]:
    times = spec.start + spec.step_s * np.arange(1, spec.n + 1)
    hour, weekday = (times // 3600) % 24, ((times // 86400) + 3) % 7  # 1970-01-01 was a Thursday
    working = (hour >= 9) & (hour < 18) & (weekday < 5)
    per_sample = np.where(working, 1.0, 0.05) * ASSISTANT_REQUESTS_PER_MINUTE * spec.step_s / 60
    teams = sorted({w.team for w in spec.workloads if w.labelled})
    series: dict[str, list[_Series]] = {name: [] for name in _ASSISTANT_NAMES}
    n = spec.n
    for team in teams:
        series[q.GW_DEVELOPERS_WITH_KEYS].append(
            _Series(
                q.GW_DEVELOPERS_WITH_KEYS,
                _labelstr(team=team),
                0,
                n,
                np.full(n, float(ASSISTANT_DEVELOPERS)),
                INT,
            )
        )
        for i in range(ASSISTANT_ACTIVE):
            who = {"team": team, "developer": f"{team}-dev{i}", "tool": ASSISTANT_TOOLS[i]}
            requests = np.floor(np.cumsum(per_sample * (1 + 0.25 * i)))
            series[q.GW_ASSISTANT_REQUESTS].append(
                _Series(
                    q.GW_ASSISTANT_REQUESTS,
                    _labelstr(**who, model="coder", code="200"),
                    0,
                    n,
                    requests,
                    INT,
                )
            )
            for d in ("in", "out", "cached"):
                series[q.GW_ASSISTANT_TOKENS].append(
                    _Series(
                        q.GW_ASSISTANT_TOKENS,
                        _labelstr(**who, direction=d),
                        0,
                        n,
                        requests * ASSISTANT_PER_REQUEST[d],
                        INT,
                    )
                )
            for name, k in ((q.GW_ASSISTANT_COST, "usd"), (q.GW_ASSISTANT_SAVED, "saved")):
                series[name].append(
                    _Series(
                        name,
                        _labelstr(**who),
                        0,
                        n,
                        np.round(requests * ASSISTANT_PER_REQUEST[k], 3),
                        SECONDS,
                    )
                )
            series[q.GW_ASSISTANT_SESSIONS].append(
                _Series(
                    q.GW_ASSISTANT_SESSIONS,
                    _labelstr(**who),
                    0,
                    n,
                    np.ceil(requests / 40),
                    INT,
                )
            )
    for name in _ASSISTANT_NAMES:
        kind = "gauge" if name == q.GW_DEVELOPERS_WITH_KEYS else "counter"
        yield name.removesuffix("_total"), kind, series[name]


_ASSISTANT_NAMES = (
    q.GW_DEVELOPERS_WITH_KEYS,
    q.GW_ASSISTANT_REQUESTS,
    q.GW_ASSISTANT_TOKENS,
    q.GW_ASSISTANT_COST,
    q.GW_ASSISTANT_SAVED,
    q.GW_ASSISTANT_SESSIONS,
)


def write_openmetrics(t: Truth, out_dir: Path) -> Iterator[Path]:
    """Write one file per 54 h-aligned window, yielding each as soon as it is complete.

    A consumer can backfill (and delete) a window while the next one is written, so a month at
    benchmark scale never needs its ~14 GB of text on disk at once.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ts_digits = _digits(t.ts, 10, 0)
    families = list(_families(t))
    w0 = (int(t.ts[0]) // BLOCK_S) * BLOCK_S
    while w0 <= t.ts[-1]:
        a = int(np.searchsorted(t.ts, w0, "left"))
        b = int(np.searchsorted(t.ts, w0 + BLOCK_S, "left"))
        path = out_dir / f"fleet-{w0}.om"
        with open(path, "wb") as fh:
            for family, typ, series in families:
                fh.write(f"# TYPE {family} {typ}\n".encode())
                for s in series:
                    lo, hi = max(a, s.a), min(b, s.b)
                    if lo < hi:
                        fh.write(
                            _lines(
                                s.name + s.labels,
                                s.values[lo - s.a : hi - s.a],
                                ts_digits[lo:hi],
                                s.fmt,
                            )
                        )
            fh.write(b"# EOF\n")
        yield path
        w0 += BLOCK_S


def monthly(x: float, hours: float) -> float:
    """Scale a cost seen over `hours` to a 730-hour month."""
    return x * 730.0 / hours if hours else math.nan
