"""promtool unit tests for every alert: each fires on a bad input and stays quiet on a good one.

`unit_tests(rule_file_name)` returns the test document for `promtool test rules`; it is written
against `TEST_SETTINGS` (a stack with budgets and one priced instance type) so expected values are
known. The good and bad inputs sit side by side in each case, so "fires for the bad one only" is
one assertion: promtool fails if an alert fires that the case does not list.
"""

from __future__ import annotations

from observability import promql as q
from observability.rules import DeploymentSlo, RuleSettings

TEST_SETTINGS = RuleSettings(
    scrape_interval_s=60,
    gpu_prices={("p5.48xlarge", "on-demand"): 6.88},
    team_budgets_usd={"support": 1000.0, "search": 1_000_000.0},
    platform_budget_usd=40_000.0,
    platform_budget_thresholds=(0.5, 1.0, 2.0),
    deployment_slos=(
        DeploymentSlo("support", "chatbot", "slow-llm", ttft_p95_s=1.0),
        DeploymentSlo("support", "chatbot", "fast-llm", ttft_p95_s=1.0),
        DeploymentSlo("search", "embeddings", "minilm", latency_p95_ms=250),
    ),
)

POD_LABELS = {
    "team": "support",
    "use_case": "chatbot",
    "model": "llama",
    "model_version": "v1",
    "rollout": "stable",
}


def _sel(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _pod_labels(namespace: str, pod: str, **values: str) -> dict:
    lbl = {q.ksm_label(q.POD_LABEL_KEYS[k]): v for k, v in {**POD_LABELS, **values}.items()}
    return {
        "series": _sel(q.KSM_POD_LABELS, namespace=namespace, pod=pod, **lbl),
        "values": "1x600",
    }


def _case(
    series: list[dict], checks: list[tuple[str, str, list[dict]]], interval: str = "1m"
) -> dict:
    return {
        "interval": interval,
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": alerts}
            for at, name, alerts in checks
        ],
    }


def _alert(severity: str, **labels: str) -> dict:
    return {"exp_labels": {**labels, "severity": severity}}


def _gpu(pod: str, gpu: str, values: str) -> dict:
    return {
        "series": _sel(
            q.GR_ENGINE_ACTIVE,
            gpu=gpu,
            UUID=f"GPU-{gpu}",
            Hostname="n1",
            namespace="ml",
            pod=pod,
            container="main",
        ),
        "values": values,
    }


def unit_tests(rule_file_name: str) -> dict:
    s = TEST_SETTINGS
    idle_labels = dict(gpu="0", UUID="GPU-0", Hostname="n1", namespace="ml", pod="idle-0", container="main",
                       **POD_LABELS)  # fmt: skip
    # debug-0 has no Tandem labels: its idle GPU still alerts, as team "unlabelled"
    unlabelled = dict(gpu="2", UUID="GPU-2", Hostname="n1", namespace="ml", pod="debug-0", container="main",
                      team="unlabelled", use_case="unlabelled", model="unlabelled")  # fmt: skip
    tests = [
        _case(
            [
                _gpu("idle-0", "0", "0x300"),
                _gpu("busy-0", "1", "0.6x300"),
                _gpu("debug-0", "2", "0x300"),
                _pod_labels("ml", "idle-0"),
                _pod_labels("ml", "busy-0"),
            ],
            [
                ("90m", "TandemGpuAllocatedIdle", []),  # idle, but not yet for idle_for
                (
                    "4h",
                    "TandemGpuAllocatedIdle",
                    [_alert("warning", **idle_labels), _alert("warning", **unlabelled)],
                ),
            ],
        ),  # fmt: skip
    ]
    ttft = f"{q.VLLM_TTFT}_bucket"
    series = []
    for model, good in (("slow", "80"), ("fast", "99.9")):
        lab = {"namespace": "ml", "model_name": model, "pod": f"{model}-0"}
        series += [
            {"series": _sel(ttft, le=s.ttft_slo_seconds, **lab), "values": f"0+{good}x420"},
            {"series": _sel(f"{q.VLLM_TTFT}_count", **lab), "values": "0+100x420"},
        ]
    gw = []
    for team, bad in (("support", "30"), ("search", "0")):
        lab = {**POD_LABELS, "team": team, "pool": "h100", "endpoint": "chat"}
        gw += [
            {"series": _sel(q.GW_REQUESTS, code="500", **lab), "values": f"0+{bad}x420"},
            {"series": _sel(q.GW_REQUESTS, code="200", **lab), "values": "0+70x420"},
        ]
    wl = {k: v for k, v in POD_LABELS.items()}
    tests.append(
        _case(
            series + gw,
            [
                (
                    "40m",
                    "TandemTTFTBudgetBurnFast",
                    [_alert("critical", namespace="ml", model_name="slow")],
                ),
                (
                    "40m",
                    "TandemTTFTBudgetBurnSlow",
                    [_alert("warning", namespace="ml", model_name="slow")],
                ),
                ("40m", "TandemErrorRateBudgetBurnFast", [_alert("critical", **wl)]),
                ("40m", "TandemErrorRateBudgetBurnSlow", [_alert("warning", **wl)]),
            ],
        )
    )
    tests.append(
        _case(
            [
                {"series": _sel(q.GW_BREAKER, backend="vllm-a"), "values": "1x20"},
                {"series": _sel(q.GW_BREAKER, backend="vllm-b"), "values": "0x20"},
                # still down: open, and half-open while a probe is out
                {
                    "series": _sel(q.GW_BREAKER, backend="vllm-c"),
                    "values": " ".join(["1", "2"] * 10),
                },
                # per route (team, model) on a replica. gw-a: 20 % wrong over 50 re-checks
                # alerts; gw-b: 1 % stays quiet; gw-c: 50 % from 3 re-checks is noise; gw-d (3 %
                # against its own 2 % threshold) alerts, gw-e (8 % against its own 10 %) does not:
                # a replica's exported threshold wins over the stack's default. gw-f: its "search"
                # route (20 % of 50) alerts, its "chat" route (50 % of 3) does not
                *(
                    {
                        "series": _sel(
                            q.GW_CACHE_WRONG_HIT, namespace="gw", pod=pod, team="t", model=m
                        ),
                        "values": v,
                    }
                    for pod, m, v in (
                        ("gw-a", "chat", "0.2x30"),
                        ("gw-b", "chat", "0.01x30"),
                        ("gw-c", "chat", "0.5x30"),
                        ("gw-d", "chat", "0.03x30"),
                        ("gw-e", "chat", "0.08x30"),
                        ("gw-f", "chat", "0.5x30"),
                        ("gw-f", "search", "0.2x30"),
                    )
                ),
                *(
                    {
                        "series": _sel(q.GW_CACHE_WRONG_HIT_THRESHOLD, namespace="gw", pod=pod),
                        "values": v,
                    }
                    for pod, v in (("gw-d", "0.02x30"), ("gw-e", "0.1x30"))
                ),
                *(
                    {
                        "series": _sel(
                            q.GW_CACHE_RECHECKS,
                            namespace="gw",
                            pod=pod,
                            team="t",
                            model=m,
                            result=r,
                        ),
                        "values": v,
                    }
                    for pod, m, r, v in (
                        ("gw-a", "chat", "disagree", "10x30"),
                        ("gw-a", "chat", "agree", "40x30"),
                        ("gw-b", "chat", "agree", "99x30"),
                        ("gw-c", "chat", "disagree", "2x30"),
                        ("gw-c", "chat", "agree", "1x30"),
                        ("gw-d", "chat", "agree", "40x30"),
                        ("gw-e", "chat", "agree", "40x30"),
                        ("gw-f", "chat", "disagree", "2x30"),
                        ("gw-f", "chat", "agree", "1x30"),
                        ("gw-f", "search", "disagree", "10x30"),
                        ("gw-f", "search", "agree", "40x30"),
                    )
                ),
            ],
            [
                ("3m", "TandemGatewayBreakerOpen", []),
                (
                    "10m",
                    "TandemGatewayBreakerOpen",
                    [_alert("warning", backend="vllm-a"), _alert("warning", backend="vllm-c")],
                ),
                (
                    "20m",
                    "TandemSemanticCacheWrongHitHigh",
                    [
                        _alert("warning", namespace="gw", pod="gw-a", team="t", model="chat"),
                        _alert("warning", namespace="gw", pod="gw-d", team="t", model="chat"),
                        _alert("warning", namespace="gw", pod="gw-f", team="t", model="search"),
                    ],
                ),
            ],
        )  # fmt: skip
    )
    gpu_a = {"gpu": "0", "UUID": "GPU-a", "Hostname": "n1"}
    tests.append(
        _case(
            [
                {"series": _sel(q.XID, **gpu_a), "values": "0 0 0 79 0 0 0 0 0 0 0 0 0"},
                {"series": _sel(q.XID, gpu="1", UUID="GPU-b", Hostname="n1"), "values": "0x12"},
                {
                    "series": _sel("up", job="dcgm-exporter", instance="10.0.0.1:9400"),
                    "values": "0x20",
                },
                {
                    "series": _sel("up", job="kube-state-metrics", instance="ksm:8080"),
                    "values": "1x20",
                },
            ],
            [
                ("5m", "TandemDcgmXidError", [{**_alert("critical", **gpu_a)}]),
                ("10m", "TandemDcgmXidError", []),  # the error left the 5-minute window
                (
                    "8m",
                    "TandemExporterDown",
                    [_alert("critical", job="dcgm-exporter", instance="10.0.0.1:9400")],
                ),
                ("18m", "TandemExporterAbsent", []),
            ],
        )  # fmt: skip
    )
    tests.append(
        _case(
            [
                {
                    "series": _sel("up", job="dcgm-exporter", instance="10.0.0.1:9400"),
                    "values": "1x20",
                }
            ],
            [("18m", "TandemExporterAbsent", [_alert("critical", job="kube-state-metrics")])],
        )
    )
    node = {
        q.ksm_label(q.NODE_LABEL_KEYS["pool"]): "h100",
        q.ksm_label(q.NODE_LABEL_KEYS["capacity_type"]): "on-demand",
        q.ksm_label(q.NODE_LABEL_KEYS["instance_type"]): "p5.48xlarge",
        q.ksm_label(q.NODE_LABEL_KEYS["gpu_model"]): "H100",
    }
    req = {"container": "main", "node": "n1", "resource": q.KSM_GPU_RESOURCE, "unit": "integer"}
    tests.append(
        _case(
            [
                {
                    "series": _sel(q.KSM_REQUESTS, namespace="ml", pod="big-0", **req),
                    "values": "8x200",
                },
                {
                    "series": _sel(q.KSM_REQUESTS, namespace="ml", pod="small-0", **req),
                    "values": "1x200",
                },
                _pod_labels("ml", "big-0"),
                _pod_labels("ml", "small-0", team="search"),
                {"series": _sel(q.KSM_NODE_LABELS, node="n1", **node), "values": "1x200"},
            ],
            [
                ("30m", "TandemTeamBudgetBurn", []),  # over budget, not yet for an hour
                (
                    "2h",
                    "TandemTeamBudgetBurn",
                    [_alert("warning", team="support")],
                ),  # search: 1 GPU, $1M budget
                # ~$50k a month against $40k: past 50 % and 100 %, not 200 %
                (
                    "2h",
                    "TandemPlatformBudgetBurn",
                    [_alert("warning", threshold="0.5"), _alert("warning", threshold="1")],
                ),
            ],
        )  # fmt: skip
    )
    # Per-deployment SLOs (the use-case files' `slo:`): the slow model's p95 TTFT is between
    # 1 s and 2.5 s (target 1 s), the fast one's under 0.5 s; the embedder's p95 is ~400 ms
    # against 250 ms. Each alert carries its use case's team for routing.
    buckets = {"slow-llm": ("10", "20", "100"), "fast-llm": ("99", "100", "100")}
    slo_series = []
    for model, (b05, b1, b25) in buckets.items():
        lab = {"use_case": "chatbot", "model": model, "team": "support", "pod": f"{model}-0"}
        for le, rate in (("0.5", b05), ("1.0", b1), ("2.5", b25), ("+Inf", b25)):
            slo_series.append(
                {
                    "series": _sel(f"ray_{q.VLLM_TTFT}_bucket", le=le, **lab),
                    "values": f"0+{rate}x40",
                }
            )
    emb = {
        "use_case": "embeddings",
        "model": "minilm",
        "team": "search",
        "deployment": "BatchEmbedder",
    }
    for le, rate in (("100", "10"), ("250", "50"), ("500", "100"), ("+Inf", "100")):
        slo_series.append(
            {"series": _sel(f"{q.SERVE_LATENCY_MS}_bucket", le=le, **emb), "values": f"0+{rate}x40"}
        )
    who = {"team": "support", "use_case": "chatbot"}
    tests.append(
        _case(
            slo_series,
            [
                ("5m", "TandemDeploymentTTFTSlo", []),  # not yet for 10 minutes
                ("25m", "TandemDeploymentTTFTSlo", [_alert("warning", model="slow-llm", **who)]),
                (
                    "25m",
                    "TandemDeploymentLatencySlo",
                    [_alert("warning", team="search", use_case="embeddings", model="minilm")],
                ),
            ],
        )  # fmt: skip
    )
    return {"rule_files": [rule_file_name], "evaluation_interval": "1m", "tests": tests}
