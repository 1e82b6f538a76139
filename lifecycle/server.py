"""The rollout controller as a process: the reconcile loop and its small HTTP API.

    GET  /healthz                      liveness
    GET  /metrics                      tandem_rollout_* (Prometheus)
    GET  /rollouts                     every rollout's state (latest per use case)
    GET  /rollouts/<key>               one rollout's state: phase, step, weight, events, analyses
    POST /rollouts                     start one: {"plan": RolloutPlan}  (tandem deploy | prompts rollout)
    POST /rollouts/<key>/<action>      pause | resume | abort | rollback, {"reason": ...}

A rollout's key is its use case's name, or `prompt:<namespace>/<name>` for a prompt version's
(the slash is part of the key, so a key is every path segment after `rollouts`).

Standard library HTTP (a handful of operator calls a minute) and one loop thread that ticks every
rollout every `tick_s` while this process holds the lease (a second controller waits). Run by
`tandem rollout controller` (the RolloutController component's Deployment runs exactly that).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lifecycle.analysis import Prometheus
from lifecycle.controller import CommandError, RolloutController, Traffic
from lifecycle.plan import RolloutPlan
from lifecycle.registry import Registry
from lifecycle.serve_target import KubeRayServe, LocalServe
from lifecycle.state import Conflict, Store
from vocabulary.net import send_json

log = logging.getLogger("tandem.rollout")
DEFAULT_PORT = 8095


def target_factory(spec: str):
    """`local:<dashboard URL>` (a local Ray) or `kuberay:<namespace>` (the RayService named after
    the use case, in the cluster)."""
    kind, _, where = spec.partition(":")
    if kind == "local" and where.startswith("http"):
        return lambda plan: LocalServe(where)
    if kind == "kuberay" and where:
        return lambda plan: KubeRayServe(where, plan.use_case)
    raise ValueError(
        f"--serve {spec!r}: use local:http://HOST:PORT (a Ray dashboard) or kuberay:NAMESPACE"
    )


class ControllerProcess:
    def __init__(
        self,
        controller: RolloutController,
        tick_s: float = 2.0,
        lease_s: float = 15.0,
        owner: str | None = None,
    ) -> None:
        self.controller = controller
        self.tick_s = tick_s
        self.lease_s = lease_s
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}"
        self.stopping = threading.Event()
        self.leader = False

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.leader = self.controller.store.lease(self.owner, self.lease_s)
                if self.leader:
                    self.controller.tick_all()
            except Exception:  # Redis away: try again next tick, never die
                log.exception("controller tick failed")
            self.stopping.wait(self.tick_s)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # access logs stay out of the way
                pass

            def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
                send_json(self, status, body, ctype)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b"{}"
                data = json.loads(raw or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("the body must be a JSON object")
                return data

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                c = proc.controller
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if parts == ["healthz"]:
                    return self._send(200, {"status": "ok", "leader": proc.leader})
                if parts == ["metrics"]:
                    return self._send(200, generate_latest(c.metrics.registry), CONTENT_TYPE_LATEST)
                if parts == ["rollouts"]:
                    return self._send(200, {"rollouts": [s.to_dict() for s in c.store.all()]})
                if len(parts) >= 2 and parts[0] == "rollouts":
                    key = "/".join(parts[1:])
                    state = c.store.get(key)
                    if state is None:
                        return self._send(404, {"error": f"no rollout for {key!r}"})
                    return self._send(200, state.to_dict())
                return self._send(404, {"error": f"unknown path {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                c = proc.controller
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                try:
                    body = self._body()
                    if parts == ["rollouts"]:
                        state = c.start(RolloutPlan.from_dict(body["plan"]))
                        return self._send(201, state.to_dict())
                    if len(parts) >= 3 and parts[0] == "rollouts":
                        key = "/".join(parts[1:-1])
                        state = c.command(key, parts[-1], str(body.get("reason", "")))
                        return self._send(200, state.to_dict())
                except (Conflict, CommandError) as exc:
                    return self._send(409, {"error": str(exc)})
                except (KeyError, TypeError, ValueError) as exc:
                    return self._send(400, {"error": f"bad request: {exc}"})
                return self._send(404, {"error": f"unknown path {self.path}"})

        return Handler

    def serve(self, host: str, port: int) -> None:
        server = ThreadingHTTPServer((host, port), self.handler())
        loop = threading.Thread(target=self.loop, name="rollout-loop", daemon=True)
        loop.start()

        def stop(*_: Any) -> None:
            self.stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("rollout controller on http://%s:%d (owner %s)", host, port, self.owner)
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            self.stopping.set()
            loop.join(timeout=10)
            self.controller.store.release(self.owner)
            server.server_close()


def build(
    redis_url: str,
    prometheus_url: str,
    serve: str,
    registry_url: str | None = None,
) -> RolloutController:
    return RolloutController(
        store=Store(redis_url),
        traffic=Traffic(redis_url),
        prometheus=Prometheus(prometheus_url),
        registry=Registry(registry_url) if registry_url else None,
        target=target_factory(serve),
    )


def run(
    *,
    redis_url: str,
    prometheus_url: str,
    serve: str,
    registry_url: str | None,
    host: str,
    port: int,
    tick_s: float,
    lease_s: float,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    controller = build(redis_url, prometheus_url, serve, registry_url)
    started = time.time()
    ControllerProcess(controller, tick_s, lease_s).serve(host, port)
    log.info("rollout controller stopped after %.0f s", time.time() - started)
