"""Resilience under partial failure: how much traffic a faulty backend keeps, what the callers
see, and how soon traffic comes back, for Tandem and LiteLLM proxy side by side.

One route whose backend ("primary") misbehaves, with a healthy fallback route ("spare"), under an
open-loop load (requests leave on a fixed schedule whatever earlier ones are doing). A cell is
one fault kind x one rate x one load x streaming or not, on a fresh gateway process:

    fault kinds  500, reset (connection dropped before an answer), stall (30 s, past the 1 s
                 first-token timeout), malformed (200 with an HTML error page), 429 (with
                 `Retry-After: 1`), 429_no_retry_after, slow_first_token (0.5 s, the breaker's
                 slow_first_token_s is 0.3 s), provider_limit (429 with
                 `x-ratelimit-remaining-requests: 0`: the key is exhausted)
    rates        1 %, 5 %, 20 % of the primary's answers, drawn at random per upstream request
                 (retries draw again), for the whole cell; 100 % for 10 s, then healthy.
                 provider_limit is a state, not a draw: at rate x the key is exhausted for the
                 first x of every second (its reset header says when that part ends); at 100 %
                 it is exhausted for 10 s, the reset header saying "1s" throughout. The
                 requests sent while it is exhausted belong on the fallback, and their share
                 is not x: at 10 requests/s one request of every second (10 %) leaves at the
                 start of a second, so the 1 % and 5 % cells send 10 % into the limit. These
                 cells are held to "no client errors", not to the per-request 1 - 2x
    loads        10 and 100 requests/s (LiteLLM: 10; it sustains about 35 here)

Per cell: `primary_share`, `fallback_share` (shares of all requests sent), `client_errors` (any
answer that is not a complete 200: an error status, an error event in a stream, a timeout or a
dropped connection), `p50_ms` / `p99_ms` / `max_ms` (whole answer, from the scheduled send time),
`over_deadline` (answers slower than the route deadline + 0.5 s; nothing may hang), and for the
100 % cells `failover_s` (from the fault's start to the first request after which >= 95 % of the
requests sent until the fault ended avoided the primary) and `recovery_s` (from the fault's end
to the first request after which >= 95 % of the requests were served by the primary).

    python benchmarks/gateway_resilience.py                 # the full matrix, about 40 minutes
    python benchmarks/gateway_resilience.py --quick         # 20 % and 100 %, one load, no streams
    python benchmarks/gateway_resilience.py --output json   # {"cells": [...], ...} on stdout

Both gateways get the same route: retries 2 (backoff 0.05 s), deadline 10 s, timeouts connect
1 s / first token 1 s / total 10 s, the fallback route after the retries; breaker and cooldown
settings are each gateway's defaults (Tandem: 5 consecutive failures, probes one request in 50
while open; LiteLLM: allowed_fails 3, cooldown_time 5 s). LiteLLM runs from its own environment
(bash benchmarks/setup-litellm.sh), started once and idle 5 s between cells so its cooldowns end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway_overhead import (
    ROOT,
    Target,
    _pct,
    free_port,
    launch_litellm,
    launch_tandem,
    wait_http,
)

FAULTS = (
    "500",
    "reset",
    "stall",
    "malformed",
    "429",
    "429_no_retry_after",
    "slow_first_token",
    "provider_limit",
)
RATES = (0.01, 0.05, 0.2, 1.0)
LOADS = (10, 100)
LITELLM_LOADS = (10,)  # LiteLLM sustains about 35 requests/s on this machine (docs/benchmarks.md)
OUTAGE_S = 10.0  # the 100 % cells: faulty this long, then healthy
DEADLINE_S = 10.0
STALL_S = 30.0
SLOW_FIRST_TOKEN_S = 0.5
SLOW_THRESHOLD_S = 0.3
SETTLE_S = 5.0  # idle between LiteLLM cells: its default cooldown_time
MODEL, FALLBACK = "bench", "bench-fallback"
PRIMARY_TEXT, SPARE_TEXT = b"served-by-primary", b"served-by-spare"

# -- the upstreams: one faulty, one healthy, in a process of their own --------------------------


class FaultState:
    """What the primary does now; set per cell through POST /control."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.rate = 0.0
        self.outage_s: float | None = None  # the 100 % cells: faulty for this long
        self.start = 0.0
        self.rng = random.Random(0)
        self.requests = 0

    def faulty(self, now: float) -> bool:
        if self.fault is None:
            return False
        if self.outage_s is not None:
            return now - self.start < self.outage_s
        if self.fault == "provider_limit":  # exhausted for the first `rate` of every second
            return (now - self.start) % 1.0 < self.rate
        return self.rng.random() < self.rate

    def reset_s(self, now: float) -> float:
        """provider_limit: when the exhausted part ends (the 100 % cells: every second)."""
        if self.outage_s is not None:
            return 1.0
        return max(0.001, self.rate - (now - self.start) % 1.0)


def upstream_app(name: str, state: FaultState | None) -> Any:
    from aiohttp import web

    text = (PRIMARY_TEXT if name == "primary" else SPARE_TEXT).decode()

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        ev = {
            "id": f"chatcmpl-{name}",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"

    usage = {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    answer = json.dumps(
        {
            "id": f"chatcmpl-{name}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{text} ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).encode()
    events = (
        [chunk({"role": "assistant", "content": ""})]
        + [chunk({"content": t}) for t in (text, " ok", " ok", " ok")]
        + [chunk({}, "stop")]
    )
    usage_event = (
        b'data: {"id":"chatcmpl-'
        + name.encode()
        + b'","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],'
        + b'"usage":'
        + json.dumps(usage, separators=(",", ":")).encode()
        + b"}\n\n"
    )

    def error(status: int, headers: dict | None = None) -> web.Response:
        body = {"error": {"message": f"{name} {status}", "type": "upstream", "code": str(status)}}
        return web.json_response(body, status=status, headers=headers)

    async def control(request: web.Request) -> web.Response:
        assert state is not None
        cmd = await request.json()
        state.fault = cmd.get("fault")
        state.rate = float(cmd.get("rate", 0.0))
        state.outage_s = cmd.get("outage_s")
        state.rng = random.Random(cmd.get("seed", 0))
        state.start = time.monotonic()
        count, state.requests = state.requests, 0
        return web.json_response({"requests": count})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream = bool(body.get("stream"))
        fault = None
        if state is not None:
            state.requests += 1
            now = time.monotonic()
            if state.faulty(now):
                fault = state.fault
                if fault == "provider_limit":
                    reset = state.reset_s(now)
                    return error(
                        429,
                        {
                            "x-ratelimit-limit-requests": "100",
                            "x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": f"{reset * 1000:.0f}ms",
                            "retry-after-ms": f"{reset * 1000:.0f}",
                            "Retry-After": str(math.ceil(reset)),
                        },
                    )
        if fault == "500":
            return error(500)
        if fault == "429":
            return error(429, {"Retry-After": "1"})
        if fault == "429_no_retry_after":
            return error(429)
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault == "stall":
            await asyncio.sleep(STALL_S)
        if fault == "malformed":
            return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")
        slow = SLOW_FIRST_TOKEN_S if fault == "slow_first_token" else 0.0
        if not stream:
            if slow:
                await asyncio.sleep(slow)
            return web.Response(body=answer, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if slow:
            await asyncio.sleep(slow)
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        await resp.write(b"".join(events) + (usage_event if include else b"") + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)

    async def alive(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", alive)
    if state is not None:
        app.router.add_post("/control", control)
    return app


def serve_upstreams(primary_port: int, spare_port: int) -> None:
    import logging

    import uvloop
    from aiohttp import web

    # a stalled answer whose caller gave up fails to write 30 s later: expected, not news
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    async def main() -> None:
        runners = []
        for name, port, state in (
            ("primary", primary_port, FaultState()),
            ("spare", spare_port, None),
        ):
            runner = web.AppRunner(upstream_app(name, state), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
            runners.append(runner)
        await asyncio.Event().wait()

    uvloop.run(main())


def start_upstreams() -> tuple[subprocess.Popen, str, str]:
    p, s = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-upstreams", str(p), str(s)])
    primary, spare = f"http://127.0.0.1:{p}", f"http://127.0.0.1:{s}"
    wait_http(primary + "/", 15, proc)
    wait_http(spare + "/", 15, proc)
    return proc, primary, spare


# -- the gateways -----------------------------------------------------------------------------


def tandem_config(primary: str, spare: str, port: int) -> dict[str, Any]:
    timeouts = {"connect_s": 1.0, "first_token_s": 1.0, "total_s": DEADLINE_S}
    return {
        "server": {"host": "127.0.0.1", "port": port, "reload_interval_s": 0},
        "backends": {
            "primary": {
                "url": primary + "/v1",
                "timeouts": timeouts,
                "breaker": {"slow_first_token_s": SLOW_THRESHOLD_S},
            },
            "spare": {"url": spare + "/v1", "timeouts": timeouts},
        },
        "routes": {
            MODEL: {
                "backends": [{"backend": "primary"}],
                "fallbacks": [FALLBACK],
                "deadline_s": DEADLINE_S,
                "retries": {"attempts": 2, "backoff_s": 0.05},
            },
            FALLBACK: {"backends": [{"backend": "spare"}], "deadline_s": DEADLINE_S},
        },
    }


def litellm_config(primary: str, spare: str) -> dict[str, Any]:
    def entry(name: str, base: str) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": base + "/v1",
                "api_key": "sk-upstream",
                "timeout": 1.0,  # Tandem's first_token_s: the answer is small and fast
                "stream_timeout": 1.0,
            },
        }

    return {
        "model_list": [entry(MODEL, primary), entry(FALLBACK, spare)],
        "router_settings": {
            "num_retries": 2,
            "timeout": DEADLINE_S,
            "fallbacks": [{MODEL: [FALLBACK]}],
        },
    }


# -- one cell -----------------------------------------------------------------------------------


async def control(primary: str, **cmd: Any) -> int:
    """Set the primary's fault; how many requests it received since the last call."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(primary + "/control", json=cmd) as r:
        return int((await r.json())["requests"])


async def run_cell(
    target: Target, primary: str, fault: str, rate: float, rps: int, stream: bool, seconds: float
) -> dict[str, Any]:
    """Offer `rps` for `seconds` while the primary misbehaves; one row of the matrix."""
    import aiohttp

    outage = rate >= 1.0
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say ok."}],
            "max_tokens": 16,
            "stream": stream,
        }
    ).encode()
    headers = {"Content-Type": "application/json", **target.headers}
    url = target.base + "/v1/chat/completions"
    n = int(rps * seconds)
    # (scheduled send time relative to the fault's start, who served it, seconds)
    rows: list[tuple[float, str, float]] = []
    clock = time.perf_counter
    timeout = aiohttp.ClientTimeout(total=DEADLINE_S + 5)
    connector = aiohttp.TCPConnector(limit=4096)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await control(primary, fault=fault, rate=rate, outage_s=OUTAGE_S if outage else None)
        start = clock()

        async def one(t_sched: float) -> None:
            who = "error"
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    data = await r.read()
                    if r.status == 200 and b'"error"' not in data:
                        if PRIMARY_TEXT in data:
                            who = "primary"
                        elif SPARE_TEXT in data:
                            who = "spare"
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            rows.append((t_sched - start, who, clock() - t_sched))

        tasks = []
        for i in range(n):
            t = start + i / rps
            delay = t - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(t)))
        await asyncio.gather(*tasks)
    upstream_requests = await control(primary, fault=None)
    return summarize_cell(rows, fault, rate, rps, stream, outage, upstream_requests)


def summarize_cell(
    rows: list[tuple[float, str, float]],
    fault: str,
    rate: float,
    rps: int,
    stream: bool,
    outage: bool,
    upstream_requests: int,
) -> dict[str, Any]:
    rows.sort()
    total = len(rows)
    primary = sum(1 for _, who, _ in rows if who == "primary")
    spare = sum(1 for _, who, _ in rows if who == "spare")
    ms = [lat * 1000 for _, _, lat in rows]
    cell: dict[str, Any] = {
        "fault": fault,
        "rate": rate,
        "rps": rps,
        "stream": stream,
        "requests": total,
        "primary_share": round(primary / total, 4),
        "fallback_share": round(spare / total, 4),
        "client_errors": total - primary - spare,
        "p50_ms": round(_pct(ms, 0.5) or 0, 1),
        "p99_ms": round(_pct(ms, 0.99) or 0, 1),
        "max_ms": round(max(ms), 1),
        "over_deadline": sum(1 for x in ms if x > (DEADLINE_S + 0.5) * 1000),
        "primary_upstream_requests": upstream_requests,
        "failover_s": None,
        "recovery_s": None,
    }
    if outage:
        during = [(t, who) for t, who, _ in rows if t < OUTAGE_S]
        after = [(t, who) for t, who, _ in rows if t >= OUTAGE_S]
        cell["failover_s"] = _settled(during, lambda who: who != "primary", 0.0)
        cell["recovery_s"] = _settled(after, lambda who: who == "primary", OUTAGE_S)
    return cell


def _settled(rows: list[tuple[float, str]], good: Any, since: float) -> float | None:
    """Seconds from `since` to the first request after which >= 95 % of the rows are `good`."""
    bad_after = sum(1 for _, who in rows if not good(who))
    left = len(rows)
    for t, who in rows:
        if bad_after <= 0.05 * left:
            return round(max(0.0, t - since), 2)
        bad_after -= 0 if good(who) else 1
        left -= 1
    return None


def meets(cell: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets that apply to this cell."""
    out: dict[str, bool | None] = {
        "nothing_lost_or_hung": cell["over_deadline"] == 0
        and cell["primary_share"]
        + cell["fallback_share"]
        + cell["client_errors"] / cell["requests"]
        > 0.999,
    }
    if cell["rate"] < 1.0:
        if cell["fault"] != "provider_limit":  # a state of the key, not a per-request fault
            out["primary_at_least_1_minus_2x"] = (
                cell["primary_share"] >= 1 - 2 * cell["rate"] - 1e-9
            )
        out["no_client_errors"] = cell["client_errors"] == 0
    elif cell["fault"] == "provider_limit":
        f, r = cell["failover_s"], cell["recovery_s"]
        out["fallback_within_1s"] = f is not None and f <= 1.0
        out["back_within_5s"] = r is not None and r <= 5.0
        out["no_client_errors"] = cell["client_errors"] == 0
    else:
        out["no_client_errors"] = cell["client_errors"] == 0
        if cell["rps"] >= 100:
            r = cell["recovery_s"]
            out["back_within_10s"] = r is not None and r <= 10.0
    return out


# -- the matrix ---------------------------------------------------------------------------------


def cells_for(args: argparse.Namespace, target: str) -> list[tuple[str, float, int, bool]]:
    loads = [x for x in args.loads if target != "litellm" or x in LITELLM_LOADS]
    if args.quick:  # one load each: the one that tells most
        loads = loads[-1:]
    streams = {"off": [False], "on": [True], "both": [False, True]}[args.stream]
    return [
        (fault, rate, rps, stream)
        for fault in args.faults
        for rps in loads
        for stream in streams
        for rate in args.rates
    ]


async def run_matrix(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    up_proc, primary, spare = start_upstreams()
    workdir = Path(tempfile.mkdtemp(prefix="gw-resilience-"))
    cells: list[dict[str, Any]] = []
    litellm: Target | None = None
    try:
        for target in args.targets:
            plan = cells_for(args, target)
            log(f"{target}: {len(plan)} cells")
            if target == "litellm":
                try:
                    litellm = launch_litellm(
                        litellm_config(primary, spare), workdir, Path(args.litellm_venv)
                    )
                except (OSError, RuntimeError) as exc:
                    log(f"  litellm: not run: {exc}")
                    continue
            for fault, rate, rps, stream in plan:
                seconds = OUTAGE_S + args.healthy_s if rate >= 1.0 else args.partial_s
                if target == "tandem":
                    port = free_port()
                    gw = launch_tandem(
                        tandem_config(primary, spare, port),
                        workdir / "routes.yaml",
                        "tandem",
                        None,
                    )
                else:
                    assert litellm is not None
                    litellm = _healthy_litellm(litellm, primary, spare, workdir, args)
                    await asyncio.sleep(SETTLE_S)
                    gw = litellm
                try:
                    cell = await run_cell(gw, primary, fault, rate, rps, stream, seconds)
                finally:
                    if target == "tandem":
                        gw.stop()
                cell["target"] = target
                cell["meets"] = meets(cell)
                cells.append(cell)
                log(row(cell))
    finally:
        if litellm is not None:
            litellm.stop()
        up_proc.terminate()
        up_proc.wait(10)
    return cells


def _healthy_litellm(
    t: Target, primary: str, spare: str, workdir: Path, args: argparse.Namespace
) -> Target:
    """LiteLLM as it is, or restarted when it stopped answering its liveness probe."""
    import urllib.request

    try:
        urllib.request.urlopen(t.base + "/health/liveliness", timeout=5).read()
        return t
    except OSError:
        t.stop()
        return launch_litellm(litellm_config(primary, spare), workdir, Path(args.litellm_venv))


# -- report ---------------------------------------------------------------------------------------


def _pct_text(x: float) -> str:
    return f"{x * 100:.0f} %" if x >= 0.01 else f"{x * 100:.1f} %"


def row(c: dict[str, Any]) -> str:
    def s(x: float | None) -> str:
        return "—" if x is None else f"{x:g}"

    missed = [k for k, v in c["meets"].items() if v is False]
    return (
        f"| {c['target']} | {c['fault']} | {_pct_text(c['rate'])} | {c['rps']} | "
        f"{'yes' if c['stream'] else 'no'} | {c['primary_share'] * 100:.1f} | "
        f"{c['fallback_share'] * 100:.1f} | {c['client_errors']} | {c['p50_ms']:g} | "
        f"{c['p99_ms']:g} | {s(c['failover_s'])} | {s(c['recovery_s'])} | "
        f"{'missed: ' + ', '.join(missed) if missed else 'met'} |"
    )


HEADER = (
    "| target | fault | rate | rps | stream | primary % | fallback % | client errors | p50 ms | "
    "p99 ms | failover s | recovery s | targets |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def summary(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in sorted({c["target"] for c in cells}):
        mine = [c for c in cells if c["target"] == target]
        missed = [
            f"{c['fault']} {_pct_text(c['rate'])} {c['rps']} rps{' stream' if c['stream'] else ''}: {k}"
            for c in mine
            for k, v in c["meets"].items()
            if v is False
        ]
        out[target] = {
            "cells": len(mine),
            "cells_meeting_every_target": sum(
                1 for c in mine if all(v is not False for v in c["meets"].values())
            ),
            "client_errors": sum(c["client_errors"] for c in mine),
            "over_deadline": sum(c["over_deadline"] for c in mine),
            "mean_primary_share_partial": round(
                statistics.fmean(c["primary_share"] for c in mine if c["rate"] < 1.0), 4
            )
            if any(c["rate"] < 1.0 for c in mine)
            else None,
            "missed": missed,
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", choices=("table", "json"), default="table")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="20 %% and 100 %% only, 100 rps (LiteLLM 10), no streams, 4 s cells: 32 of the 192 cells",
    )
    ap.add_argument(
        "--targets", nargs="+", default=["tandem", "litellm"], choices=["tandem", "litellm"]
    )
    ap.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    ap.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    ap.add_argument("--loads", nargs="+", type=int, default=list(LOADS))
    ap.add_argument("--stream", choices=("off", "on", "both"), default="both")
    ap.add_argument("--partial-s", type=float, default=6.0, help="seconds per 1/5/20 %% cell")
    ap.add_argument("--healthy-s", type=float, default=10.0, help="seconds after a 10 s outage")
    ap.add_argument("--litellm-venv", default=str(ROOT / ".venv-litellm"))
    ap.add_argument("--write", help="also write the JSON result to this file")
    ap.add_argument("--serve-upstreams", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstreams:
        serve_upstreams(*args.serve_upstreams)
        return 0
    if args.quick:
        args.rates = [0.2, 1.0]
        args.loads = [10, 100]  # the highest each sustains: LiteLLM 10, Tandem 100
        args.stream = "off"
        args.partial_s = 4.0
    bad = [r for r in args.rates if not 0 < r <= 1]
    if bad:
        ap.error(f"--rates: {bad} must be shares in (0, 1], e.g. 0.05")
    import uvloop

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    log(HEADER)
    cells = uvloop.run(run_matrix(args, log))
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_start": round(load0, 2),
            "load_average_end": round(os.getloadavg()[0], 2),
        },
        "quick": args.quick,
        "cells": cells,
        "summary": summary(cells),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    if args.write:
        Path(args.write).write_text(json.dumps(out, indent=2))
    if args.output == "json":
        print(json.dumps(out))
    else:
        print(HEADER)
        for c in cells:
            print(row(c))
        print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
