"""A batch worker process: the gateway's stages and the worker loop on one event loop, with
/healthz and /metrics (the gateway's `tandem_gateway_*` series for the lines it ran, and the
`tandem_batch_*` series) on their own port. `tandem batch worker` runs it; SIGTERM stops reading
and lets what is in flight finish (Kubernetes' grace period, or KEDA scaling to zero).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.app import GatewayService
from gateway.config import RoutesConfig
from pipelines.worker import Worker


async def run_worker(
    cfg: RoutesConfig,
    config_path: str | Path | None,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    name: str | None = None,
) -> None:
    svc = GatewayService(cfg, config_path)
    await svc.start()
    worker = Worker(svc, name=name)
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": worker.name})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(svc.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        await runner.cleanup()
        await svc.close()
