"""Redis for platform components: in-cluster for dev and existing clusters, ElastiCache on EKS.

The gateway keeps usage counters and the semantic cache in it; in prod the inference clusters
keep Ray's GCS state in one (GCS fault tolerance). One implementation, so both get the same
hardening: non-root, read-only root FS, a NetworkPolicy that admits only the named clients, and
on ElastiCache encryption in transit and at rest with a Multi-AZ replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.pod_security import container_security, pod_security
from vocabulary import labels, pins

REDIS_PORT = 6379


@dataclass
class ElastiCacheArgs:
    subnet_ids: list[pulumi.Input[str]]
    security_group_ids: list[pulumi.Input[str]]
    node_type: str = "cache.t4g.small"
    tags: dict[str, str] = field(default_factory=dict)


# Redis keeps its data under the container's limit itself: without maxmemory, cache entries
# (shared gateway answers, TTL'd) grow with traffic until the kernel kills Redis and every
# rate-limit and budget counter with it. volatile-lru evicts only keys that expire anyway (cache
# entries, per-window counters), least recently used first (one-second clock), so counters in use
# outlive cold cache entries, and keys without a TTL (budget spend, Ray's GCS state, the cache's
# capped stream) are never evicted; ElastiCache's default parameter group uses the same policy.
# The rest of the limit is Redis' own overhead and AOF rewrite.
REDIS_LIMIT_MIB = 512
REDIS_MAXMEMORY_MIB = REDIS_LIMIT_MIB * 3 // 4


def in_cluster_redis(
    name: str,
    *,
    namespace: str,
    component: str,
    object_labels: dict[str, str],
    clients: list[dict[str, Any]],
    opts: pulumi.ResourceOptions,
    volume_gib: int | None = None,
    eviction: str = "volatile-lru",
) -> pulumi.Output[str]:
    """A single-replica Redis Deployment + Service reachable only from `clients` (NetworkPolicy
    peers). Returns its `redis://` URL. `eviction` is its maxmemory policy: volatile-lru for
    caches and counters (above; the batch queue's streams carry no TTL, so they are never
    evicted); a store whose data must not vanish (Feast's online store) passes "noeviction", so
    a full Redis refuses writes loudly instead.

    Its append-only file (every write, fsynced every second) lives in an emptyDir by default: it
    survives a container restart, not the pod's rescheduling. With `volume_gib` (the batch
    queue's Redis) it lives on a PersistentVolumeClaim and survives both."""
    selector = {"app.kubernetes.io/name": name, labels.LABEL_COMPONENT: component}
    data: dict[str, Any] = {"name": "data", "emptyDir": {}}
    if volume_gib is not None:
        k8s.core.v1.PersistentVolumeClaim(
            f"{name}-data",
            metadata={"name": f"{name}-data", "namespace": namespace, "labels": object_labels},
            spec={
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": f"{volume_gib}Gi"}},
            },
            opts=opts,
        )
        data = {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}}
    k8s.apps.v1.Deployment(
        name,
        metadata={"name": name, "namespace": namespace, "labels": object_labels},
        spec={
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {**object_labels, **selector}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(999),
                    "containers": [
                        {
                            "name": "redis",
                            "image": pins.REDIS_IMAGE.ref,
                            "args": [
                                *("--appendonly", "yes", "--dir", "/data"),
                                *("--maxmemory", f"{REDIS_MAXMEMORY_MIB}mb"),
                                *("--maxmemory-policy", eviction),
                            ],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": f"{REDIS_LIMIT_MIB}Mi"},
                            },
                            "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
                            "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
                            "securityContext": container_security(),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [data],
                },
            },
        },
        opts=opts,
    )
    k8s.core.v1.Service(
        name,
        metadata={"name": name, "namespace": namespace, "labels": object_labels},
        spec={
            "selector": selector,
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        name,
        metadata={"name": name, "namespace": namespace, "labels": object_labels},
        spec={
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": clients, "ports": [{"port": REDIS_PORT, "protocol": "TCP"}]}],
        },
        opts=opts,
    )
    return pulumi.Output.from_input(f"redis://{name}.{namespace}.svc.cluster.local:{REDIS_PORT}/0")


def elasticache_redis(
    name: str, ec: ElastiCacheArgs, *, description: str, parent: pulumi.Resource
) -> pulumi.Output[str]:
    """An encrypted, Multi-AZ ElastiCache replication group. Returns its `rediss://` URL."""
    import pulumi_aws as aws

    aws_opts = pulumi.ResourceOptions(parent=parent)
    subnets = aws.elasticache.SubnetGroup(
        name, subnet_ids=ec.subnet_ids, description=description, tags=ec.tags, opts=aws_opts
    )
    group = aws.elasticache.ReplicationGroup(
        name,
        description=description,
        engine="redis",
        engine_version="7.1",
        node_type=ec.node_type,
        num_cache_clusters=2,
        automatic_failover_enabled=True,
        multi_az_enabled=True,
        at_rest_encryption_enabled=True,
        transit_encryption_enabled=True,
        port=REDIS_PORT,
        subnet_group_name=subnets.name,
        security_group_ids=ec.security_group_ids,
        snapshot_retention_limit=1,
        tags=ec.tags,
        opts=aws_opts,
    )
    return group.primary_endpoint_address.apply(lambda host: f"rediss://{host}:{REDIS_PORT}/0")
