"""Cluster and data baseline: the EKS control plane, S3 buckets, ElastiCache.

Model weights, feature data and prompt caches live in these stores; a public bucket or an
unencrypted Redis leaks customer data, and a public API endpoint exposes the whole GPU fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from policies.framework import (
    Finding,
    ResourceView,
    as_list,
    each,
    get,
    resource_rule,
    stack_rule,
    truthy,
)
from policies.rules import common as c
from policies.settings import PolicySettings

OPEN_CIDRS = ("0.0.0.0/0", "::/0")
REQUIRED_LOG_TYPES = ("api", "audit", "authenticator")

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
BUCKET_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
BUCKET_VERSIONING = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")


@resource_rule(
    "eks-public-endpoint",
    "The EKS API endpoint is private, or public only to named CIDRs.",
    "critical",
    "Set vpcConfig.endpointPublicAccess: false (reach the API through the VPC / a bastion) or list "
    "your office / CI egress ranges in vpcConfig.publicAccessCidrs.",
    (c.EKS_CLUSTER,),
    tags=("security", "cluster"),
)
def eks_public_endpoint(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    vpc = get(res.props, "vpcConfig", default={})
    if get(vpc, "endpointPublicAccess", default=True) is False:
        return
    cidrs = [str(x) for x in as_list(get(vpc, "publicAccessCidrs"))]
    if not cidrs or any(x in OPEN_CIDRS for x in cidrs):
        yield f"cluster '{res.name}' exposes its Kubernetes API to the internet ({cidrs or 'all addresses'})"


@resource_rule(
    "eks-secrets-encryption",
    "EKS envelope-encrypts Kubernetes Secrets with a KMS key.",
    "high",
    "Add encryptionConfig: {resources: [secrets], provider: {keyArn: <KMS key ARN>}}.",
    (c.EKS_CLUSTER,),
    tags=("security", "cluster"),
)
def eks_secrets_encryption(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    cfg = get(res.props, "encryptionConfig", default={})
    # Older schemas had a list of configs; accept either shape.
    configs = as_list(cfg) if not isinstance(cfg, Mapping) else [cfg]
    for conf in configs:
        if "secrets" in as_list(get(conf, "resources")) and get(conf, "provider", "keyArn"):
            return
    yield f"cluster '{res.name}' does not encrypt Secrets (API keys, HF tokens) with a KMS key"


@resource_rule(
    "eks-control-plane-logs",
    f"EKS ships control-plane logs ({', '.join(REQUIRED_LOG_TYPES)}) to CloudWatch.",
    "medium",
    f"Set enabledClusterLogTypes to include {list(REQUIRED_LOG_TYPES)}.",
    (c.EKS_CLUSTER,),
    tags=("security", "cluster"),
)
def eks_control_plane_logs(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    enabled = set(as_list(get(res.props, "enabledClusterLogTypes")))
    if missing := [t for t in REQUIRED_LOG_TYPES if t not in enabled]:
        yield f"cluster '{res.name}' does not log {missing}: no audit trail of who changed the cluster"


@resource_rule(
    "elasticache-encryption",
    "ElastiCache (Redis/Valkey) encrypts in transit and at rest.",
    "high",
    "Set transitEncryptionEnabled: true and atRestEncryptionEnabled: true (with authToken or RBAC); "
    "the gateway's semantic cache holds prompts and completions.",
    (REPLICATION_GROUP,),
    tags=("security", "data"),
)
def elasticache_encryption(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for field, what in (
        ("transitEncryptionEnabled", "in transit"),
        ("atRestEncryptionEnabled", "at rest"),
    ):
        if not truthy(get(res.props, field)):
            yield f"replication group '{res.name}' is not encrypted {what}"


# ---------------------------------------------------------------- S3: bucket + companion resources


def _bucket_keys(bucket: ResourceView) -> set[str]:
    keys = {bucket.urn, bucket.name}
    for field in ("bucket", "id"):
        if isinstance(value := get(bucket.props, field), str):
            keys.add(value)
    return keys


def _companions(
    bucket: ResourceView, resources: Sequence[ResourceView], types: Sequence[str]
) -> list[ResourceView]:
    """Companion resources (public access block, SSE, versioning) that point at this bucket.

    Matched by the companion's `bucket` property (the bucket's name or id), by dependency or
    parent URN, or by the `<bucket>-<suffix>` naming convention when the id is not known offline.
    """
    keys = _bucket_keys(bucket)
    found = []
    for comp in each(resources, types):
        ref = get(comp.props, "bucket")
        if (
            (isinstance(ref, str) and ref in keys)
            or bucket.urn in comp.dependencies
            or comp.parent == bucket.urn
            or comp.name.startswith(f"{bucket.name}-")
        ):
            found.append(comp)
    return found


def _bucket_check(
    resources: Sequence[ResourceView],
    types: Sequence[str],
    ok_inline: Callable[[ResourceView], bool],
    ok_companion: Callable[[ResourceView], bool],
    problem: str,
) -> list[Finding]:
    findings = []
    for bucket in each(resources, BUCKET_TYPES):
        comps = _companions(bucket, resources, types)
        if ok_inline(bucket) or any(ok_companion(x) for x in comps):
            continue
        findings.append(Finding(f"bucket '{bucket.name}' {problem}", bucket.urn))
    return findings


def _pab_ok(pab: ResourceView) -> bool:
    return all(get(pab.props, f) is True for f in PAB_FLAGS)


@stack_rule(
    "s3-private",
    "Every bucket has a public access block with all four flags on, and no public ACL.",
    "critical",
    "Add aws.s3.BucketPublicAccessBlock(bucket=b.id, block_public_acls=True, block_public_policy=True, "
    "ignore_public_acls=True, restrict_public_buckets=True) and drop any public-read ACL.",
    tags=("security", "data"),
)
def s3_private(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    findings = _bucket_check(
        resources, (BUCKET_PAB,), lambda _b: False, _pab_ok, "has no complete public access block"
    )
    for bucket in each(resources, BUCKET_TYPES):
        if get(bucket.props, "acl") in PUBLIC_ACLS:
            findings.append(
                Finding(
                    f"bucket '{bucket.name}' has a public ACL ({get(bucket.props, 'acl')})",
                    bucket.urn,
                )
            )
    for pab in each(resources, (BUCKET_PAB,)):
        if not _pab_ok(pab):
            off = [f for f in PAB_FLAGS if get(pab.props, f) is not True]
            findings.append(Finding(f"public access block '{pab.name}' leaves {off} off", pab.urn))
    return findings


def _sse_rules(props: Mapping[str, Any]) -> list[Any]:
    rules = get(props, "rules") or get(props, "serverSideEncryptionConfiguration", "rule")
    return as_list(rules) if not isinstance(rules, Mapping) else [rules]


def _sse_ok(res: ResourceView) -> bool:
    return any(
        get(r, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        in ("aws:kms", "AES256", "aws:kms:dsse")
        for r in _sse_rules(res.props)
    )


@stack_rule(
    "s3-encrypted",
    "Every bucket declares default server-side encryption (SSE-S3 or SSE-KMS).",
    "high",
    "Add aws.s3.BucketServerSideEncryptionConfiguration with apply_server_side_encryption_by_default "
    "sse_algorithm='aws:kms' (preferred) or 'AES256'.",
    tags=("security", "data"),
)
def s3_encrypted(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    return _bucket_check(resources, BUCKET_SSE, _sse_ok, _sse_ok, "declares no default encryption")


def _versioning_ok(res: ResourceView) -> bool:
    status = get(res.props, "versioningConfiguration", "status")
    return status == "Enabled" or get(res.props, "versioning", "enabled") is True


@stack_rule(
    "s3-versioned",
    "Every bucket keeps object versions, so a bad write or delete of model weights can be undone.",
    "medium",
    "Add aws.s3.BucketVersioning(bucket=b.id, versioning_configuration={'status': 'Enabled'}) "
    "(and a lifecycle rule expiring noncurrent versions to bound cost).",
    tags=("data",),
)
def s3_versioned(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    return _bucket_check(
        resources, BUCKET_VERSIONING, _versioning_ok, _versioning_ok, "is not versioned"
    )


ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"


@stack_rule(
    "ecr-repository-hardened",
    "ECR repositories scan every push, refuse to overwrite a tag, and expire old images.",
    "high",
    "Set imageScanningConfiguration.scanOnPush: true and imageTagMutability: IMMUTABLE on the "
    "repository and attach an aws.ecr.LifecyclePolicy (expire untagged images, keep the newest "
    "N); components/images.py does all three.",
    tags=("security", "cost"),
)
def ecr_repository_hardened(resources: Sequence[ResourceView], _: PolicySettings) -> list[Finding]:
    findings = []
    lifecycles = list(each(resources, (ECR_LIFECYCLE,)))
    for repo in each(resources, (ECR_REPOSITORY,)):
        problems = []
        if get(repo.props, "imageScanningConfiguration", "scanOnPush") is not True:
            problems.append("does not scan images on push")
        if get(repo.props, "imageTagMutability", default="MUTABLE") != "IMMUTABLE":
            problems.append("lets a push overwrite a tag that is already running")
        keys = {repo.urn, repo.name, str(get(repo.props, "name", default=repo.name))}
        if not any(
            get(lc.props, "repository") in keys or lc.parent == repo.urn for lc in lifecycles
        ):
            problems.append("has no lifecycle policy (storage grows with every build)")
        if problems:
            findings.append(
                Finding(f"ECR repository '{repo.name}' " + "; ".join(problems), repo.urn)
            )
    return findings


RULES = [
    eks_public_endpoint,
    eks_secrets_encryption,
    eks_control_plane_logs,
    elasticache_encryption,
    s3_private,
    s3_encrypted,
    s3_versioned,
    ecr_repository_hardened,
]
