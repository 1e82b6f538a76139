"""The Batch API, the Files API and async jobs on real parts: redis-server (AOF), moto's S3, the
gateway with the Batch API mounted, a batch worker, an upstream on loopback, and the official
`openai` SDK as the client. One stack for the module; each test submits its own batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from aiohttp import web
from openai import APIStatusError, NotFoundError, OpenAI

from gateway.app import GatewayService
from gateway.config import parse_config
from pipelines.api import mount
from pipelines.webhooks import verify
from tests.support.pipelines import (
    DEV_KEY,
    DEVELOPER,
    KEY,
    OTHER_KEY,
    WEBHOOK_SECRET,
    RedisProcess,
    WorkerThread,
    batch_lines,
    moto_s3,
    routes,
)
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration
PRICE_IN, PRICE_OUT, PRICE_CACHED, DISCOUNT = 2.0 / 1e6, 6.0 / 1e6, 0.5 / 1e6, 0.5


class Stack:
    def __init__(self, gateway: ServerThread, worker: WorkerThread, upstream: Upstream, r):
        self.gateway = gateway
        self.worker = worker
        self.upstream = upstream
        self.r = r
        self.client = OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
        self.other = OpenAI(base_url=gateway.url + "/v1", api_key=OTHER_KEY, max_retries=0)

    def run(
        self, data: bytes, tmp: Path, *, timeout: float = 60.0, client=None, **create
    ) -> object:
        """Upload, create, and poll until the batch ends (as a user of the SDK would)."""
        client = client or self.client
        path = tmp / "input.jsonl"
        path.write_bytes(data)
        with open(path, "rb") as fh:
            f = client.files.create(file=fh, purpose="batch")
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", **create
        )
        return self.wait(b.id, timeout)

    def wait(self, batch_id: str, timeout: float = 60.0) -> object:
        deadline = time.monotonic() + timeout
        b = self.client.batches.retrieve(batch_id)
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline, f"batch still {b.status}: {b}"
            time.sleep(0.1)
            b = self.client.batches.retrieve(batch_id)
        return b

    def records(self, file_id: str | None) -> list[dict]:
        if file_id is None:
            return []
        return [orjson.loads(x) for x in self.client.files.content(file_id).content.splitlines()]

    def spend(self) -> float:
        return sum(float(self.r.get(k) or 0) for k in self.r.keys("tandem:gw:spend:batchers:*"))

    def developer_spend(self) -> float:
        pattern = f"tandem:gw:devspend:batchers:{DEVELOPER}:*"
        return sum(float(self.r.get(k) or 0) for k in self.r.keys(pattern))

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in self.worker_registry().collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def worker_registry(self):
        import gc

        from pipelines.worker import Worker

        workers = [o for o in gc.get_objects() if isinstance(o, Worker)]
        return workers[-1].svc.metrics.registry


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("pipelines")
    red = RedisProcess(folder / "redis").start()
    upstream = Upstream("up", poison="POISON")
    up = ServerThread(upstream.app).start()
    with moto_s3() as s3:
        cfg = routes(up.url, red.url, s3, cache=True, batch={"max_attempts": 3})
        svc = GatewayService(parse_config(cfg))
        mount(svc)
        gw = ServerThread(svc.app).start()
        worker = WorkerThread(cfg).start()
        try:
            yield Stack(gw, worker, upstream, redis.Redis.from_url(red.url, decode_responses=True))
        finally:
            worker.stop()
            gw.stop()
            up.stop()
    red.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.upstream.set(poison="POISON")
    stack.upstream.reset_counts()
    return stack


def test_openai_sdk_batch_round_trip(fresh: Stack, tmp_path: Path) -> None:
    b = fresh.run(batch_lines(40), tmp_path, metadata={"job": "nightly"})
    assert b.status == "completed"
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (
        40,
        40,
        0,
    )
    assert b.in_progress_at and b.finalizing_at and b.completed_at and b.expires_at
    assert b.metadata == {"job": "nightly"} and b.error_file_id is None
    out = fresh.records(b.output_file_id)
    assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(40))
    first = next(r for r in out if r["custom_id"] == "req-0")
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"].startswith("up:")
    assert b.usage.input_tokens == sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in out)
    # the SDK's list calls page through what this team owns
    assert b.id in [x.id for x in fresh.client.batches.list(limit=2)]
    files = {f.id: f.purpose for f in fresh.client.files.list()}
    assert files[b.input_file_id] == "batch" and files[b.output_file_id] == "batch_output"
    assert fresh.client.files.retrieve(b.output_file_id).bytes > 0


def test_lines_are_charged_once_at_the_routes_batch_discount(fresh: Stack, tmp_path: Path) -> None:
    before, mine = fresh.spend(), fresh.developer_spend()
    b = fresh.run(batch_lines(30), tmp_path)
    out = fresh.records(b.output_file_id)
    full = sum(
        r["response"]["body"]["usage"]["prompt_tokens"] * PRICE_IN
        + r["response"]["body"]["usage"]["completion_tokens"] * PRICE_OUT
        for r in out
    )
    assert fresh.spend() - before == pytest.approx(full * DISCOUNT, rel=1e-9)
    assert fresh.developer_spend() == mine  # a team key names no developer: theirs is untouched
    assert fresh.metric("tandem_batch_lines_total", team="batchers", outcome="completed") >= 30
    # the same tandem_gateway_* series as online traffic count the lines
    assert fresh.metric("tandem_gateway_requests_total", team="batchers", code="200") >= 30


def test_a_developers_lines_cost_what_online_does_to_both_budgets(
    fresh: Stack, tmp_path: Path
) -> None:
    """The same cost formula as an online answer (cached prompt tokens at the cached price),
    at the discount, charged once to the team's budget and the developer's."""
    fresh.upstream.set(poison="POISON", cached_tokens=3)
    dev = OpenAI(base_url=fresh.gateway.url + "/v1", api_key=DEV_KEY, max_retries=0)
    team, mine = fresh.spend(), fresh.developer_spend()
    b = fresh.run(batch_lines(20), tmp_path, client=dev)
    assert b.request_counts.completed == 20
    usages = [r["response"]["body"]["usage"] for r in fresh.records(b.output_file_id)]
    full = sum(
        (u["prompt_tokens"] - 3) * PRICE_IN + 3 * PRICE_CACHED + u["completion_tokens"] * PRICE_OUT
        for u in usages
    )
    assert fresh.spend() - team == pytest.approx(full * DISCOUNT, rel=1e-9)
    assert fresh.developer_spend() - mine == pytest.approx(full * DISCOUNT, rel=1e-9)


def test_the_response_cache_answers_repeated_lines(fresh: Stack, tmp_path: Path) -> None:
    # temperature 0: the cache keeps only answers that would come out the same again
    lines = batch_lines(10).replace(b'"model":"chat"', b'"model":"chat","temperature":0')
    fresh.run(lines, tmp_path)
    time.sleep(0.3)  # the cache stores in the background
    fresh.upstream.reset_counts()
    spent = fresh.spend()
    b = fresh.run(lines, tmp_path)
    assert b.request_counts.completed == 10
    assert fresh.upstream.requests == 0  # every line from the cache: no upstream call ...
    assert fresh.spend() == spent  # ... and no charge


def test_fallbacks_apply_to_batch_lines(fresh: Stack, tmp_path: Path) -> None:
    b = fresh.run(batch_lines(12, model="flaky"), tmp_path)
    assert b.request_counts.completed == 12
    assert fresh.metric("tandem_gateway_fallbacks_total", route="flaky", to="chat") >= 12


def test_a_poison_line_goes_to_the_error_file_and_never_stalls_the_batch(
    fresh: Stack, tmp_path: Path
) -> None:
    b = fresh.run(batch_lines(25, poison={3, 17}), tmp_path)
    assert b.status == "completed"
    assert (b.request_counts.completed, b.request_counts.failed) == (23, 2)
    errors = fresh.records(b.error_file_id)
    assert sorted(r["custom_id"] for r in errors) == ["req-17", "req-3"]
    assert {r["response"]["status_code"] for r in errors} == {502}
    assert len(fresh.records(b.output_file_id)) == 23
    poisoned = [x for x in fresh.upstream.bodies if "POISON" in str(x["messages"])]
    assert len(poisoned) == 2 * 3  # max_attempts each, then given up


def test_a_broken_file_fails_validation_with_line_numbers(fresh: Stack, tmp_path: Path) -> None:
    good = batch_lines(3).splitlines()
    bad = [good[0], good[0], good[2].replace(b"/v1/chat/completions", b"/v1/embeddings"), b"{x"]
    b = fresh.run(b"\n".join(bad) + b"\n", tmp_path)
    assert b.status == "failed" and b.failed_at
    found = {(e.code, e.line) for e in b.errors.data}
    assert found == {
        ("duplicate_custom_id", 2),
        ("mismatched_endpoint", 3),
        ("invalid_json_line", 4),
    }


def test_cancel_ends_every_line_in_exactly_one_record(fresh: Stack, tmp_path: Path) -> None:
    fresh.upstream.set(latency_s=0.05)
    path = tmp_path / "input.jsonl"
    path.write_bytes(batch_lines(300))
    with open(path, "rb") as fh:
        f = fresh.client.files.create(file=fh, purpose="batch")
    b = fresh.client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    time.sleep(0.5)
    assert fresh.client.batches.cancel(b.id).status == "cancelling"
    b = fresh.wait(b.id)
    assert b.status == "cancelled" and b.cancelled_at
    records = fresh.records(b.output_file_id) + fresh.records(b.error_file_id)
    assert sorted(r["custom_id"] for r in records) == sorted(f"req-{i}" for i in range(300))
    cancelled = [r for r in records if r["error"] and r["error"]["code"] == "batch_cancelled"]
    assert cancelled and b.request_counts.failed == len(cancelled)
    with pytest.raises(APIStatusError) as exc:
        fresh.client.batches.cancel(b.id)
    assert exc.value.status_code == 409


def test_a_batch_past_its_window_expires_and_the_rest_is_recorded(
    fresh: Stack, tmp_path: Path
) -> None:
    fresh.upstream.set(latency_s=0.05)
    path = tmp_path / "input.jsonl"
    path.write_bytes(batch_lines(300))
    with open(path, "rb") as fh:
        f = fresh.client.files.create(file=fh, purpose="batch")
    b = fresh.client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    time.sleep(0.5)  # as if 24 hours had passed
    fresh.r.hset(f"tandem:batch:batch:{b.id}", "expires_at", int(time.time()) - 1)
    b = fresh.wait(b.id)
    assert b.status == "expired" and b.expired_at
    records = fresh.records(b.output_file_id) + fresh.records(b.error_file_id)
    assert len({r["custom_id"] for r in records}) == len(records) == 300
    assert any(r["error"] and r["error"]["code"] == "batch_expired" for r in records)


def test_another_team_sees_nothing(fresh: Stack, tmp_path: Path) -> None:
    b = fresh.run(batch_lines(2), tmp_path)
    with pytest.raises(NotFoundError):
        fresh.other.batches.retrieve(b.id)
    with pytest.raises(NotFoundError):
        fresh.other.files.content(b.output_file_id)
    assert b.id not in [x.id for x in fresh.other.batches.list()]


def test_api_mistakes_are_openai_errors(fresh: Stack, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(batch_lines(1))
    with open(path, "rb") as fh, pytest.raises(APIStatusError) as exc:
        fresh.client.files.create(file=fh, purpose="fine-tune")
    assert exc.value.status_code == 400 and exc.value.body["param"] == "purpose"
    with pytest.raises(NotFoundError):
        fresh.client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with open(path, "rb") as fh:
        f = fresh.client.files.create(file=fh, purpose="batch")
    with pytest.raises(APIStatusError) as exc:
        fresh.client.batches.create(
            input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h"
        )
    assert exc.value.status_code == 400 and exc.value.body["param"] == "endpoint"
    r = httpx.put(fresh.gateway.url + "/v1/batches", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert httpx.get(fresh.gateway.url + "/v1/batches").status_code == 401
    deleted = fresh.client.files.delete(f.id)
    assert deleted.deleted and f.id not in [x.id for x in fresh.client.files.list()]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list]]:
    got: list[tuple[bytes, dict]] = []
    ready = threading.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        ready.set()
        return web.Response(text="ok")

    def app() -> web.Application:
        a = web.Application()
        a.router.add_post("/hook", hook)
        return a

    with ServerThread(app) as server:
        yield server.url + "/hook", got


def test_async_job_polls_and_sends_a_signed_webhook(fresh: Stack, receiver) -> None:
    url, got = receiver
    headers = {"Authorization": f"Bearer {KEY}", "Tandem-Webhook-Url": url}
    body = {"model": "chat", "messages": [{"role": "user", "content": "a long job"}]}
    r = httpx.post(fresh.gateway.url + "/v1/async/chat/completions", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and r.headers["Location"] == f"/v1/async/jobs/{job['id']}"
    deadline = time.monotonic() + 20
    while job["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        job = httpx.get(fresh.gateway.url + r.headers["Location"], headers=headers).json()
    assert job["status"] == "completed"
    assert job["response"]["status_code"] == 200
    assert job["response"]["body"]["choices"][0]["message"]["content"].startswith("up:")
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline, "no webhook"
        time.sleep(0.05)
    payload, hdrs = got[0]
    event = orjson.loads(payload)
    assert event["type"] == "async_job.completed" and event["data"]["id"] == job["id"]
    lower = {k.lower(): v for k, v in hdrs.items()}
    assert verify(WEBHOOK_SECRET, payload, lower)
    # the documented verification: the openai SDK's own (Standard Webhooks) check
    fresh.client.webhooks.verify_signature(payload, lower, secret=WEBHOOK_SECRET)
    assert not verify(WEBHOOK_SECRET, payload + b" ", lower)
    other = httpx.get(
        fresh.gateway.url + r.headers["Location"], headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert other.status_code == 404


def test_async_job_refusals_happen_at_submit(fresh: Stack) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    url = fresh.gateway.url + "/v1/async/chat/completions"
    bad_model = httpx.post(url, json={"model": "nope", "messages": [{}]}, headers=headers)
    assert bad_model.status_code == 404
    no_messages = httpx.post(url, json={"model": "chat"}, headers=headers)
    assert no_messages.status_code == 400
    bad_hook = httpx.post(
        url,
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        headers={**headers, "Tandem-Webhook-Url": "ftp://x"},
    )
    assert bad_hook.status_code == 400
