"""The RayJob for a dataset too large for the queue: KubeRay starts a Ray cluster from the serving
image, runs `python -m pipelines.raydata` on it (pipelines/raydata.py), and deletes the cluster
when the job ends. Pure: `tandem batch submit --via rayjob` prints the manifest for
`kubectl apply -f -`, and tests validate it against KubeRay's RayJob CRD.

The job runs in the `tandem-batch` namespace under the service account the BatchWorkers
component creates there (on EKS its IAM role reads and writes the batch bucket, so `s3://` input
and output work); it reaches the gateway with the team's key, read from a Secret the team creates
(`kubectl -n tandem-batch create secret generic <key-secret> --from-literal=api-key=...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vocabulary import labels, pins

SERVICE_ACCOUNT = "tandem-rayjob"
KEY_SECRET_KEY = "api-key"
RAY_UID = 1000  # the serving image's `ray` user (serving/Dockerfile)


@dataclass(frozen=True)
class RayJobSpec:
    name: str  # the RayJob's name (a DNS label)
    input_uri: str  # JSONL request lines (s3:// in a cluster)
    output_uri: str  # folder for the records
    gateway_url: str  # the gateway's in-cluster base URL
    team: str
    endpoint: str = "/v1/chat/completions"
    image: str = pins.LOCAL_IMAGES["serving"]  # the stack's serving image
    key_secret: str = "tandem-api-key"
    workers: int = 2
    worker_cpus: int = 2
    worker_memory_gib: int = 4
    actors: int = 2
    threads: int = 8
    max_attempts: int = 3
    deadline_s: int = 24 * 3600  # the Batch API's completion window
    namespace: str = labels.NS_BATCH


def job_name(text: str) -> str:
    """A RayJob name from any text (a file name): lowercase DNS label, at most 40 characters
    (KubeRay appends suffixes to the cluster and submitter names)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return name if name and name[0].isalpha() else f"batch-{name}".strip("-")


def rayjob_manifest(spec: RayJobSpec) -> dict[str, Any]:
    key_env = {
        "name": "TANDEM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": spec.key_secret, "key": KEY_SECRET_KEY}},
    }
    pod_labels = labels.platform_labels(
        **{
            labels.LABEL_TEAM: spec.team,
            labels.LABEL_COMPONENT: "batch-rayjob",
            labels.LABEL_WORKLOAD: "batch",
        }
    )

    def container(name: str, cpus: int, memory_gib: int) -> dict[str, Any]:
        res = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
        return {
            "name": name,
            "image": spec.image,
            "env": [key_env],
            "resources": {"requests": res, "limits": {"memory": res["memory"]}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }

    def pod(name: str, cpus: int, memory_gib: int) -> dict[str, Any]:
        return {
            "metadata": {"labels": pod_labels},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "securityContext": {"runAsNonRoot": True, "runAsUser": RAY_UID, "fsGroup": 100},
                "containers": [container(name, cpus, memory_gib)],
            },
        }

    entrypoint = " ".join(
        [
            "python -m pipelines.raydata",
            f"--input {spec.input_uri}",
            f"--output {spec.output_uri}",
            f"--gateway {spec.gateway_url}",
            f"--endpoint {spec.endpoint}",
            f"--actors {spec.actors}",
            f"--threads {spec.threads}",
            f"--max-attempts {spec.max_attempts}",
            f"--job {spec.name}",
        ]
    )
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": pod_labels,
        },
        "spec": {
            "entrypoint": entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": spec.deadline_s,
            "backoffLimit": 1,
            "rayClusterSpec": {
                "rayVersion": pins.RAY_VERSION,
                "headGroupSpec": {
                    # the driver runs on the head; the actors calling the gateway on workers
                    "rayStartParams": {"num-cpus": "0"},
                    "template": pod("ray-head", 1, 4),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu",
                        "replicas": spec.workers,
                        "minReplicas": spec.workers,
                        "maxReplicas": spec.workers,
                        "rayStartParams": {},
                        "template": pod("ray-worker", spec.worker_cpus, spec.worker_memory_gib),
                    }
                ],
            },
        },
    }
