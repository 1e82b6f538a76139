"""The GPU catalog agrees with EC2's own instance data, as a real moto server serves
DescribeInstanceTypes (moto ships AWS's instance-type data set): GPU model, count and memory,
vCPUs, RAM, EFA support and EFA interfaces (network cards) for every instance a platform team can pick."""

from __future__ import annotations

import socket

import boto3
import pytest

from vocabulary.catalog import load_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ec2():
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    finally:
        server.stop()


def test_every_catalog_instance_matches_describe_instance_types(ec2) -> None:
    catalog = load_catalog()
    names = catalog.names()
    found = {}
    for i in range(0, len(names), 20):  # the API takes at most 100 names; keep pages small
        page = ec2.describe_instance_types(InstanceTypes=names[i : i + 20])["InstanceTypes"]
        found.update({t["InstanceType"]: t for t in page})
    assert sorted(found) == sorted(names), "EC2 does not know some catalog instance types"
    mismatches = []
    for name in names:
        ours, theirs = catalog.get(name), found[name]
        gpu = theirs["GpuInfo"]["Gpus"][0]
        facts = {
            "gpu model": (ours.gpu.aws_name, gpu["Name"]),
            "gpus": (ours.gpus, gpu["Count"]),
            "gpu memory MiB": (round(ours.gpu.memory_gib * 1024), gpu["MemoryInfo"]["SizeInMiB"]),
            "vcpu": (ours.vcpu, theirs["VCpuInfo"]["DefaultVCpus"]),
            "memory MiB": (round(ours.memory_gib * 1024), theirs["MemoryInfo"]["SizeInMiB"]),
            "efa": (ours.efa, theirs["NetworkInfo"].get("EfaSupported", False)),
            "efa interfaces": (
                ours.efa_interfaces,
                theirs["NetworkInfo"].get("EfaInfo", {}).get("MaximumEfaInterfaces", 0),
            ),
        }
        for fact, (a, b) in facts.items():
            # GPU memory in the catalog is rounded to 0.01 GiB (~10 MiB).
            close = abs(a - b) <= 16 if fact == "gpu memory MiB" else a == b
            if not close:
                mismatches.append(f"{name} {fact}: catalog {a}, EC2 {b}")
    assert not mismatches, "\n".join(mismatches)
