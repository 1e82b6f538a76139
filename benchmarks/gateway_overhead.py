"""What a gateway adds to a request: direct vs minimal pass-through vs Tandem vs LiteLLM proxy,
and Tandem's production profile: the semantic cache on, limits and budgets shared through Redis.

Same machine, same run, same fast upstream on loopback (a bare ASGI app on uvicorn), same
open-loop load generator: requests are sent on a fixed schedule whether or not earlier ones have
answered, and latency is measured from the scheduled send time, so a target that falls behind
shows its queueing instead of slowing the generator down (no coordinated omission). Every run is
bounded in count and time.

    python benchmarks/gateway_overhead.py                  # table
    python benchmarks/gateway_overhead.py --output json    # one JSON object on stdout
    python benchmarks/gateway_overhead.py --quick          # under two minutes

`prompt_render_p99_ms`: what a request that names a prompt (`support/answer@production`) adds,
measured in process on the gateway's own prompt stage (resolve, render with features, context
budget); see `prompt_render`.

LiteLLM runs from its own environment (bash benchmarks/setup-litellm.sh -> .venv-litellm); when
it is absent the `litellm` rows say so and the ratios against it are left out.

Anthropic's Messages API (targets `tandem_messages`, `tandem_messages_translated`): Claude
Code's `POST /v1/messages` through the same gateway, passed through to an Anthropic-compatible
backend (the upstream answers Messages too), or translated to the upstream's chat completions, as
it is for a self-hosted model. Both are reported beside `tandem` (chat completions, pass-through):
added latency against `direct` (chat completions on the same upstream) and max sustainable rps.

The production profile (targets `tandem_cache_cold`, `tandem_cache_warm`): the same gateway with
a real redis-server on loopback holding the rate-limit and budget counters (the key has RPM and
TPM limits, its team a budget) and the cache's shared entries, and `cache: {mode: semantic}`.
`tandem_cache_cold` sends a different question every request (distinct Quora questions from
$TANDEM_SHARED_DIR/data/semcache/qqp_pairs_dev.jsonl, never repeated in a run): every request is
embedded, searched, verified against its neighbours and, after the upstream answers, stored and
published to Redis. `tandem_cache_warm` repeats one request: after the first, every request is an
exact hit (local, then Redis). The semantic hits the cold run had anyway (Quora repeats itself)
and the embedding batch sizes are read from the gateway's /metrics and reported.

Tracing (targets `tandem_tracing`, `tandem_tracing_grpc`): the `tandem` profile with `tracing:`
on at 100 % sampling, every request a GenAI span with all its attributes. `tandem_tracing` exports
as the Tracing component configures the gateway (`protocol: http/protobuf`: batched and sent over
OTLP/HTTP from the gateway's event loop); `tandem_tracing_grpc` as before (`protocol: grpc`: the
SDK's BatchSpanProcessor and an OTLP/gRPC export thread). Each sends to a minimal receiver of its
protocol in its own process that counts what arrives (reported as `spans_received`: every request
must be there). Compared with `tandem` in the same run: max sustainable rps and added p99 at 300
rps. A ramp step is about 6 % of the rate, and on a 2-core machine the step a ramp ends at moves
by one either way from run to run; `--cpu-rounds N` adds `cpu_ab`, tracing's CPU per request
resolved finer: `tandem` and the tracing targets take N interleaved turns of 12 s at one fixed
rate (`--cpu-rate`, 1,000 rps), and the medians are compared (`vs_tandem_pct`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"
MODEL = "bench"
LOADS = (10, 50, 100, 300, 500)
RAMP = (750, 1000, 1250, 1500, 2000, 2500, 3000)
LITELLM_STEPS = (20, 35, 75)  # LiteLLM's limit lies between 10 and 100: find it
COLD_STEPS = (150, 200, 250, 400)  # the cold cache's limit lies between 100 and 500
CACHE_TARGETS = ("tandem_cache_cold", "tandem_cache_warm")
MESSAGES_TARGETS = ("tandem_messages", "tandem_messages_translated")
# tracing over the transport the Tracing component configures (OTLP/HTTP from the event loop) and
# over OTLP/gRPC (the SDK's export thread), each to a receiver of its protocol
TRACING_TARGETS = {"tandem_tracing": "http/protobuf", "tandem_tracing_grpc": "grpc"}
# finer steps where chat completions, Messages and tracing are compared (10 % and 25 % targets):
# about 6 % apart at the top, so that one step is less than the 10 % a target allows
FINE_STEPS = (875, 1125, 1375, 1625, 1750, 1875, 2125, 2250, 2375)
FINE_TARGETS = ("tandem", "tandem_drift", *MESSAGES_TARGETS, *TRACING_TARGETS)
ALL_TARGETS = (
    "direct",
    "minimal",
    "tandem",
    "tandem_drift",
    *MESSAGES_TARGETS,
    "litellm",
    *CACHE_TARGETS,
    *TRACING_TARGETS,
)
P99_LIMIT_MS = 100.0
CPU_AB_SECONDS = 12.0  # each turn of --cpu-rounds
STREAM_RPS = 10
MIN_SAMPLES = 500  # per load, so that p99 is not decided by one or two stalls of a shared machine
STREAM_SAMPLES = 200
REQUEST_TIMEOUT_S = 5.0
JSON_HEADERS = {"Content-Type": "application/json"}

# -- the upstream ---------------------------------------------------------------------------------

_RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " * 20},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    }
).encode()
_CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"ok "},"finish_reason":null}]}\n\n'
)
_USAGE = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    b'"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}}\n\n'
)


_MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "ok " * 20}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 20},
    }
).encode()
_M_HEAD = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_bench","type":"message",'
    b'"role":"assistant","model":"bench","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
_M_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"ok "}}\n\n'
)
_M_TAIL = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":20}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


async def _asgi_body(receive: Any) -> bytes:
    body, more = b"", True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


async def upstream_app(scope: dict, receive: Any, send: Any) -> None:
    """The fastest OpenAI-shaped upstream this machine runs: so it is never the limit."""
    if scope["type"] != "http":
        return
    body = await _asgi_body(receive)
    stream = b'"stream":true' in body or b'"stream": true' in body
    if scope["path"].endswith("/messages"):  # an Anthropic-compatible backend
        ctype = b"text/event-stream" if stream else b"application/json"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]}
        )
        if not stream:
            await send({"type": "http.response.body", "body": _MESSAGE})
            return
        await send({"type": "http.response.body", "body": _M_HEAD, "more_body": True})
        for _ in range(20):
            await send({"type": "http.response.body", "body": _M_DELTA, "more_body": True})
        await send({"type": "http.response.body", "body": _M_TAIL})
        return
    if stream:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for _ in range(20):
            await send({"type": "http.response.body", "body": _CHUNK, "more_body": True})
        tail = (_USAGE if b'"include_usage"' in body else b"") + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_RESPONSE)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _RESPONSE})


def serve_asgi(app: Any, port: int, lifespan: str = "off") -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        access_log=False,
        log_level="warning",
    )


def asgi_proxy(upstream: str, client: str) -> Any:
    """A featureless ASGI pass-through on uvicorn with an httpx or aiohttp client (stack check)."""
    state: dict[str, Any] = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                if client == "httpx":
                    import httpx

                    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
                    state["c"] = httpx.AsyncClient(limits=limits)
                else:
                    import aiohttp

                    state["c"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await _asgi_body(receive)
        headers = {"content-type": "application/json"}
        if client == "httpx":
            data = (
                await state["c"].post(upstream + scope["path"], content=body, headers=headers)
            ).content
        else:
            async with state["c"].post(upstream + scope["path"], data=body, headers=headers) as r:
                data = await r.read()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


async def closed_loop_rps(
    target: Target, seconds: float, concurrency: int = 32
) -> tuple[float, float]:
    """(requests/s, CPU ms per request) with `concurrency` requests always in flight."""
    import aiohttp

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    done = 0
    cpu0 = target.cpu_seconds()
    end = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * concurrency)) as s:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                async with s.post(
                    target.base + "/v1/chat/completions", data=body, headers=JSON_HEADERS
                ) as r:
                    await r.read()
                    done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds, (target.cpu_seconds() - cpu0) * 1000 / max(done, 1)


async def compare_stacks(log: Any, seconds: float) -> dict[str, Any]:
    """Why the gateway runs on aiohttp: the same pass-through on three server/client stacks."""
    up_proc, upstream = start_upstream()
    stacks = {
        "aiohttp server + aiohttp client": [
            str(ROOT / "benchmarks" / "minimal_proxy.py"),
            "--port",
            "{port}",
            "--upstream",
            upstream,
        ],
        "uvicorn + aiohttp client": [__file__, "--serve-asgi-proxy", "{port}", upstream, "aiohttp"],
        "uvicorn + httpx": [__file__, "--serve-asgi-proxy", "{port}", upstream, "httpx"],
    }
    out: dict[str, Any] = {}
    try:
        for name, argv in stacks.items():
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, *(a.replace("{port}", str(port)) for a in argv)]
            )
            target = Target(name, f"http://127.0.0.1:{port}", proc, {})
            try:
                wait_http(target.base + "/", 15, proc)
                await closed_loop_rps(target, 1.0)  # warm
                rps, cpu = await closed_loop_rps(target, seconds)
            finally:
                target.stop()
            out[name] = {"rps": round(rps), "cpu_ms_per_request": round(cpu, 3)}
            log(f"| {name} | {rps:,.0f} | {cpu:.2f} |")
    finally:
        up_proc.terminate()
        up_proc.wait(10)
    return out


# -- targets --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import urllib.error
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # answering, even if with an error status
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


class Target:
    def __init__(
        self, name: str, base: str, proc: subprocess.Popen | None, headers: dict[str, str]
    ) -> None:
        self.name = name
        self.base = base
        self.proc = proc
        self.headers = headers
        self.helpers: list[subprocess.Popen] = []  # e.g. its redis-server, stopped with it
        self.questions: Iterator[str] | None = None  # a new question per request (cold cache)
        self.api = "chat"  # or "messages": POST /v1/messages with a Messages body
        self.span_file: Path | None = None  # tandem_tracing: the OTLP receiver's span count

    def cpu_seconds(self) -> float:
        """CPU time of the target's process tree (utime + stime from /proc)."""
        if self.proc is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in _tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self) -> None:
        for proc in [self.proc, *self.helpers]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


def start_upstream() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", 15, proc)
    return proc, base


def start_minimal(upstream: str) -> Target:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "minimal_proxy.py"),
            "--port",
            str(port),
            "--upstream",
            upstream,
        ]
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", 15, proc)
    return Target("minimal", base, proc, {})


def start_redis() -> tuple[subprocess.Popen, str]:
    import shutil

    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > end or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start within 10 s") from None
            time.sleep(0.05)


def questions() -> list[str]:
    """Distinct real questions for the cold cache: Quora's, in file order."""
    shared = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
    path = shared / "data" / "semcache" / "qqp_pairs_dev.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the cold-cache profile asks distinct questions")
    seen: dict[str, None] = {}
    for line in path.read_text().splitlines():
        pair = json.loads(line)
        seen.setdefault(pair["text_a"])
        seen.setdefault(pair["text_b"])
    return list(seen)


def start_tandem(upstream: str, workdir: Path, profile: str = "tandem") -> Target:
    """`tandem` is the pass-through profile (`tandem_drift`: with drift sampling on the route);
    `tandem_cache_cold` / `tandem_cache_warm` add Redis
    (limits, budget, shared cache entries) and the semantic cache; `tandem_messages` serves
    /v1/messages from an Anthropic-compatible backend (passed through), and
    `tandem_messages_translated` from the same chat-completions backend as `tandem`."""
    import hashlib

    port = free_port()
    key = {
        "id": "bench",
        "team": "bench",
        "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
        "rpm": 10_000_000,
    }
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "reload_interval_s": 0},
        "backends": {
            "fast": {"url": upstream + "/v1", "labels": {"use_case": "bench", "pool": "cpu"}}
        },
        "routes": {MODEL: {"backends": [{"backend": "fast"}], "use_case": "bench"}},
        "prices": {"fast": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}},
        "keys": [key],
    }
    if profile == "tandem_messages":
        cfg["backends"]["fast"]["protocol"] = "anthropic"
    if profile == "tandem_drift":  # drift signals sampled on a tenth of the answers (drift/)
        cfg["routes"][MODEL]["monitoring"] = {"sample_rate": 0.1}
    helpers: list[subprocess.Popen] = []
    if profile in TRACING_TARGETS:
        protocol = TRACING_TARGETS[profile]
        sink, sink_url, sink_file = start_otlp_sink(workdir, protocol)
        helpers.append(sink)
        cfg["tracing"] = {
            "exporter": "otlp",
            "protocol": protocol,
            "endpoint": sink_url,
            "sampling": 1.0,
        }
    redis_proc = None
    body_source = None
    if profile in CACHE_TARGETS:
        redis_proc, redis_url = start_redis()
        key["tpm"] = 1_000_000_000
        cfg["redis"] = {"url": redis_url}
        cfg["teams"] = {"bench": {"budget": {"usd": 1_000_000.0, "period": "month"}}}
        cfg["cache"] = {"mode": "semantic", "redis_url": redis_url}
        if profile == "tandem_cache_cold":
            body_source = iter(questions())
    if redis_proc is not None:
        helpers.append(redis_proc)
    try:
        target = launch_tandem(cfg, workdir / f"routes-{profile}.yaml", profile, KEY)
    except RuntimeError:
        for h in helpers:
            h.kill()
        raise
    target.helpers = helpers
    if profile in TRACING_TARGETS:
        target.span_file = sink_file
    target.questions = body_source
    return target


def launch_tandem(cfg: dict[str, Any], path: Path, name: str, key: str | None) -> Target:
    """`tandem gateway serve` on the routes config `cfg` (which names its port), once ready."""
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "gateway",
            "serve",
            "--config",
            str(path),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{cfg['server']['port']}"
    try:
        wait_http(base + "/readyz", 60, proc)
    except RuntimeError:
        proc.kill()
        raise
    if name in MESSAGES_TARGETS:  # as Claude Code sends it
        target = Target(
            name, base, proc, {"x-api-key": key or "", "anthropic-version": "2023-06-01"}
        )
        target.api = "messages"
        return target
    return Target(name, base, proc, {"Authorization": f"Bearer {key}"} if key else {})


def start_otlp_sink(workdir: Path, protocol: str) -> tuple[subprocess.Popen, str, Path]:
    """A minimal OTLP trace receiver (gRPC or HTTP protobuf) in its own process; it keeps the
    count of spans received in a file (the gateway's exporter is what is measured, not a
    backend)."""
    port = free_port()
    count = workdir / f"spans-{port}.txt"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-otlp-sink", protocol, str(port), str(count)], cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while not count.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the OTLP sink did not start")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", count


def count_spans(request: Any) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def serve_otlp_sink(protocol: str, port: int, count_file: Path) -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    if protocol == "http/protobuf":
        from aiohttp import web

        received = 0
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

        async def export(request: web.Request) -> web.Response:
            nonlocal received
            body = await request.read()
            received += count_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            count_file.write_text(str(received))
            return web.Response(body=answer, content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", export)
        count_file.write_text("0")
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
        return

    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        spans = 0

        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the gRPC method)
            Sink.spans += count_spans(request)
            count_file.write_text(str(Sink.spans))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    count_file.write_text("0")
    server.wait_for_termination()


LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "DISABLE_ADMIN_UI": "True",
    "OTEL_SDK_DISABLED": "true",
    "LITELLM_LOG": "ERROR",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def start_litellm(upstream: str, workdir: Path, venv: Path) -> Target:
    model_list = [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": upstream + "/v1",
                "api_key": "sk-upstream",
            },
        }
    ]
    return launch_litellm({"model_list": model_list}, workdir, venv)


def launch_litellm(cfg: dict[str, Any], workdir: Path, venv: Path) -> Target:
    """LiteLLM proxy, one worker, on `cfg` (its `model_list` and any `router_settings`) with no
    cache, no telemetry and no way off this machine; once it answers."""
    import yaml

    exe = venv / "bin" / "litellm"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} missing: run bash benchmarks/setup-litellm.sh")
    port = free_port()
    dead = (
        free_port()
    )  # nothing listens: any outbound call fails fast instead of leaving the machine
    cfg = {
        **cfg,
        "litellm_settings": {"cache": False, "telemetry": False, **cfg.get("litellm_settings", {})},
        "general_settings": {"master_key": KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proxy = f"http://127.0.0.1:{dead}"
    env = {
        **os.environ,
        **LITELLM_ENV,
        "LITELLM_MASTER_KEY": KEY,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
    }
    proc = subprocess.Popen(
        [
            str(exe),
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "litellm.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health/liveliness", 90, proc)
    except RuntimeError:
        proc.kill()
        raise
    return Target("litellm", base, proc, {"Authorization": f"Bearer {KEY}"})


# -- load -----------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def open_loop(
    target: Target, rate: float, duration: float, stream: bool = False
) -> dict[str, Any]:
    import aiohttp

    def body_for(question: str) -> bytes:
        body: dict[str, Any] = {
            "model": MODEL,
            "temperature": 0,
            "messages": [{"role": "user", "content": question}],
            "stream": stream,
        }
        if target.api == "messages":
            body["max_tokens"] = 64
        return json.dumps(body).encode()

    body = body_for("Say ok twenty times.")
    headers = {"Content-Type": "application/json", **target.headers}
    url = target.base + ("/v1/messages" if target.api == "messages" else "/v1/chat/completions")
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    cpu0 = target.cpu_seconds()
    connector = aiohttp.TCPConnector(limit=2048, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = clock() + 0.05

        async def one(t_sched: float, data: bytes) -> None:
            nonlocal errors
            try:
                async with session.post(url, data=data, headers=headers) as r:
                    if stream:
                        await r.content.readany()  # time to first byte
                        latencies.append(clock() - t_sched)
                        await r.read()
                    else:
                        await r.read()
                        latencies.append(clock() - t_sched)
                    if r.status != 200:
                        errors += 1
                        latencies.pop()
            except (aiohttp.ClientError, TimeoutError, OSError):
                errors += 1

        tasks = []
        for i in range(n):
            t = start + i / rate
            delay = t - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            data = body if target.questions is None else body_for(next(target.questions))
            tasks.append(asyncio.ensure_future(one(t, data)))
        await asyncio.gather(*tasks)
        elapsed = clock() - start
    cpu = target.cpu_seconds() - cpu0
    ms = [x * 1000 for x in latencies]
    return {
        "offered_rps": rate,
        "requests": n,
        "p50_ms": _round(_pct(ms, 0.50)),
        "p99_ms": _round(_pct(ms, 0.99)),
        "mean_ms": _round(statistics.fmean(ms)) if ms else None,
        "achieved_rps": round(len(ms) / max(elapsed, duration), 1),
        "errors": errors,
        "cpu_ms_per_request": _round(cpu * 1000 / n) if target.proc is not None else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def collapsed(row: dict[str, Any]) -> bool:
    """Past its limit a target queues into seconds or fails most requests."""
    return row["p99_ms"] is None or row["p99_ms"] > 1000 or row["errors"] > row["requests"] // 2


def sustained(row: dict[str, Any]) -> bool:
    return (
        row["errors"] == 0
        and row["p99_ms"] is not None
        and row["p99_ms"] < P99_LIMIT_MS
        and row["achieved_rps"] >= 0.9 * row["offered_rps"]
    )


async def warm(target: Target) -> None:
    await open_loop(target, 200, 0.5)


def _log_row(log: Any, name: str, row: dict[str, Any]) -> None:
    log(
        f"  {name:8s} {row['offered_rps']:5.0f} rps  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
        f"achieved {row['achieved_rps']}  errors {row['errors']}  cpu/req {row['cpu_ms_per_request']} ms"
    )


async def measure_all(
    targets: list[Target], duration: float, ramp: tuple[int, ...], min_samples: int, log: Any
) -> dict[str, Any]:
    """Each load for every target back to back, so slow drifts in machine load hit all alike."""
    results: dict[str, Any] = {}
    for t in targets:
        await warm(t)
        # Streaming first, at a load every target sustains.
        stream = await open_loop(
            t, STREAM_RPS, max(duration, min(min_samples, STREAM_SAMPLES) / STREAM_RPS), stream=True
        )
        log(
            f"  {t.name:8s} stream TTFB at {STREAM_RPS} rps: p50 {stream['p50_ms']} ms  p99 {stream['p99_ms']} ms"
        )
        results[t.name] = {"loads": {}, "max_sustainable_rps": 0, "stream_ttfb": stream}
    active = list(targets)
    past_limit: set[str] = set()
    fine = set(FINE_STEPS) if set(ramp) & set(RAMP[4:]) else set()  # not in --quick
    ramp_steps = (set(ramp) | fine) - set(LOADS)
    for rate in sorted(set(LOADS) | set(LITELLM_STEPS) | set(COLD_STEPS) | set(ramp) | fine):
        for t in list(active):
            if rate in LITELLM_STEPS and (t.name != "litellm" or t.name in past_limit):
                continue  # the fine steps are LiteLLM's range
            if rate in fine and t.name not in FINE_TARGETS:
                continue
            if rate in COLD_STEPS and rate not in ramp and t.name != "tandem_cache_cold":
                continue  # and these the cold cache's
            if (rate in ramp or rate in fine) and t.name in ("litellm", "tandem_cache_cold"):
                continue
            r = results[t.name]
            # p99 needs samples: at low rates run longer (not in --quick, a smoke run).
            row = await open_loop(t, rate, max(duration, min_samples / rate))
            _log_row(log, t.name, row)
            if not sustained(row) and not collapsed(row) and rate in ramp_steps and min_samples:
                # One stall of the shared machine is not a target's limit: a step it fails
                # without collapsing is measured once more, and the second try decides.
                first = {k: row[k] for k in ("p99_ms", "achieved_rps", "errors")}
                row = await open_loop(t, rate, max(duration, min_samples / rate))
                row["first_try"] = first
                _log_row(log, f"{t.name} again", row)
            r["loads"][str(rate)] = row
            if sustained(row):
                r["max_sustainable_rps"] = rate
                continue
            if rate in LITELLM_STEPS:
                past_limit.add(t.name)  # still measured at the fixed loads, until it collapses
                continue
            # Past its limit a target queues into seconds; higher loads only pile on.
            if rate not in LOADS or collapsed(row):
                active.remove(t)
                for later in LOADS:
                    if later > rate:
                        r["loads"][str(later)] = {
                            "offered_rps": later,
                            "skipped": "collapsed at a lower load",
                        }
                if t.name == "litellm":
                    t.stop()  # it keeps working on abandoned requests and would slow the others
    return results


def tracing_stats(target: Target) -> dict[str, Any]:
    """Requests answered vs spans the OTLP receiver got (after the exporter's last batch)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(target.base + "/metrics", timeout=5).read().decode()
    answered = sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "tandem_gateway_requests_total" and s.labels.get("code") == "200"
    )
    spans, deadline = 0, time.monotonic() + 30  # the BatchSpanProcessor sends every 5 s
    while time.monotonic() < deadline:
        assert target.span_file is not None
        spans = int(target.span_file.read_text() or 0)
        if spans >= answered:
            break
        time.sleep(0.5)
    return {"requests_answered": int(answered), "spans_received": spans}


def cache_stats(target: Target) -> dict[str, Any]:
    """What the gateway's cache did over the whole run, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(target.base + "/metrics", timeout=5).read().decode()
    lookups: dict[str, float] = {}
    batch_sum = batch_count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tandem_cache_lookups_total":
                lookups[f"{sample.labels['layer']}_{sample.labels['result']}"] = sample.value
            elif sample.name == "tandem_cache_embed_batch_size_sum":
                batch_sum += sample.value
            elif sample.name == "tandem_cache_embed_batch_size_count":
                batch_count += sample.value
    return {
        "lookups": {k: int(v) for k, v in sorted(lookups.items())},
        "embed_batches": int(batch_count),
        "mean_embed_batch": round(batch_sum / batch_count, 2) if batch_count else None,
    }


# -- report ---------------------------------------------------------------------------------------


def added(results: dict[str, Any], target: str, load: str, key: str) -> float | None:
    try:
        return round(results[target]["loads"][load][key] - results["direct"]["loads"][load][key], 2)
    except (KeyError, TypeError):
        return None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"added_ms": {}}
    for t in ALL_TARGETS[1:]:
        if "loads" not in results.get(t, {}):
            continue
        s["added_ms"][t] = {
            load: {
                "p50": added(results, t, load, "p50_ms"),
                "p99": added(results, t, load, "p99_ms"),
            }
            for load in results[t]["loads"]
            if load in results["direct"]["loads"]
        }
        with contextlib.suppress(KeyError, TypeError):
            s["added_ms"][t]["stream_ttfb_p50"] = round(
                results[t]["stream_ttfb"]["p50_ms"] - results["direct"]["stream_ttfb"]["p50_ms"], 2
            )
    tan = results.get("tandem", {}).get("max_sustainable_rps")
    mini = results.get("minimal", {}).get("max_sustainable_rps")
    lite = results.get("litellm", {}).get("max_sustainable_rps")
    targets: dict[str, Any] = {}
    if tan is not None and mini:
        targets["tandem_vs_minimal_sustainable"] = round(tan / mini, 2)
        targets["at_least_half_of_minimal"] = tan >= mini / 2
    if tan is not None and lite is not None:
        targets["tandem_vs_litellm_sustainable"] = round(tan / lite, 1) if lite else None
        targets["at_least_10x_litellm"] = tan >= 10 * lite
    p99_300 = s["added_ms"].get("tandem", {}).get("300", {}).get("p99")
    if p99_300 is not None:
        targets["tandem_added_p99_at_300_ms"] = p99_300
        targets["added_p99_at_300_under_5ms"] = p99_300 < 5
    t10 = s["added_ms"].get("tandem", {}).get("10", {}).get("p99")
    l10 = s["added_ms"].get("litellm", {}).get("10", {}).get("p99")
    if t10 is not None and l10 is not None and l10 > 0:
        targets["tandem_vs_litellm_added_p99_at_10"] = round(max(t10, 0.0) / l10, 3)
        targets["added_p99_at_10_at_most_fifth_of_litellm"] = t10 <= l10 / 5
    elif t10 is not None:
        targets["added_p99_at_10_at_most_fifth_of_litellm"] = None  # direct's own p99 was noise
    cold = results.get("tandem_cache_cold", {}).get("max_sustainable_rps")
    if cold is not None:
        targets["cache_cold_sustainable_rps"] = cold
        targets["cache_cold_at_least_150_rps"] = cold >= 150
        p99_50 = s["added_ms"].get("tandem_cache_cold", {}).get("50", {}).get("p99")
        targets["cache_cold_added_p99_at_50_ms"] = p99_50
        targets["cache_cold_added_p99_at_50_at_most_15ms"] = p99_50 is not None and p99_50 <= 15
    for name, share in (("tandem_messages", 0.9), ("tandem_messages_translated", 0.75)):
        rps = results.get(name, {}).get("max_sustainable_rps")
        if rps is None or not tan:
            continue
        targets[f"{name}_vs_tandem_sustainable"] = round(rps / tan, 3)
        targets[f"{name}_within_{round((1 - share) * 100)}pct_of_tandem"] = rps >= share * tan
        ttfb = s["added_ms"].get(name, {}).get("stream_ttfb_p50")
        targets[f"{name}_added_ttft_p50_ms"] = ttfb
        targets[f"{name}_ttft_within_2ms_of_direct"] = ttfb is not None and ttfb <= 2
    for name in TRACING_TARGETS:
        traced = results.get(name, {}).get("max_sustainable_rps")
        if traced is None or not tan:
            continue
        targets[f"{name}_vs_tandem_sustainable"] = round(traced / tan, 3)
        targets[f"{name}_within_10pct_of_tandem"] = traced >= 0.9 * tan
        on = s["added_ms"].get(name, {}).get("300", {}).get("p99")
        if on is not None and p99_300 is not None:
            targets[f"{name}_added_p99_at_300_vs_tandem_ms"] = round(on - p99_300, 2)
            targets[f"{name}_p99_at_300_within_1ms_of_tandem"] = on - p99_300 <= 1
    hot = results.get("tandem_cache_warm", {}).get("max_sustainable_rps")
    if hot is not None and tan:
        targets["cache_warm_vs_tandem_sustainable"] = round(hot / tan, 2)
        targets["cache_warm_at_least_0.8x_tandem"] = hot >= 0.8 * tan
    s["targets"] = targets
    return s


def table(results: dict[str, Any]) -> str:
    lines = [
        "| target | load (rps) | p50 ms | p99 ms | achieved rps | errors | CPU ms/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in ALL_TARGETS:
        r = results.get(t)
        if r is None:
            continue
        if "loads" not in r:
            lines.append(f"| {t} | - | {r.get('error', 'not run')} | | | | |")
            continue
        for load, row in r["loads"].items():
            if "skipped" in row:
                lines.append(f"| {t} | {load} | skipped ({row['skipped']}) | | | | |")
                continue
            lines.append(
                f"| {t} | {load} | {row['p50_ms']} | {row['p99_ms']} | {row['achieved_rps']} | {row['errors']} | {row['cpu_ms_per_request'] if row['cpu_ms_per_request'] is not None else '-'} |"
            )
    lines += [
        "",
        "| target | max sustainable rps (p99 < 100 ms) | stream TTFB p50 / p99 ms |",
        "|---|---|---|",
    ]
    for t in ALL_TARGETS:
        r = results.get(t, {})
        if "loads" in r:
            st = r["stream_ttfb"]
            lines.append(f"| {t} | {r['max_sustainable_rps']} | {st['p50_ms']} / {st['p99_ms']} |")
    return "\n".join(lines)


async def cpu_ab(
    targets: list[Target], rate: float, seconds: float, rounds: int, log: Any
) -> dict[str, Any]:
    """Tracing's CPU cost, resolved finer than a ramp step: `tandem` and the tracing targets
    take turns at one fixed rate below their limit (the order reversed every round, so a drift
    of the machine falls on all alike), and the gateway process's CPU per request is compared
    by its median over the rounds."""
    chosen = [t for t in targets if t.name == "tandem" or t.name in TRACING_TARGETS]
    per: dict[str, list[float]] = {t.name: [] for t in chosen}
    p99: dict[str, list[float | None]] = {t.name: [] for t in chosen}
    for r in range(rounds):
        for t in chosen if r % 2 == 0 else chosen[::-1]:
            cpu0 = t.cpu_seconds()
            row = await open_loop(t, rate, seconds)
            per[t.name].append(round((t.cpu_seconds() - cpu0) * 1000 / row["requests"], 4))
            p99[t.name].append(row["p99_ms"])
            log(f"  cpu round {r} {t.name}: {per[t.name][-1]} ms/req  p99 {row['p99_ms']} ms")
    medians = {n: round(statistics.median(v), 4) for n, v in per.items()}
    base = medians.get("tandem")
    return {
        "rate_rps": rate,
        "seconds": seconds,
        "rounds": rounds,
        "cpu_ms_per_request": per,
        "p99_ms": p99,
        "median_cpu_ms_per_request": medians,
        "vs_tandem_pct": {
            n: round((m / base - 1) * 100, 1) for n, m in medians.items() if base and n != "tandem"
        },
    }


async def main_async(
    args: argparse.Namespace, log: Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    duration = 2.0 if args.quick else args.duration
    ramp = RAMP[:4] if args.quick else RAMP
    results: dict[str, Any] = {}
    up_proc, upstream = start_upstream()
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    starters = {
        "direct": lambda: Target("direct", upstream, None, {}),
        "minimal": lambda: start_minimal(upstream),
        "tandem": lambda: start_tandem(upstream, workdir),
        "tandem_drift": lambda: start_tandem(upstream, workdir, "tandem_drift"),
        "tandem_cache_cold": lambda: start_tandem(upstream, workdir, "tandem_cache_cold"),
        "tandem_cache_warm": lambda: start_tandem(upstream, workdir, "tandem_cache_warm"),
        "tandem_messages": lambda: start_tandem(upstream, workdir, "tandem_messages"),
        "tandem_messages_translated": lambda: start_tandem(
            upstream, workdir, "tandem_messages_translated"
        ),
        "tandem_tracing": lambda: start_tandem(upstream, workdir, "tandem_tracing"),
        "tandem_tracing_grpc": lambda: start_tandem(upstream, workdir, "tandem_tracing_grpc"),
        "litellm": lambda: start_litellm(upstream, workdir, Path(args.litellm_venv)),
    }
    targets: list[Target] = []
    try:
        for name in args.targets:
            try:
                targets.append(starters[name]())
            except (OSError, RuntimeError) as exc:
                results[name] = {"error": str(exc)}
                log(f"  {name}: not run: {exc}")
        min_samples = 0 if args.quick else MIN_SAMPLES
        results.update(await measure_all(targets, duration, ramp, min_samples, log))
        for t in targets:
            if t.name in CACHE_TARGETS:
                results[t.name]["cache"] = cache_stats(t)
                log(f"  {t.name}: {results[t.name]['cache']}")
            if t.name in TRACING_TARGETS:
                results[t.name]["tracing"] = tracing_stats(t)
                log(f"  {t.name}: {results[t.name]['tracing']}")
        if args.cpu_rounds and extra is not None:
            extra["cpu_ab"] = await cpu_ab(
                targets, args.cpu_rate, CPU_AB_SECONDS, args.cpu_rounds, log
            )
    finally:
        for t in targets:
            t.stop()
        up_proc.terminate()
        up_proc.wait(10)
    return {name: results[name] for name in args.targets if name in results}


def prompt_render(samples: int = 20_000) -> dict[str, Any]:
    """What naming a prompt adds to a request, measured in process on the request path's own
    code: resolving `support/answer@production` (the shipped prompt), rendering it with the
    caller's question and the feature store's four values, and counting the context budget of
    the result with four earlier turns (gateway/stages/prompt.py). The HTTP cost is the same as
    any chat request's (the JSON body is re-serialised once), so this is the added time."""
    from gateway.config import compile_config, parse_config
    from gateway.metrics import Metrics
    from gateway.stages.call import Call
    from gateway.stages.prompt import PromptStage, resolve
    from vocabulary.prompts import PROMPTS_ROOT, load_prompts

    shipped = load_prompts(PROMPTS_ROOT, ["support/answer"])["support/answer"]
    compiled = compile_config(
        parse_config(
            {
                "backends": {"b": {"url": "http://127.0.0.1:1/v1", "context_window": 8192}},
                "routes": {"support-chat": {"backends": [{"backend": "b"}]}},
                "prompts": {"support/answer": shipped.model_dump(mode="json")},
            }
        )
    )
    stage = PromptStage(Metrics())
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Earlier turn {i}: " * 8}
        for i in range(4)
    ]
    features = {"plan_tier": "enterprise", "tenure_months": "4", "open_tickets": "5"}
    times = []
    clock = time.perf_counter
    for i in range(samples):
        call = Call("chat.completions", 0.0, compiled)
        call.body = {
            "prompt": "support/answer@production",
            "variables": {"question": f"Where is my refund for order {i}?"},
            "messages": history,
            "user": "C1",
        }
        t0 = clock()
        resolve(call)
        call.route = compiled.routes[call.body["model"]]
        call.feature_values = features
        stage.render(call)
        stage.budget(call)
        times.append((clock() - t0) * 1000)
    return {
        "samples": samples,
        "p50_ms": round(_pct(times, 0.50) or 0.0, 4),
        "p99_ms": round(_pct(times, 0.99) or 0.0, 4),
        "max_ms": round(max(times), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", choices=("table", "json"), default="table")
    ap.add_argument("--quick", action="store_true", help="2 s per load, shorter ramp (< 2 minutes)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per offered load")
    ap.add_argument(
        "--targets",
        nargs="+",
        default=list(ALL_TARGETS),
        choices=list(ALL_TARGETS),
    )
    ap.add_argument("--litellm-venv", default=str(ROOT / ".venv-litellm"))
    ap.add_argument("--write", help="also write the JSON result to this file")
    ap.add_argument(
        "--compare-stacks",
        action="store_true",
        help="only compare pass-through proxies on aiohttp, uvicorn+aiohttp and uvicorn+httpx",
    )
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--cpu-rounds",
        type=int,
        default=0,
        help="after the ramps, rounds of the interleaved fixed-rate CPU comparison of tandem "
        "and the tracing targets (JSON: cpu_ab); 0: none",
    )
    ap.add_argument("--cpu-rate", type=float, default=1000.0, help="its rate (requests/s)")
    ap.add_argument("--serve-otlp-sink", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--serve-asgi-proxy", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        serve_asgi(upstream_app, args.serve_upstream)
        return 0
    if args.serve_otlp_sink:
        protocol, port, count = args.serve_otlp_sink
        serve_otlp_sink(protocol, int(port), Path(count))
        return 0
    if args.serve_asgi_proxy:
        port, upstream, client = args.serve_asgi_proxy
        serve_asgi(asgi_proxy(upstream, client), int(port), lifespan="on")
        return 0
    import uvloop

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.compare_stacks:
        print(
            "| pass-through stack (concurrency 32) | requests/s | CPU ms/req |\n|---|---|---|",
            flush=True,
        )
        stacks = uvloop.run(
            compare_stacks(lambda m: print(m, flush=True), 3.0 if args.quick else 8.0)
        )
        if args.output == "json":
            print(json.dumps(stacks))
        return 0
    t0 = time.monotonic()
    extra: dict[str, Any] = {}
    results = uvloop.run(main_async(args, log, extra))
    rendering = prompt_render(5_000 if args.quick else 20_000)
    out = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "results": results,
        "max_sustainable_rps": {t: r.get("max_sustainable_rps") for t, r in results.items()},
        **summarize(results),
        "prompt_render_p99_ms": rendering["p99_ms"],  # target: <= 0.5 ms
        "prompt_render": rendering,
        **extra,  # cpu_ab, with --cpu-rounds
        "wall_s": round(time.monotonic() - t0, 1),
    }
    if args.write:
        Path(args.write).write_text(json.dumps(out, indent=2))
    if args.output == "json":
        print(json.dumps(out))
    else:
        print(table(results))
        print(json.dumps({"added_ms": out["added_ms"], "targets": out["targets"]}, indent=2))
        print(f"prompt rendering: {json.dumps(rendering)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
