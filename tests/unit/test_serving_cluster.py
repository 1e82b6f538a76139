"""InferenceCluster / UseCase under Pulumi mocks: what lands in the cluster, validated against
the KubeRay, Prometheus Operator and Kubernetes schemas."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from components.serving.inference_cluster import (
    GcsFaultTolerance,
    KubeRayOperator,
    KubeRayOperatorArgs,
    ModelCache,
)
from components.use_case import UseCase, UseCaseArgs, UseCaseCheckError
from serving import builder
from tandem import manifests
from tandem.engine import run_under_mocks
from tests.support.serving import contract, shipped_use_case
from vocabulary import labels, pins
from vocabulary.usecase import load_use_case

USECASES = Path(__file__).resolve().parents[2] / "stacks" / "usecases"
CHATBOT = shipped_use_case("support-chatbot")  # its registry version resolved as dev's plan does
EMBEDDINGS = load_use_case(USECASES / "document-embeddings.yaml")
RAY_SERVICE = "kubernetes:ray.io/v1:RayService"


def _program(**overrides):
    def program() -> None:
        operator = KubeRayOperator("kuberay", KubeRayOperatorArgs())
        UseCase(
            "chatbot",
            UseCaseArgs(
                use_case=CHATBOT, contract=contract("g6.2xlarge"), operator=operator, **overrides
            ),
        )
        cpu_overrides = {k: v for k, v in overrides.items() if k in ("environment", "gcs_ft")}
        UseCase(
            "embeddings",
            UseCaseArgs(use_case=EMBEDDINGS, contract=None, operator=operator, **cpu_overrides),
        )

    return program


@pytest.fixture(scope="module")
def resources():
    return run_under_mocks(_program())


@pytest.fixture(scope="module")
def prod_resources():
    return run_under_mocks(
        _program(
            environment="prod",
            gcs_ft=GcsFaultTolerance(
                redis_address="redis.tandem-serving:6379", password_secret="ray-redis"
            ),
            model_cache=ModelCache(kind="pvc"),
        )
    )


def _spec(resources, name: str) -> dict:
    return resources.one(RAY_SERVICE, f"{name}-rayservice").inputs["spec"]


def _strict_keys(obj, schema: dict, path: str = "") -> list[str]:
    """Keys the CRD does not declare: the API server would silently prune them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict) and "properties" in schema:
        errs = [f"{path}.{k}" for k in obj if k not in schema["properties"]]
        return errs + [
            e
            for k, v in obj.items()
            if k in schema["properties"]
            for e in _strict_keys(v, schema["properties"][k], f"{path}.{k}")
        ]
    if isinstance(obj, list) and "items" in schema:
        return [
            e for i, v in enumerate(obj) for e in _strict_keys(v, schema["items"], f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize("which", ["resources", "prod_resources"])
def test_every_object_validates_against_its_schema(which: str, request) -> None:
    res = request.getfixturevalue(which)
    os.environ.setdefault(manifests.CRD_DIR_ENV, str(USECASES.parents[2] / "shared" / "crds"))
    errors = manifests.validate_all(res, "1.31")
    assert not errors, "\n".join(map(str, errors))
    crds = manifests.load_crd_schemas(str(manifests.crd_dir()))
    for rec, obj in manifests.manifests(res):
        key = (obj["apiVersion"], obj["kind"])
        if key in crds:
            assert not _strict_keys(obj, crds[key]), (rec.name, _strict_keys(obj, crds[key]))


def test_serve_config_is_the_builders_output(resources) -> None:
    spec = _spec(resources, "chatbot")
    assert yaml.safe_load(spec["serveConfigV2"]) == builder.serve_config(CHATBOT.deployments)
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}


def pod_labels_version(group: dict) -> str:
    return group["template"]["metadata"]["labels"][labels.LABEL_MODEL_VERSION]


def test_head_has_no_gpus_and_workers_follow_the_pool(resources) -> None:
    cluster = _spec(resources, "chatbot")["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and "autoscalerOptions" in cluster
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert labels.GPU_RESOURCE not in str(head["resources"])
    assert head["image"] == pins.LOCAL_IMAGES["serving"]  # Platform passes the ECR-built ref
    (worker,) = cluster["workerGroupSpecs"]
    pod = worker["template"]["spec"]
    pool = contract("g6.2xlarge")
    assert pod["nodeSelector"] == pool.node_selector  # no fallback pool: pinned to this one
    assert pod["tolerations"] == [labels.gpu_toleration()]
    res = pod["containers"][0]["resources"]
    assert res["limits"][labels.GPU_RESOURCE] == "1" and res["limits"]["memory"] == "28Gi"
    # max_replicas 2, doubled: the chatbot's canary runs on the same worker group
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 4)
    assert pod_labels_version(worker) == "3"  # the registry version dev's resolution records
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_cpu_use_case_lands_off_the_gpu_pool(resources) -> None:
    cluster = _spec(resources, "embeddings")["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"]
    pod = worker["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["containers"][0]["image"] == pins.LOCAL_IMAGES["serving"]
    assert worker["rayStartParams"]["num-gpus"] == "0"


def test_neighbours(resources) -> None:
    release = resources.one("kubernetes:helm.sh/v3:Release")
    assert "featureGates" not in release.inputs["values"]  # a list override drops chart defaults
    assert (release.inputs["chart"], release.inputs["version"]) == (
        pins.KUBERAY_OPERATOR.name,
        pins.KUBERAY_OPERATOR.version,
    )
    pdb = resources.one("kubernetes:policy/v1:PodDisruptionBudget", "chatbot-pdb").inputs["spec"]
    assert pdb["selector"]["matchLabels"] == {
        labels.LABEL_USE_CASE: "support-chatbot",
        "ray.io/node-type": "worker",
    }
    monitor = resources.one(
        "kubernetes:monitoring.coreos.com/v1:PodMonitor", "chatbot-podmonitor"
    ).inputs["spec"]
    assert monitor["podMetricsEndpoints"][0]["port"] == "metrics"
    assert {r["targetLabel"] for r in monitor["podMetricsEndpoints"][0]["relabelings"]} == set(
        labels.METRIC_LABELS
    )
    netpol = resources.one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "chatbot-netpol"
    ).inputs["spec"]
    assert netpol["policyTypes"] == ["Ingress"]
    # every RayService child is parented under its UseCase and depends on nothing else global
    ic = resources.one(labels.TOKEN_INFERENCE_CLUSTER, "chatbot")
    assert ic.parent_name == "chatbot"


def test_prod_gets_gcs_fault_tolerance_and_model_cache(prod_resources) -> None:
    cluster = _spec(prod_resources, "chatbot")["rayClusterConfig"]
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"] == "redis.tandem-serving:6379"
    assert (
        cluster["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
        == "ray-redis"
    )
    prod_resources.one("kubernetes:core/v1:PersistentVolumeClaim", "chatbot-model-cache")
    pod = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert any(m["mountPath"] == "/models" for m in pod["containers"][0]["volumeMounts"])


def test_incremental_upgrade_strategy() -> None:
    uc = CHATBOT.model_copy(
        update={
            "upgrade": CHATBOT.upgrade.model_copy(
                update={"strategy": "NewClusterWithIncrementalUpgrade", "max_surge_percent": 25}
            )
        }
    )
    res = run_under_mocks(
        lambda: UseCase("c", UseCaseArgs(use_case=uc, contract=contract("g6.2xlarge")))
    )
    up = res.one(RAY_SERVICE).inputs["spec"]["upgradeStrategy"]
    assert up["type"] == "NewClusterWithIncrementalUpgrade"
    assert up["clusterUpgradeOptions"]["maxSurgePercent"] == 25


def test_a_model_that_does_not_fit_registers_nothing() -> None:
    too_long = CHATBOT.model_copy(deep=True)
    too_long.deployments[0].engine.max_model_len = 131072
    with pytest.raises(UseCaseCheckError, match=r"memory_fit.*does not fit"):
        run_under_mocks(
            lambda: UseCase("c", UseCaseArgs(use_case=too_long, contract=contract("g6.2xlarge")))
        )


def test_the_policy_pack_passes_both_example_use_cases(prod_resources) -> None:
    """The pack's serving, workload and review-gate rules, replayed offline on prod output."""
    from policies.harness import evaluate

    violations = evaluate(prod_resources, stack="prod")
    assert not violations, "\n".join(f"{v.policy}: {v.message}" for v in violations)
    manifest = prod_resources.one("kubernetes:core/v1:ConfigMap", "chatbot-review")
    assert manifest.parent_name == "chatbot"


def test_gateway_entry_points_at_the_serve_service() -> None:
    from components.use_case import gateway_entry
    from gateway.spec import routes_from_use_cases

    entries = [gateway_entry(CHATBOT), gateway_entry(EMBEDDINGS)]
    assert entries[0] is not None and entries[1] is not None
    assert entries[0].url == "http://support-chatbot-serve-svc.tandem-serving.svc:8000/chat/v1"
    assert (entries[0].use_case, entries[0].team) == (CHATBOT.name, CHATBOT.team)
    routes = routes_from_use_cases([entries[0], entries[1]])
    assert set(routes.routes) >= {"support-chat", "doc-embed"}


def test_rayservice_parity_with_kuberays_llm_samples(resources) -> None:
    """What KubeRay's LLM samples set and Tandem did not: token auth, the current throughput
    flags (and no flag Ray removed), disk for downloaded weights, a clean worker stop."""
    cluster = _spec(resources, "chatbot")["rayClusterConfig"]
    assert cluster["rayVersion"] == pins.RAY_VERSION
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    (worker,) = cluster["workerGroupSpecs"]
    ctr = worker["template"]["spec"]["containers"][0]
    for c in (head, ctr):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert "RAY_SERVE_ENABLE_EXPERIMENTAL_STREAMING" not in env  # removed from Ray in 2023
        for flag in (
            "RAY_SERVE_THROUGHPUT_OPTIMIZED",
            "RAY_SERVE_ENABLE_HA_PROXY",
            "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING",
            "VLLM_USE_RAY_V2_EXECUTOR_BACKEND",
        ):
            assert env[flag] == "1"
    # 8B bf16 weights (15 GiB) downloaded from S3: 10 + ceil(15 x 1.5) GiB of local disk
    assert ctr["resources"]["requests"]["ephemeral-storage"] == "33Gi"
    assert head["resources"]["requests"]["ephemeral-storage"] == "10Gi"
    assert ctr["lifecycle"]["preStop"]["exec"]["command"][-1] == "ray stop"


def test_hub_models_read_the_hf_token_from_a_secret(run_program) -> None:
    hub = CHATBOT.model_copy(
        update={
            "deployments": [
                CHATBOT.deployments[0].model_copy(
                    update={"source": "meta-llama/Llama-3.1-8B-Instruct"}
                )
            ]
        }
    )

    def program() -> None:
        UseCase("hub", UseCaseArgs(use_case=hub, contract=contract("g6.2xlarge")))

    spec = run_program(program).one(RAY_SERVICE).inputs["spec"]
    ctr = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    token = next(e for e in ctr["env"] if e["name"] == "HUGGING_FACE_HUB_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "hf_token",
        "optional": True,
    }
    assert "value" not in token
