"""Real parts for the asynchronous pipelines: a redis-server with AOF that can be killed and
restarted on the same port and data, moto's S3 server, a routes file with a `batch:` section,
the gateway with the Batch API mounted (in a thread, or as a `tandem gateway serve` process) and
batch workers (in a thread, or as `tandem batch worker` processes that can be SIGKILLed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vocabulary.net import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-batch-team"
OTHER_KEY = "sk-other-team"
DEV_KEY = "sk-batch-dev"  # a developer's own key in the team `batchers`
DEVELOPER = "dana@example.com"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10YW5kZW0tdGVzdHMtMzItYnl0ZXM="
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "TANDEM_WEBHOOK_SECRET": WEBHOOK_SECRET,
}


def _wait_port(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} within {timeout} s") from None
            time.sleep(0.05)


class RedisProcess:
    """redis-server with AOF in its own folder: `kill()` (SIGKILL) and `start()` again keep the
    port and the data, as a pod restart with a persistent volume does."""

    def __init__(self, folder: Path, fsync: str = "everysec") -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is required: apt-get install -y redis-server")
        self.exe = exe
        self.folder = folder
        self.fsync = fsync
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", self.fsync, "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, "redis-server")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def moto_s3(bucket: str = "tandem-batch") -> Iterator[str]:
    """moto's S3 server on a free port with `bucket` created; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    for k, v in AWS_ENV.items():
        os.environ.setdefault(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        yield url
    finally:
        server.stop()


def routes(
    upstream_url: str,
    redis_url: str,
    s3_url: str,
    *,
    port: int = 0,
    budget_usd: float | None = 1000.0,
    batch: dict[str, Any] | None = None,
    discount: float = 0.5,
    cache: bool = False,
) -> dict[str, Any]:
    """A routes file: one route `chat` on the upstream (priced, cached prompt tokens too, with a
    batch discount), two keys of two teams and a developer's key in the first (a per-developer
    budget beside the team's), Redis shared, and the `batch:` section."""
    from gateway.config import hash_key

    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "reload_interval_s": 0},
        "backends": {
            "up": {
                "url": upstream_url + "/v1",
                "timeouts": {"connect_s": 1, "first_token_s": 10, "total_s": 20},
                "breaker": {"min_requests": 1000, "consecutive_failures": 1000},
            },
            "down": {"url": "http://127.0.0.1:9/v1", "timeouts": {"connect_s": 0.5}},
        },
        "routes": {
            "chat": {
                "backends": [{"backend": "up"}],
                "batch_discount": discount,
                "retries": {"attempts": 0},
                "deadline_s": 20,
            },
            # nothing listens on port 9: every line falls back to `chat`
            "flaky": {
                "backends": [{"backend": "down"}],
                "fallbacks": ["chat"],
                "retries": {"attempts": 0},
            },
        },
        "prices": {
            "up": {"input_per_mtok": 2.0, "output_per_mtok": 6.0, "cached_input_per_mtok": 0.5},
            "down": {"input_per_mtok": 2.0, "output_per_mtok": 6.0},
        },
        "keys": [
            {"id": "batch-key", "team": "batchers", "sha256": hash_key(KEY)},
            {"id": "other-key", "team": "others", "sha256": hash_key(OTHER_KEY)},
            {
                "id": "dev-key",
                "team": "batchers",
                "sha256": hash_key(DEV_KEY),
                "developer": DEVELOPER,
            },
        ],
        "teams": (
            {"batchers": {"budget": {"usd": budget_usd}, "developer_budget": {"usd": budget_usd}}}
            if budget_usd
            else {}
        ),
        "redis": {"url": redis_url, "prefix": "tandem:gw"},
        "batch": {
            "files": {"bucket": "tandem-batch", "endpoint_url": s3_url},
            "webhook_secret_env": "TANDEM_WEBHOOK_SECRET",
            "workers": {"claim_idle_s": 2.0, "concurrency": 16},
            **(batch or {}),
        },
    }
    if cache:
        cfg["cache"] = {"mode": "exact"}
    return cfg


def write_routes(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class WorkerThread:
    """A batch worker on its own event loop in a thread (for tests that do not kill it)."""

    def __init__(self, cfg: dict[str, Any], name: str = "w-thread") -> None:
        from gateway.config import parse_config

        self.cfg = parse_config(cfg)
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from pipelines.service import run_worker

        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            await run_worker(
                self.cfg, None, "127.0.0.1", free_port(), stop=self.stop_event, name=self.name
            )

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.stop_event is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


class TandemProcess:
    """`tandem <args>` as a child process (a gateway or a worker) that can be SIGKILLed."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.port = port
        self.log = log
        self.env = {**os.environ, **AWS_ENV, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> TandemProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tandem.cli", *self.args],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if wait:
            _wait_port(self.port, " ".join(self.args[:2]), timeout=30)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def batch_lines(n: int, model: str = "chat", poison: set[int] | None = None) -> bytes:
    """`n` chat lines; indexes in `poison` carry a prompt the test upstream always fails."""
    import orjson

    out = []
    for i in range(n):
        content = "POISON" if poison and i in poison else f"question {i}"
        out.append(
            orjson.dumps(
                {
                    "custom_id": f"req-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": content}]},
                }
            )
        )
    return b"\n".join(out) + b"\n"


# -- the fault runs: the test suite's (1,000 lines) and the benchmark's (10,000) -------------


class BatchStack:
    """Redis (AOF), moto S3, an upstream on loopback (in this process), the gateway as a
    `tandem gateway serve` process and `workers` `tandem batch worker` processes, all on free
    loopback ports, from one routes file in `folder`."""

    def __init__(
        self,
        folder: Path,
        *,
        workers: int = 2,
        upstream: Any = None,
        batch: dict[str, Any] | None = None,
        budget_usd: float = 1e6,
    ) -> None:
        from tests.support.upstream import ServerThread, Upstream

        self.folder = folder
        self.n_workers = workers
        self.upstream = upstream or Upstream("up")
        self._upstream_server = ServerThread(self.upstream.app)
        self._s3 = moto_s3()
        self.redis = RedisProcess(folder / "redis")
        self.batch_cfg = batch
        self.budget_usd = budget_usd
        self.gateway: TandemProcess | None = None
        self.workers: list[TandemProcess] = []
        self._spawned = 0

    def __enter__(self) -> BatchStack:
        import redis

        self.redis.start()
        self.s3_url = self._s3.__enter__()
        self._upstream_server.start()
        self.gateway_port = free_port()
        self.cfg = routes(
            self._upstream_server.url, self.redis.url, self.s3_url, port=self.gateway_port,
            budget_usd=self.budget_usd, batch=self.batch_cfg,
        )  # fmt: skip
        self.config = write_routes(self.folder / "routes.yaml", self.cfg)
        self.gateway = TandemProcess(
            ["gateway", "serve", "--config", str(self.config), "--log-level", "WARNING"],
            self.gateway_port, self.folder / "gateway.log",
        ).start()  # fmt: skip
        for _ in range(self.n_workers):
            self.workers.append(self.new_worker().start())
        self.r = redis.Redis.from_url(self.redis.url, decode_responses=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self._upstream_server.stop()
        self._s3.__exit__(None, None, None)
        self.redis.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def new_worker(self) -> TandemProcess:
        self._spawned += 1
        port = free_port()
        return TandemProcess(
            ["batch", "worker", "--config", str(self.config), "--port", str(port),
             "--name", f"w{self._spawned}", "--log-level", "WARNING"],
            port, self.folder / f"worker{self._spawned}.log",
        )  # fmt: skip

    def client(self) -> Any:
        from pipelines.client import BatchClient

        return BatchClient(self.url, KEY)

    def submit(self, lines: int) -> str:
        path = self.folder / f"in-{lines}.jsonl"
        path.write_bytes(batch_lines(lines))
        c = self.client()
        return c.create(c.upload(path)["id"], "/v1/chat/completions", None)["id"]

    def done(self, batch_id: str) -> int:
        """Lines recorded so far (read from Redis: works while the gateway is down)."""
        try:
            h = self.r.hmget(f"tandem:batch:batch:{batch_id}", "completed", "failed")
        except Exception:
            return -1
        return sum(int(v or 0) for v in h)

    def spend(self) -> float:
        keys = self.r.keys("tandem:gw:spend:batchers:*")
        return sum(float(self.r.get(k) or 0) for k in keys)

    def inject(self, fault: str) -> None:
        if fault == "kill_workers":
            for w in self.workers:
                w.kill()
            self.workers = [self.new_worker().start() for _ in range(self.n_workers)]
        elif fault == "restart_redis":
            self.redis.kill()
            time.sleep(1.0)
            self.redis.start()
        elif fault == "restart_gateway":
            assert self.gateway is not None
            self.gateway.kill()
            time.sleep(1.0)
            self.gateway.start()
        else:
            raise ValueError(fault)

    def fault_run(self, fault: str, lines: int, at: float = 0.3, timeout_s: float = 600) -> dict:
        """Submit `lines`, inject `fault` when `at` of them are recorded, wait for the batch to
        end, and count: every input line must be in output ∪ errors exactly once, and the team
        charged exactly once per answered line."""
        import orjson

        spend_before = self.spend()
        upstream_before = self.upstream.requests
        t0 = time.monotonic()
        batch_id = self.submit(lines)
        deadline = t0 + timeout_s
        while self.done(batch_id) < at * lines:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {batch_id} made no progress before the fault")
            time.sleep(0.05)
        self.inject(fault)
        batch = self.client().wait(batch_id, poll_s=0.25, timeout_s=deadline - time.monotonic())
        elapsed = time.monotonic() - t0
        c = self.client()
        records = []
        for field in ("output_file_id", "error_file_id"):
            if batch.get(field):
                records += [orjson.loads(x) for x in c.content(batch[field]).splitlines() if x]
        seen: dict[str, int] = {}
        for rec in records:
            seen[rec["custom_id"]] = seen.get(rec["custom_id"], 0) + 1
        wanted = {f"req-{i}" for i in range(lines)}
        price_in, price_out = 2.0 / 1e6, 6.0 / 1e6
        discount = 0.5
        expected = sum(
            (r["response"]["body"]["usage"]["prompt_tokens"] * price_in
             + r["response"]["body"]["usage"]["completion_tokens"] * price_out) * discount
            for r in records
            if r["response"] and r["response"]["status_code"] == 200
        )  # fmt: skip
        charged = self.spend() - spend_before
        per_line = expected / max(1, len(records))
        return {
            "fault": fault,
            "lines": lines,
            "status": batch["status"],
            "lost": len(wanted - set(seen)),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "double_charged": max(0, round((charged - expected) / per_line)) if per_line else 0,
            "charged_usd": round(charged, 6),
            "expected_usd": round(expected, 6),
            "errors": len(
                [r for r in records if r["error"] or r["response"]["status_code"] != 200]
            ),
            "reruns": self.upstream.requests - upstream_before - lines,
            "seconds": round(elapsed, 2),
        }


class CapacityUpstream:
    """An upstream with a fixed number of slots, as a GPU server has: each answer holds a slot
    for `service_s`, and requests beyond `slots` wait in line. What online traffic and batch
    lines compete for (the priority rule's test and benchmark)."""

    def __init__(self, slots: int, service_s: float, name: str = "up") -> None:
        from tests.support.upstream import Upstream

        self.slots = slots
        self.service_s = service_s
        self.inner = Upstream(name)
        self._sem: asyncio.Semaphore | None = None
        self._sized = 0
        begin = self.inner._begin

        async def _begin(request: Any) -> Any:
            out = await begin(request)
            if self._sem is None or self._sized != self.slots:
                self._sem, self._sized = asyncio.Semaphore(self.slots), self.slots
            async with self._sem:
                await asyncio.sleep(self.service_s)
            return out

        self.inner._begin = _begin  # type: ignore[method-assign]

    @property
    def requests(self) -> int:
        return self.inner.requests

    def app(self) -> Any:
        return self.inner.app()
