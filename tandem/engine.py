"""Run a Pulumi program offline under the SDK's mock engine and record every registration.

There is no Pulumi CLI on the build machines, so `tandem plan`, the policy harness and the tests
exercise the real program through `pulumi.runtime.set_mocks`. This module is the one place that
knows the mock engine's traps (FIELD-NOTES): `preview=False` so every `.apply` runs, component
resources arrive at `new_resource` too, and duplicate URNs (which the real engine rejects) are
silently overwritten by the stock monitor, so the recording monitor checks for them itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2

STACK_TYPE = "pulumi:pulumi:Stack"
MOCK_ACCOUNT = "123456789012"


class DuplicateUrnError(RuntimeError):
    """Two resources with one URN: the real engine refuses the whole update."""


@dataclass(frozen=True)
class Recorded:
    """One registration as the engine would see it (inputs in wire format: camelCase)."""

    type: str
    name: str
    urn: str
    parent: str | None
    inputs: dict[str, Any]
    custom: bool
    provider: str | None = None

    @property
    def parent_name(self) -> str | None:
        return self.parent.rsplit("::", 1)[-1] if self.parent else None


@dataclass
class Resources:
    """Every resource a program registered, in registration order."""

    items: list[Recorded] = field(default_factory=list)

    def __iter__(self) -> Iterator[Recorded]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def of_type(self, token: str) -> list[Recorded]:
        return [r for r in self.items if r.type == token]

    def one(self, token: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(token) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(token)]
            raise AssertionError(
                f"expected one {token}{f' named {name!r}' if name else ''}, found "
                f"{len(found)} (registered of that type: {names})"
            )
        return found[0]

    def children_of(self, parent: Recorded) -> list[Recorded]:
        return [r for r in self.items if r.parent == parent.urn]


def _fake_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs the cloud would compute, shaped enough for the program's `.apply`s to run."""
    digest = hashlib.sha1(f"{typ}/{name}".encode()).hexdigest()[:12]
    service = typ.split(":")[1].split("/")[0] if typ.count(":") >= 2 else "mock"
    out: dict[str, Any] = {
        "arn": f"arn:aws:{service}:us-east-1:{MOCK_ACCOUNT}:{name}",
        "name": inputs.get("name", name),
    }
    if typ == "aws:eks/cluster:Cluster":
        out.update(
            endpoint=f"https://{digest}.gr7.us-east-1.eks.amazonaws.com",
            certificateAuthority={"data": "bW9jay1jYQ=="},
            identities=[
                {"oidcs": [{"issuer": f"https://oidc.eks.us-east-1.amazonaws.com/id/{digest}"}]}
            ],
            version=inputs.get("version", "1.33"),
            vpcConfig={**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": f"sg-{digest}"},
        )
    elif typ == "aws:elasticache/replicationGroup:ReplicationGroup":
        out.update(primaryEndpointAddress=f"master.{name}.{digest}.use1.cache.amazonaws.com")
    elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
        out.update(latestVersion=1)
    elif typ == "aws:sqs/queue:Queue":
        out.update(url=f"https://sqs.us-east-1.amazonaws.com/{MOCK_ACCOUNT}/{name}")
    elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        out.update(url=inputs.get("url", ""))
    elif typ == "aws:ecr/repository:Repository":
        repo = inputs.get("name", name)
        out.update(
            registryId=MOCK_ACCOUNT,
            repositoryUrl=f"{MOCK_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{repo}",
        )
    elif typ == "aws:s3/bucket:Bucket":  # a bucket_prefix gets a generated suffix
        out.update(bucket=inputs.get("bucket") or f"{inputs.get('bucketPrefix', name)}{digest}")
    elif typ == "docker-build:index:Image":
        # what the provider reports after a push: the first tag, pinned by its digest
        image_digest = "sha256:" + hashlib.sha256(f"{typ}/{name}".encode()).hexdigest()
        tags = inputs.get("tags") or [name]
        out.update(digest=image_digest, ref=f"{tags[0]}@{image_digest}")
    return out


class TandemMocks(pulumi_mocks.Mocks):
    """Answers the engine's questions with plausible cloud values."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        if not args.custom:
            return "", {}
        state = {**_fake_outputs(args.typ, args.name, args.inputs), **args.inputs}
        resource_id = args.resource_id or f"{args.name}-id"
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        token = args.token
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": MOCK_ACCOUNT, "arn": f"arn:aws:iam::{MOCK_ACCOUNT}:root"}, []
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}, []
        if token == "aws:index/getRegion:getRegion":
            return {"name": "us-east-1", "region": "us-east-1"}, []
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["us-east-1a", "us-east-1b", "us-east-1c"]}, []
        if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            registry = f"{MOCK_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
            return {
                "userName": "AWS",
                "password": "offline-plan-placeholder",
                "authorizationToken": "QVdTOm9mZmxpbmU=",
                "proxyEndpoint": f"https://{registry}",
                "expiresAt": "2099-01-01T00:00:00Z",
            }, []
        return {}, []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that keeps parent, custom-ness and order, and rejects duplicate URNs."""

    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.records: list[Recorded] = []
        self.duplicates: list[str] = []

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == STACK_TYPE:
            return resource_pb2.RegisterResourceResponse(urn=urn)
        pulumi_mocks._ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object)
        resource_args = pulumi_mocks.MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        id_, state = self.mocks.new_resource(resource_args)
        obj_proto = pulumi_mocks._sync_await(rpc.serialize_properties(state, {}))
        if urn in self.resources:
            self.duplicates.append(urn)
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        self.records.append(
            Recorded(
                type=request.type,
                name=request.name,
                urn=urn,
                parent=request.parent or None,
                inputs=inputs,
                custom=bool(request.custom),
                provider=request.provider or None,
            )
        )
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj_proto)


def _ensure_event_loop() -> None:
    """The SDK drives its RPCs on the thread's current loop; async code that ran before us
    (an asyncio test, an aiohttp client) may have closed it and left none behind."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if not loop.is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_under_mocks(
    program: Callable[[], object],
    *,
    project: str = "tandem",
    stack: str = "test",
    config: dict[str, str] | None = None,
    secret_keys: list[str] | None = None,
) -> Resources:
    """Run `program` as the engine would during `pulumi up`, and return what it registered.

    `config` is the flat Pulumi config (`{"tandem:gpuPools": "<json>", ...}`). Exceptions the
    program raises (a ConfigError, say) propagate unchanged after the engine drains.
    """
    _ensure_event_loop()
    mocks = TandemMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)

    @pulumi.runtime.test
    def _run() -> None:
        program()

    try:
        _run()
    except BaseException as exc:
        # Tests assert that a failed program registered nothing: hand them what it did.
        exc.registered = list(monitor.records)  # type: ignore[attr-defined]
        raise
    if monitor.duplicates:
        raise DuplicateUrnError(
            "duplicate resource URNs (the engine would reject the update): "
            + ", ".join(sorted(set(monitor.duplicates)))
        )
    return Resources(items=list(monitor.records))
