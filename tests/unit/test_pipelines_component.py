"""The batch workers in the shipped stacks (under Pulumi mocks): KEDA pinned, a ScaledObject on the
queue that is valid against KEDA's CRD and scales to zero, workers on the gateway's own routes
file, the queue's Redis on a volume, and the bucket and roles the files need. Plus the
`tandem:batch` section's mistakes, and the priority rule's arithmetic."""

from __future__ import annotations

import pytest
import yaml

from components.pipelines import keda_redis_metadata, scaler_triggers
from gateway.config import parse_config as parse_routes
from pipelines.limiter import YieldLimiter
from tandem import manifests
from tandem.engine import Resources
from tandem.stack import load
from vocabulary import pins
from vocabulary.config import ConfigError, parse_config
from vocabulary.pipelines import CONSUMER_GROUP, Workers, YieldToOnline

STACKS = ("dev", "prod")
SCALED = "kubernetes:keda.sh/v1alpha1:ScaledObject"


def _res(stack_resources, stack: str) -> Resources:
    return Resources(stack_resources[stack])


@pytest.mark.parametrize("stack", STACKS)
def test_scaled_object_is_valid_against_the_keda_crd_and_scales_to_zero(
    stack_resources, crd_dir, stack: str
) -> None:
    res = _res(stack_resources, stack)
    rec = res.one(SCALED, "batch-workers-scaler")
    obj = manifests.to_manifest(rec)
    assert manifests.validate_manifest(obj, "1.31") == []
    spec = obj["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "batch-workers",
    }
    # the keda chart's CRD adds bounds on the HPA behavior's window (pins.CRD_SNAPSHOTS): Tandem
    # sets no behavior, so both schemas accept the object
    assert "behavior" not in yaml.safe_dump(spec)
    streams = {t["metadata"]["stream"] for t in spec["triggers"]}
    assert streams == {"tandem:batch:lines", "tandem:batch:jobs"}
    assert all(t["type"] == "redis-streams" for t in spec["triggers"])
    assert all(t["metadata"]["consumerGroup"] == CONSUMER_GROUP for t in spec["triggers"])
    if load(stack).config.gateway.redis == "in-cluster":
        assert all(t["metadata"]["address"].startswith("gateway-redis.") for t in spec["triggers"])
    else:  # ElastiCache: in-transit encryption
        assert {t["metadata"]["enableTLS"] for t in spec["triggers"]} == {"true"}


@pytest.mark.parametrize("stack", STACKS)
def test_workers_run_the_gateways_routes_file_and_keda_owns_the_count(
    stack_resources, stack: str
) -> None:
    res = _res(stack_resources, stack)
    dep = manifests.plain(res.one("kubernetes:apps/v1:Deployment", "batch-workers").inputs)
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][:2] == ["batch", "worker"]
    assert pod["serviceAccountName"] == "tandem-batch-files"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["routes"]["configMap"]["name"] == "gateway-routes"
    routes = yaml.safe_load(
        res.one("kubernetes:core/v1:ConfigMap", "gateway-routes").inputs["data"]["routes.yaml"]
    )
    cfg = parse_routes({k: v for k, v in routes.items() if k != "keys_file"})
    assert cfg.batch is not None and cfg.redis is not None
    assert cfg.batch.files.bucket.startswith("tandem-")
    # the priority rule knows the online routes' SLOs, from the use cases
    assert cfg.batch.workers.yield_to_online.slo_p95_ms
    assert set(cfg.batch.workers.yield_to_online.slo_p95_ms) <= set(cfg.routes)
    assert any(r.batch_discount for r in cfg.routes.values())


@pytest.mark.parametrize("stack", STACKS)
def test_the_queue_outlives_its_redis_pod(stack_resources, stack: str) -> None:
    res = _res(stack_resources, stack)
    if load(stack).config.gateway.redis == "elasticache":  # a replica in another zone
        group = res.one("aws:elasticache/replicationGroup:ReplicationGroup", "gateway-redis").inputs
        assert group["multiAzEnabled"] and group["automaticFailoverEnabled"]
        assert group["numCacheClusters"] >= 2
        return
    pvc = res.one("kubernetes:core/v1:PersistentVolumeClaim", "gateway-redis-data").inputs
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    dep = manifests.plain(res.one("kubernetes:apps/v1:Deployment", "gateway-redis").inputs)
    pod = dep["spec"]["template"]["spec"]
    assert "--appendonly" in " ".join(map(str, pod["containers"][0].get("args", []))) or any(
        "appendonly" in str(x) for x in pod["containers"][0].get("command", [])
    )
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "gateway-redis-data"


@pytest.mark.parametrize("stack", STACKS)
def test_keda_is_the_pinned_chart_and_the_bucket_is_private(stack_resources, stack: str) -> None:
    res = _res(stack_resources, stack)
    release = res.one("kubernetes:helm.sh/v3:Release", "keda-keda").inputs
    assert (release["chart"], release["version"]) == ("keda", pins.KEDA.version)
    assert release["repositoryOpts"]["repo"] == pins.KEDA.repo
    pab = res.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "batch-files-pab")
    assert pab.inputs["blockPublicAcls"] and pab.inputs["restrictPublicBuckets"]
    life = res.one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "batch-files-lifecycle"
    )
    assert life.inputs["rules"][0]["expiration"]["days"] >= 1


def test_triggers_read_the_queue_redis_url() -> None:
    assert keda_redis_metadata("rediss://cache.example:6380/2") == {
        "address": "cache.example:6380",
        "databaseIndex": "2",
        "enableTLS": "true",
    }
    triggers = scaler_triggers("redis://r:6379/0", "p", 50)
    lag = [t for t in triggers if "lagCount" in t["metadata"]]
    assert {t["metadata"]["stream"] for t in lag} == {"p:lines", "p:jobs"}
    assert {t["metadata"]["activationLagCount"] for t in lag} == {"0"}


BASE = {
    "environment": "dev",
    "tags": {"team": "ml", "cost-center": "cc-1"},
    "gpuPools": [{"name": "l4", "instanceTypes": ["g6.xlarge"], "minNodes": 0, "maxNodes": 2}],
    "gateway": {"enabled": True},
}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"gateway": {"enabled": True, "redis": "none"}}, ["batch.enabled", "gateway.redis"]),
        ({"batch": {"minReplicas": 3, "maxReplicas": 2}}, ["batch", "minReplicas (3)"]),
        ({"batch": {"minConcurrency": 9, "concurrency": 4}}, ["batch", "minConcurrency (9)"]),
        ({"batch": {"linesPerReplica": 0}}, ["batch.linesPerReplica"]),
        ({"batch": {"maxAttemps": 3}}, ["batch.maxAttemps", "maxAttempts"]),
        ({"cluster": {"mode": "existing", "kubeconfig": "k"}}, ["batch.filesBucket"]),
    ],
)
def test_batch_section_mistakes_name_the_field(extra: dict, needles: list[str]) -> None:
    raw = {**BASE, **extra}
    raw["batch"] = {"enabled": True, **raw.get("batch", {})}
    if raw.get("cluster", {}).get("mode") == "existing":
        raw["gpuPools"] = [{**BASE["gpuPools"][0], "mechanism": "existing"}]
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    for needle in needles:
        assert needle in str(exc.value)


def _limiter(**rule: float) -> YieldLimiter:
    return YieldLimiter(
        Workers(
            concurrency=32,
            min_concurrency=2,
            yield_to_online=YieldToOnline(slo_p95_ms={"chat": 100.0}, **rule),
        )
    )


def test_the_cap_starts_low_grows_while_online_is_fine_and_halves_near_the_slo() -> None:
    lim = _limiter()  # window_s 3
    assert lim.cap == 2  # a batch starting beside busy traffic ramps up
    caps = [lim.update({"chat": 0.040}, now=t) for t in range(5)]
    assert caps == [4, 8, 16, 32, 32]  # slow start up to `concurrency`
    assert lim.update({"chat": 0.085}, now=5) == 16  # 85% of the SLO: halve
    # the window still holds samples from before the cut: no second cut, no growth, for 3 s
    assert lim.update({"chat": 0.090}, now=6) == 16
    assert lim.update({"chat": 0.040}, now=7) == 16
    assert lim.update({"chat": 0.040}, now=8) == 17  # a window later: one line at a time
    assert lim.update({"chat": 0.040}, now=9) == 17
    assert lim.update({"chat": 0.075}, now=12) == 17  # between 72% and 80%: hold
    assert lim.update({"chat": 0.040}, now=12.5) == 18
    for t in range(15, 60, 3):
        lim.update({"chat": 0.5}, now=t)
    assert lim.cap == 2  # never below min_concurrency: the batch still progresses


def test_no_online_traffic_or_no_slo_leaves_the_batch_at_full_speed() -> None:
    lim = _limiter()
    assert lim.update({}, now=0) == 4  # no samples: no pressure, grows
    assert lim.update({"other-route": 9.0}, now=1) == 8  # routes without an SLO never slow it
    free = YieldLimiter(Workers(concurrency=24))
    assert free.cap == 24 and free.update({"chat": 9.0}) == 24


def test_the_rayjob_manifest_is_valid_against_the_kuberay_crd(crd_dir, tmp_path, capsys) -> None:
    """`tandem batch submit --via rayjob` prints what `kubectl apply -f -` takes."""
    from tandem.cli import main

    data = tmp_path / "Corpus 2026.jsonl"
    data.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n')
    code = main(
        ["batch", "submit", str(data), "--via", "rayjob", "--output-uri", "s3://bucket/out/",
         "--endpoint", "/v1/embeddings", "--team", "knowledge"]
    )  # fmt: skip
    assert code == 0
    obj = yaml.safe_load(capsys.readouterr().out)
    assert manifests.validate_manifest(obj, "1.31") == []
    assert obj["metadata"] == {
        **obj["metadata"],
        "name": "corpus-2026",
        "namespace": "tandem-batch",
    }
    spec = obj["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == pins.RAY_VERSION
    assert "python -m pipelines.raydata" in spec["entrypoint"]
    assert "--output s3://bucket/out/" in spec["entrypoint"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "tandem-rayjob"


def test_submit_without_output_uri_is_a_clear_error(tmp_path, capsys) -> None:
    from tandem.cli import main

    data = tmp_path / "x.jsonl"
    data.write_text("{}\n")
    assert main(["batch", "submit", str(data), "--via", "rayjob"]) != 0
    assert "--output-uri" in capsys.readouterr().err
