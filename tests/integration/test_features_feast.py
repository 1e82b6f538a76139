"""The feature store on real parts: Feast 0.66 (its own environment) with a real redis-server
as online store and parquet files as offline store, the shipped customer_care repository.

- a point-in-time-correct training set: each label row gets the values as of its timestamp,
  never later ones (label leakage) and never ones older than the view's TTL;
- materialize -> online read: what Tandem's reader (features/online.py, no Feast) reads from
  Redis equals what Feast's own online read returns;
- push -> online read: a pushed value is readable as soon as the push is acknowledged;
- the gateway enriching requests end to end (chat: the documented system block; embeddings:
  the `features` object), and each `on_missing` outcome: a clear 4xx/503 or a plain forward,
  counted, never a 500.

One Feast deployment per module (apply, data, materialize: ~20 s of Feast subprocesses).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest

from features.online import CompiledRead, OnlineReader
from features.repo import feature_read, inspect
from tests.support.feast import LocalFeast, seeded_customer_care
from tests.support.gateway_harness import RunningGateway, chat
from tests.support.redis_server import redis_server
from tests.support.upstream import ServerThread, Upstream
from vocabulary.features import UseCaseFeatures

pytestmark = pytest.mark.integration

PROJECT = "customer_care"
SERVICE = "support_chat_context"


def _spec(
    entity_from: str = "body", field: str = "user", on_missing: str = "fail"
) -> UseCaseFeatures:
    return UseCaseFeatures.model_validate(
        {
            "project": PROJECT,
            "service": SERVICE,
            "entity": {"name": "customer_id", "from": entity_from, "field": field},
            "on_missing": on_missing,
        }
    )


@pytest.fixture(scope="module")
def feast(tmp_path_factory) -> LocalFeast:
    with redis_server("the feature store tests") as url:
        yield seeded_customer_care(tmp_path_factory.mktemp("feast"), url)


@pytest.fixture(scope="module")
def compiled() -> CompiledRead:
    read, problems = feature_read(inspect(PROJECT), "support-chatbot", _spec())
    assert read is not None, problems
    return CompiledRead(read)


def test_training_set_is_point_in_time_correct(feast: LocalFeast) -> None:
    """Each label row sees the feature values as of its own timestamp. A join on the latest
    values (label leakage) would give C1 'enterprise' and 5 open tickets on the 9th."""
    rows = feast.historical(
        SERVICE,
        [
            {"customer_id": "C1", "event_timestamp": "2026-11-09T00:00:00Z", "escalated": 0},
            {"customer_id": "C1", "event_timestamp": "2026-11-10T06:00:00Z", "escalated": 1},
            {"customer_id": "C2", "event_timestamp": "2026-11-09T12:00:00Z", "escalated": 0},
            {"customer_id": "C2", "event_timestamp": "2026-11-12T00:00:00Z", "escalated": 1},
        ],
    )
    got = {(r["customer_id"], r["event_timestamp"][:13]): r for r in rows}
    before = got[("C1", "2026-11-09T00")]
    assert (before["plan_tier"], before["tenure_months"]) == ("free", 3)  # not the later upgrade
    assert before["open_tickets"] == 1  # 5 arrived two hours after this label
    assert before["escalated"] == 0  # the label rides along with its own row
    assert got[("C2", "2026-11-09T12")]["plan_tier"] == "pro"
    assert got[("C2", "2026-11-09T12")]["open_tickets"] is None  # no activity yet
    # Values older than a view's TTL never reach a training row: C1's last activity is 28 h
    # before its second label (TTL 6 h), C2's profile 3 days before its second (TTL 2 days).
    # Feast 0.66's file (dask) offline store drops such rows instead of returning nulls
    # (docs/feature-store.md); either way no stale value leaks in.
    for key, view_feature in (
        (("C1", "2026-11-10T06"), "open_tickets"),
        (("C2", "2026-11-12T00"), "plan_tier"),
    ):
        assert key not in got or got[key][view_feature] is None, got.get(key)
    assert all(r["escalated"] in (0, 1) for r in rows)


async def test_materialized_features_read_the_same_through_tandem_and_feast(
    feast: LocalFeast, compiled: CompiledRead
) -> None:
    theirs = feast.online(SERVICE, "customer_id", ["C1", "C2", "C9"])
    reader = OnlineReader(feast.redis_url)
    try:
        ours = {c: await reader.read(compiled, c) for c in ("C1", "C2", "C9")}
    finally:
        await reader.close()
    for i, customer in enumerate(("C1", "C2")):
        row = ours[customer]
        assert row is not None
        for name in compiled.names:
            assert row.values[name] == theirs[name][i], (customer, name)
    assert ours["C1"].values["plan_tier"] == "enterprise"  # the latest materialized row
    assert ours["C1"].values["open_tickets"] == 5
    assert ours["C2"].values["open_tickets"] is None  # no activity: null, the entity is known
    assert ours["C2"].event_times["support_activity"] is None
    assert (
        ours["C2"].event_times["customer_profile"] == datetime(2026, 11, 9, tzinfo=UTC).timestamp()
    )
    assert ours["C9"] is None  # never seen: unknown, not "all null"


async def test_pushed_features_are_readable_once_the_push_is_acknowledged(
    feast: LocalFeast, compiled: CompiledRead
) -> None:
    now = datetime.now(UTC).isoformat()
    feast.push(
        "support_activity_push",
        [{"customer_id": "C2", "event_timestamp": now, "open_tickets": 3,
          "last_ticket_hours_ago": 0.1, "csat_last_30d": 4.0}],
    )  # fmt: skip
    reader = OnlineReader(feast.redis_url)
    try:
        row = await reader.read(compiled, "C2")  # first read after the acknowledgement
    finally:
        await reader.close()
    assert row is not None and row.values["open_tickets"] == 3
    assert row.values["plan_tier"] == "pro"  # the other view is untouched


def _routes(upstream_url: str, redis_url: str, reads: dict[str, dict]) -> dict:
    routes = {
        alias: {"backends": [{"backend": "up"}], "use_case": alias, "features": read}
        for alias, read in reads.items()
    }
    return {
        "backends": {"up": {"url": upstream_url + "/v1"}},
        "routes": routes,
        "feature_store": {"redis_url": redis_url, "timeout_ms": 200},
    }


def _read(spec: UseCaseFeatures) -> dict:
    read, problems = feature_read(inspect(PROJECT), "x", spec)
    assert read is not None, problems
    return read.model_dump(mode="json", by_alias=True)


async def _post(url: str, body: dict, path: str = "/v1/chat/completions", **headers: str):
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_gateway_enriches_requests_with_the_entitys_features(feast: LocalFeast) -> None:
    upstream = Upstream()
    reads = {
        "support": _read(_spec()),
        "support-header": _read(_spec("header", "X-Customer-Id")),
        "support-lenient": _read(_spec(on_missing="skip")),
        "embed": _read(_spec()),
    }
    with (
        ServerThread(upstream.app) as up,
        RunningGateway(_routes(up.url, feast.redis_url, reads)) as gw,
    ):
        status, _ = await _post(gw.url, chat("support", "Where is my refund?", user="C1"))
        assert status == 200
        messages = upstream.bodies[-1]["messages"]
        assert [m["role"] for m in messages] == ["system", "user"]
        block = messages[0]["content"]
        assert block.startswith("Known facts about this request's customer_id")
        assert "- plan_tier: enterprise\n" in block and "- open_tickets: 5\n" in block
        assert "- tenure_months: 4\n" in block

        status, _ = await _post(gw.url, chat("support-header", "hi"), **{"X-Customer-Id": "C2"})
        assert (
            status == 200 and "- plan_tier: pro\n" in upstream.bodies[-1]["messages"][0]["content"]
        )

        status, _ = await _post(
            gw.url, {"model": "embed", "input": ["refund"], "user": "C1"}, "/v1/embeddings"
        )
        assert status == 200
        assert upstream.bodies[-1]["features"] == {
            "plan_tier": "enterprise",
            "tenure_months": 4,
            "open_tickets": 5,
            "last_ticket_hours_ago": 0.5,
        }

        # fail: no entity -> 400 naming the field; unknown entity -> 404; skip: forwarded as sent
        status, err = await _post(gw.url, chat("support", "hi"))
        assert status == 400 and err["error"]["code"] == "feature_entity_missing"
        assert err["error"]["param"] == "user"
        status, err = await _post(gw.url, chat("support", "hi", user="C404"))
        assert status == 404 and err["error"]["code"] == "feature_entity_not_found"
        before = len(upstream.bodies)
        status, _ = await _post(gw.url, chat("support-lenient", "hi", user="C404"))
        assert status == 200 and len(upstream.bodies) == before + 1
        assert upstream.bodies[-1]["messages"] == [{"role": "user", "content": "hi"}]

        m = "tandem_gateway_feature_lookups_total"
        assert gw.metric(m, outcome="found", action="enriched") == 3
        assert gw.metric(m, use_case="support", outcome="missing_entity", action="refused") == 1
        assert gw.metric(m, use_case="support", outcome="unknown_entity", action="refused") == 1
        assert (
            gw.metric(m, use_case="support-lenient", outcome="unknown_entity", action="skipped")
            == 1
        )


async def test_the_support_chatbot_names_its_prompt_and_features_fill_its_variables(
    feast: LocalFeast,
) -> None:
    """The shipped use case's call: `support/answer` by name, the customer in `user`; the
    feature store's values become the prompt's variables (no feature block), and a customer the
    store does not know still gets an answer (on_missing: skip -> "unknown")."""
    from gateway.spec import RouteTarget, routes_from_use_cases
    from tandem.stack import REPO_ROOT
    from vocabulary.prompts import PROMPTS_ROOT, load_prompts
    from vocabulary.usecase import load_use_case

    spec = load_use_case(REPO_ROOT / "stacks/usecases/support-chatbot.yaml")
    assert spec.prompts == ["support/answer"] and spec.features is not None
    read, problems = feature_read(inspect(PROJECT), spec.name, spec.features)
    assert read is not None, problems
    upstream = Upstream()
    with ServerThread(upstream.app) as up:
        assert spec.gateway is not None
        target = RouteTarget(
            spec.name, spec.team, spec.gateway, up.url + "/v1", "support-chat-8b",
            features=read, prompts=load_prompts(PROMPTS_ROOT, spec.prompts),
        )  # fmt: skip
        routes = routes_from_use_cases([target]).model_dump(mode="json", exclude_none=True)
        routes["feature_store"] = {"redis_url": feast.redis_url, "timeout_ms": 200}
        with RunningGateway(routes) as gw:
            body = {"prompt": "support/answer", "variables": {"question": "Where is my refund?"}}
            status, _ = await _post(gw.url, {**body, "user": "C1"})
            assert status == 200
            sent = upstream.bodies[-1]
            assert sent["model"] == "support-chat-8b" and sent["user"] == "C1"
            system, question = sent["messages"]
            assert "on the enterprise plan (customer for 4 months)" in system["content"]
            assert "has 5 open tickets" in system["content"]
            assert "Known facts" not in system["content"]  # variables, not the feature block
            assert question == {"role": "user", "content": "Where is my refund?"}

            status, _ = await _post(gw.url, {**body, "user": "C404"})
            assert status == 200
            assert "on the unknown plan" in upstream.bodies[-1]["messages"][0]["content"]

            # a caller cannot pass a feature off as its own variable
            spoof = {**body, "variables": {"question": "q", "plan_tier": "enterprise"}}
            status, err = await _post(gw.url, {**spoof, "user": "C2"})
            assert status == 400 and err["error"]["code"] == "prompt_variables_invalid"
            assert "'plan_tier'" in err["error"]["message"]
            renders = "tandem_gateway_prompt_renders_total"
            assert gw.metric(renders, prompt="support/answer", outcome="rendered") == 2


async def test_unreadable_feature_store_follows_on_missing_never_500() -> None:
    """A feature store that does not answer (a listener that never replies) is `unavailable`:
    503 with a Retry-After on a `fail` route, a plain forward on a `skip` route."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # accept, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream()
    reads = {"strict": _read(_spec()), "lenient": _read(_spec(on_missing="skip"))}
    try:
        with (
            ServerThread(upstream.app) as up,
            RunningGateway(_routes(up.url, f"redis://127.0.0.1:{port}/0", reads)) as gw,
        ):
            status, err = await _post(gw.url, chat("strict", "hi", user="C1"))
            assert status == 503 and err["error"]["code"] == "feature_store_unavailable"
            status, _ = await _post(gw.url, chat("lenient", "hi", user="C1"))
            assert status == 200 and upstream.requests == 1
            m = "tandem_gateway_feature_lookups_total"
            assert gw.metric(m, outcome="unavailable", action="refused") == 1
            assert gw.metric(m, outcome="unavailable", action="skipped") == 1
    finally:
        server.close()
