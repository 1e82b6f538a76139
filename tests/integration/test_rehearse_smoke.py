"""The rehearsal's smoke test against a real gateway on loopback, configured with the routes file
the dev stack deploys (backends pointed at a loopback upstream): it passes on a healthy gateway
and names the alias and endpoint when one is broken."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tandem.cli.rehearse import _aliases, smoke
from tandem.manifests import plain
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration
KEY = "tandem-smoke-test-key"


@pytest.fixture(scope="module")
def routes(stack_resources) -> dict:
    cm = stack_resources["dev"].one("kubernetes:core/v1:ConfigMap", "gateway-routes")
    return yaml.safe_load(plain(cm.inputs["data"])["routes.yaml"])


def _local(routes: dict, upstream_url: str) -> dict:
    """The deployed routes file with cluster-only parts swapped for loopback ones (a route's live
    `split:` goes with the Redis it is read from: without it the route serves its stable backend,
    as a deployed gateway does before any rollout)."""
    drop = ("redis", "cache", "keys_file", "server", "batch")  # batch: its queue is in the Redis
    cfg = {k: v for k, v in routes.items() if k not in drop}
    cfg["routes"] = {
        alias: {k: v for k, v in route.items() if k != "split"}
        for alias, route in cfg["routes"].items()
    }
    for backend in cfg["backends"].values():
        backend["url"] = f"{upstream_url}/v1"
    for route in cfg["routes"].values():
        route.pop("batch_discount", None)  # prices batch lines only
    cfg["keys"] = [
        {"id": "smoke", "team": "platform", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}
    ]
    return cfg


def test_smoke_passes_on_the_deployed_routes(routes) -> None:
    aliases = _aliases("dev")
    assert set(aliases) == {"support-chat", "doc-embed"}
    with ServerThread(Upstream("serve").app) as up, RunningGateway(_local(routes, up.url)) as gw:
        assert smoke(gw.url, KEY, aliases) == []


def test_smoke_names_what_is_broken(routes) -> None:
    aliases = _aliases("dev")
    upstream = Upstream("serve")
    with ServerThread(upstream.app) as up, RunningGateway(_local(routes, up.url)) as gw:
        problems = smoke(gw.url, "wrong-key", aliases)
        assert any("/v1/models answered 401" in p for p in problems), problems
        upstream.set(status=500)
        problems = smoke(gw.url, KEY, aliases)
        assert any("/v1/chat/completions for 'support-chat'" in p for p in problems), problems
