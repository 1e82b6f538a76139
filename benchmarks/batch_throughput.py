"""Batch throughput, the priority rule, and the fault runs, on real parts.

    python benchmarks/batch_throughput.py                  # table (about 4 minutes)
    python benchmarks/batch_throughput.py --output json    # one JSON object on stdout
    python benchmarks/batch_throughput.py --quick          # 1,000 lines, short windows

Everything is a real process on loopback: redis-server (AOF, fsync every second), moto's S3
server, `tandem gateway serve`, two `tandem batch worker`s, and an upstream with a fixed number of
slots (as a GPU server has: an answer holds a slot for `--service-ms`, the rest wait in line).

1. Throughput: a `--lines` batch through the Batch API (upload, create, wait for `completed`) vs
   the same requests sent online through the same gateway with as many in flight as the workers
   run (workers x concurrency): `lines_per_s_batch`, `lines_per_s_online`.
2. The priority rule: online requests at a fixed rate (`--online-rps`, open loop) on a small
   upstream (`--slots`), alone and then with a batch running beside them, on a stack whose routes
   declare the online SLO (the workers yield to it) and on the same stack without it (the peer:
   batch work taking what it can). `online_p95_ms_alone`, `online_p95_ms_with_batch`; the batch's
   progress during the window is reported too (`batch_lines_per_s_during_online`).
3. Fault runs on `--lines` lines: workers SIGKILLed, Redis SIGKILLed and restarted on its AOF, the
   gateway SIGKILLed and restarted, each when 30% of the batch is done; per run `lost`,
   `duplicated` (lines in output ∪ errors more than once) and `double_charged` (lines charged
   twice, from the team's spend in Redis).

The JSON field names are an interface (issue 18): `lines`, `lines_per_s_batch`,
`lines_per_s_online`, `online_p95_ms_alone`, `online_p95_ms_with_batch`, and `fault_runs` with
`lost`, `duplicated`, `double_charged` each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.pipelines import KEY, BatchStack, CapacityUpstream, write_routes  # noqa: E402

FAULTS = ("kill_workers", "restart_redis", "restart_gateway")
WORKERS, CONCURRENCY = 2, 16
AT = 0.8  # the rule's at_fraction (its default)


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))] if s else float("nan")


async def _online(
    url: str,
    *,
    rate: float | None = None,
    count: int | None = None,
    seconds: float | None = None,
    concurrency: int = 64,
    skip_s: float = 0.0,
) -> tuple[list[float], int, float]:
    """Online chat requests through the gateway: open loop at `rate` per second for `seconds`,
    or closed loop, `count` requests with `concurrency` in flight; requests sent in the first
    `skip_s` are not counted. (latencies s, errors, wall s)"""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {KEY}"}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        body = {"model": "chat", "messages": [{"role": "user", "content": f"online {i}"}]}
        t = time.perf_counter()
        counted = t - t0 >= skip_s
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += counted
                    return
        except aiohttp.ClientError:
            errors += counted
            return
        if counted:
            latencies.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=256)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        if rate is not None and seconds is not None:
            tasks = []
            n = int(rate * seconds)
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one(session, i)))
            await asyncio.gather(*tasks)
        else:
            assert count is not None
            todo = iter(range(count))

            async def loop() -> None:
                for i in todo:
                    await one(session, i)

            await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0 - skip_s


def online(url: str, **kw: Any) -> tuple[list[float], int, float]:
    return asyncio.run(_online(url, **kw))


def _workers_cfg(slo_ms: float | None) -> dict[str, Any]:
    workers: dict[str, Any] = {"claim_idle_s": 2.0, "concurrency": CONCURRENCY}
    if slo_ms is not None:
        workers["yield_to_online"] = {"slo_p95_ms": {"chat": round(slo_ms, 1)}, "at_fraction": AT}
    return workers


def _restart_workers(s: BatchStack, slo_ms: float | None) -> None:
    """New workers on a routes file with (or without) the online SLO they yield to."""
    s.cfg["batch"]["workers"] = _workers_cfg(slo_ms)
    write_routes(s.config, s.cfg)
    for w in s.workers:
        w.stop()
    s.workers = [s.new_worker().start() for _ in range(s.n_workers)]


def _beside_a_batch(s: BatchStack, args: argparse.Namespace) -> tuple[list[float], int, float]:
    """Online latencies while a batch runs, and the batch's lines/s in the same window. Online
    traffic runs throughout; the batch arrives a second in, and only requests sent after
    `--ramp-s` (the rule has settled) count."""
    out: dict[str, Any] = {}
    seconds = args.ramp_s + args.window_s

    def traffic() -> None:
        out["online"] = online(s.url, rate=args.online_rps, seconds=seconds, skip_s=args.ramp_s)

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(1.0)
    batch_id = s.submit(args.priority_lines)
    time.sleep(args.ramp_s - 1.0)
    done0, t0 = s.done(batch_id), time.monotonic()
    thread.join()
    progress = (s.done(batch_id) - done0) / (time.monotonic() - t0)
    s.client()._json("POST", f"/batches/{batch_id}/cancel")
    s.client().wait(batch_id, poll_s=0.25, timeout_s=300)
    beside, errors, _wall = out["online"]
    return beside, errors, progress


def priority_phase(folder: Path, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """Online p95 alone and beside a batch on a small upstream, with the priority rule and
    without it (the peer), on one stack. The online route's SLO is declared at `--slo-factor`
    times what online gets alone, over `at_fraction`: the rule yields once online p95 passes
    `--slo-factor` x its p95 alone."""
    up = CapacityUpstream(args.slots, args.service_ms / 1000)
    with BatchStack(
        folder, workers=WORKERS, upstream=up, batch={"workers": _workers_cfg(None)}
    ) as s:
        online(s.url, rate=args.online_rps, seconds=3.0)  # warm up
        alone, err_alone, _ = online(s.url, rate=args.online_rps, seconds=args.window_s)
        slo_ms = p95(alone) * 1000 * args.slo_factor / AT
        _restart_workers(s, slo_ms)
        with_rule, err_rule, progress_rule = _beside_a_batch(s, args)
        _restart_workers(s, None)
        alone_again, err_again, _ = online(s.url, rate=args.online_rps, seconds=args.window_s)
        without, err_without, progress_without = _beside_a_batch(s, args)
    out = {
        "online_p95_ms_alone": round(p95(alone) * 1000, 1),
        "online_p95_ms_with_batch": round(p95(with_rule) * 1000, 1),
        "batch_lines_per_s_during_online": round(progress_rule, 1),
        "online_errors": err_alone + err_rule + err_again + err_without,
        "slo_ms": round(slo_ms, 1),
        "peer_without_rule": {
            "online_p95_ms_alone": round(p95(alone_again) * 1000, 1),
            "online_p95_ms_with_batch": round(p95(without) * 1000, 1),
            "batch_lines_per_s_during_online": round(progress_without, 1),
        },
    }
    log(f"  priority: {out}")
    return out


def throughput_phase(s: BatchStack, lines: int, log: Any) -> dict[str, Any]:
    c = s.client()
    t0 = time.perf_counter()
    batch_id = s.submit(lines)
    b = c.wait(batch_id, poll_s=0.1, timeout_s=1800)
    batch_s = time.perf_counter() - t0
    assert b["status"] == "completed", b
    _, errors, online_s = online(s.url, count=lines, concurrency=WORKERS * CONCURRENCY)
    out = {
        "lines_per_s_batch": round(lines / batch_s, 1),
        "lines_per_s_online": round(lines / online_s, 1),
        "online_errors_throughput": errors,
        "batch_failed_lines": b["request_counts"]["failed"],
    }
    log(f"  throughput: {out}")
    return out


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"lines": args.lines}
    with tempfile.TemporaryDirectory(prefix="tandem-batch-bench-") as tmp:
        root = Path(tmp)
        runs = []
        if "throughput" in args.phases or "faults" in args.phases:
            log(f"throughput and fault runs: {args.lines} lines, {WORKERS} workers x {CONCURRENCY}")
            up = CapacityUpstream(args.fast_slots, args.fast_service_ms / 1000)
            with BatchStack(root / "main", workers=WORKERS, upstream=up) as s:
                if "throughput" in args.phases:
                    result.update(throughput_phase(s, args.lines, log))
                for fault in FAULTS if "faults" in args.phases else ():
                    run = s.fault_run(fault, args.lines, timeout_s=1800)
                    log(f"  fault {fault}: {run}")
                    runs.append(run)
        if "priority" in args.phases:
            log(f"priority rule: {args.online_rps} online req/s on {args.slots} slots")
            result.update(priority_phase(root / "priority", args, log))
    result["fault_runs"] = runs
    result["setup"] = {
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "slots": args.slots,
        "throughput_slots": args.fast_slots,
        "service_ms": args.service_ms,
        "throughput_service_ms": args.fast_service_ms,
        "online_rps": args.online_rps,
        "slo_factor": args.slo_factor,
        "at_fraction": AT,
        "window_s": args.window_s,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [("lines", r["lines"])]
    if "lines_per_s_batch" in r:
        rows += [
            ("lines/s, batch", r["lines_per_s_batch"]),
            ("lines/s, online (same requests)", r["lines_per_s_online"]),
            ("batch / online", round(r["lines_per_s_batch"] / r["lines_per_s_online"], 2)),
        ]
    if "peer_without_rule" in r:
        rows += _priority_rows(r)
    for run in r["fault_runs"]:
        rows.append(
            (
                f"fault {run['fault']}",
                f"lost {run['lost']}, duplicated {run['duplicated']}, double charged "
                f"{run['double_charged']} ({run['seconds']} s, {run['reruns']} re-runs)",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _priority_rows(r: dict[str, Any]) -> list[tuple[str, Any]]:
    alone, beside = r["online_p95_ms_alone"], r["online_p95_ms_with_batch"]
    peer = r["peer_without_rule"]
    return [
        ("online p95 ms, alone", alone),
        ("online p95 ms, with batch (rule on)", beside),
        ("  ratio (target <= 1.2)", round(beside / alone, 2)),
        ("  batch lines/s meanwhile", r["batch_lines_per_s_during_online"]),
        ("online p95 ms, with batch (rule off, peer)", peer["online_p95_ms_with_batch"]),
        ("  ratio", round(peer["online_p95_ms_with_batch"] / peer["online_p95_ms_alone"], 2)),
        ("  batch lines/s meanwhile", peer["batch_lines_per_s_during_online"]),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", choices=("table", "json"), default="table")
    ap.add_argument("--write", help="also write the JSON result to this file")
    ap.add_argument("--quick", action="store_true", help="1,000 lines, 8 s windows")
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument(
        "--phases",
        nargs="+",
        choices=("throughput", "faults", "priority"),
        default=["throughput", "faults", "priority"],
    )
    ap.add_argument("--priority-lines", type=int, default=5_000, help="the batch beside online")
    ap.add_argument("--slots", type=int, default=16, help="upstream slots (priority phase)")
    ap.add_argument("--fast-slots", type=int, default=256, help="upstream slots (throughput)")
    ap.add_argument(
        "--service-ms", type=float, default=200.0, help="time an answer holds a slot (priority)"
    )
    ap.add_argument(
        "--fast-service-ms", type=float, default=20.0, help="time an answer holds a slot"
    )
    ap.add_argument("--online-rps", type=float, default=20.0)
    ap.add_argument(
        "--slo-factor",
        type=float,
        default=1.1,
        help="the rule yields once online p95 passes this times its p95 alone",
    )
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument("--ramp-s", type=float, default=15.0, help="batch running before measuring")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.window_s, args.priority_lines = 1_000, 8.0, 5_000
    quiet = args.output == "json"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if quiet else sys.stdout, flush=True)

    result = run(args, log)
    if args.write:
        Path(args.write).write_text(json.dumps(result, indent=2))
    print(json.dumps(result) if quiet else "\n" + table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
