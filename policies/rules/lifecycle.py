"""Model lifecycle rules: the registry's database is encrypted and private, and the registry and
rollout controller are never exposed outside the cluster. (Its artifact bucket is held to the
S3 rules every bucket meets, policies/rules/cluster.py: encryption, public access block,
versioning.)

The registry holds every model version a team ever shipped (weights, often trained on customer
data) and the controller can move production traffic: an unencrypted volume, a public bucket or
a LoadBalancer Service in front of either is a leak or a hijack waiting to happen.
"""

from __future__ import annotations

from collections.abc import Iterator

from policies.framework import (
    ResourceView,
    get,
    k8s_labels,
    resource_rule,
    truthy,
)
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels

RDS_INSTANCE = "aws:rds/instance:Instance"
S3_BUCKET = "aws:s3/bucket:Bucket"
S3_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
S3_PUBLIC_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
PUBLIC_BLOCK_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)
INTERNAL_COMPONENTS = ("model-registry", "rollout-controller")


@resource_rule(
    "database-encrypted-private",
    "Databases (the model registry's RDS Postgres) are encrypted at rest and not publicly "
    "accessible.",
    "critical",
    "Set storageEncrypted: true and publiclyAccessible: false; reach the database from the "
    "cluster through its security group (components/lifecycle.py does both).",
    (RDS_INSTANCE,),
    tags=("security", "lifecycle", "data"),
)
def database_encrypted_private(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if not truthy(get(res.props, "storageEncrypted")):
        yield f"RDS instance '{res.name}' stores its data unencrypted (storageEncrypted)"
    if truthy(get(res.props, "publiclyAccessible")):
        yield f"RDS instance '{res.name}' is publicly accessible"


@resource_rule(
    "lifecycle-services-internal",
    "The model registry and the rollout controller are reached inside the cluster only "
    "(ClusterIP Services).",
    "critical",
    "Keep type ClusterIP; reach them with kubectl port-forward, or from CI inside the VPC. A "
    "LoadBalancer or NodePort would publish every model version, or the power to move "
    "production traffic.",
    (c.SERVICE,),
    tags=("security", "lifecycle", "network"),
)
def lifecycle_services_internal(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(k8s_labels(res), labels.LABEL_COMPONENT) not in INTERNAL_COMPONENTS:
        return
    kind = get(res.props, "spec", "type", default="ClusterIP")
    if kind not in ("ClusterIP", None):
        yield f"Service '{res.name}' is {kind}: the lifecycle services must stay internal"


RULES = [database_encrypted_private, lifecycle_services_internal]
