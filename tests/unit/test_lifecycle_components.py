"""The lifecycle's platform services as the shipped stacks register them (Pulumi mocks): the MLflow
registry on an encrypted, private RDS Postgres with its artifact bucket reached through IRSA, both
services internal and fenced by NetworkPolicies, and the rollout controller allowed to patch
RayServices and nothing else."""

from __future__ import annotations

import json

import pytest

from tandem import manifests
from vocabulary import pins

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_registry_database_is_encrypted_private_and_multi_az_in_prod(
    stack_resources, stack
) -> None:
    db = stack_resources[stack].one("aws:rds/instance:Instance", "model-registry-db").inputs
    assert db["storageEncrypted"] is True and db["publiclyAccessible"] is False
    assert db["engine"] == "postgres" and db["multiAz"] is (stack == "prod")
    assert db["vpcSecurityGroupIds"]  # its own security group: the nodes only


def test_the_registry_runs_the_pinned_mlflow_on_its_database_and_bucket(stack_resources) -> None:
    res = stack_resources["prod"]
    deploy = res.one(DEPLOYMENT, "model-registry-deploy").inputs
    pod = deploy["spec"]["template"]["spec"]
    (mlflow,) = pod["containers"]
    assert mlflow["image"] == pins.MLFLOW_IMAGE.ref
    text = json.dumps(manifests.plain(mlflow))
    assert "--serve-artifacts" in text and "s3://" in text  # artifacts to S3, proxied for clients
    assert "secretKeyRef" in text  # the DSN comes from the Secret, not the pod spec
    sa = res.one("kubernetes:core/v1:ServiceAccount", "model-registry-sa").inputs
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]  # IRSA, no AWS keys
    assert "AWS_SECRET_ACCESS_KEY" not in text
    dsn = res.one("kubernetes:core/v1:Secret", "model-registry-db-dsn")
    assert manifests.SECRET_SIG in json.dumps(dsn.inputs["stringData"])  # encrypted in state


@pytest.mark.parametrize("name", ["model-registry", "rollout-controller"])
def test_both_services_are_internal_monitored_and_fenced(stack_resources, name) -> None:
    res = stack_resources["prod"]
    svc = res.one("kubernetes:core/v1:Service", f"{name}-svc").inputs
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    res.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", f"{name}-monitor")
    policy = res.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-netpol").inputs
    assert "Ingress" in policy["spec"]["policyTypes"] and policy["spec"]["ingress"]


def test_the_controller_may_patch_rayservices_and_nothing_more(stack_resources) -> None:
    res = stack_resources["prod"]
    role = res.one("kubernetes:rbac.authorization.k8s.io/v1:Role", "rollout-controller-role")
    rules = role.inputs["rules"]
    assert [r["resources"] for r in rules] == [["rayservices"]]
    assert set(rules[0]["verbs"]) <= {"get", "list", "watch", "patch"}
    deploy = res.one(DEPLOYMENT, "rollout-controller-deploy").inputs
    (ctl,) = deploy["spec"]["template"]["spec"]["containers"]
    args = " ".join(str(a) for a in manifests.plain(ctl.get("args", ctl.get("command", []))))
    assert "rollout controller" in args or ("rollout" in args and "controller" in args)
    assert "kuberay:" in args and "--registry" in args and "--prometheus" in args
    assert deploy["spec"]["replicas"] == 1  # one acting controller; the Redis lease backs it
