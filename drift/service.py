"""The drift service: polls the gateways' signal logs and the rollout controller, tests, acts.

    GET  /healthz                      liveness
    GET  /metrics                      tandem_drift_* (Prometheus)
    GET  /status[?use_case=NAME]       references, scores, episodes, the actions taken
    POST /references/<use_case>        re-pin the reference: {"version", "start", "end"} (all
                                       optional: the serving version's samples kept so far)

Every `poll_s` it reads each gateway replica's `GET /drift/signals?after=SEQ` (a gateway URL whose
host name resolves to several addresses, a headless Service, is polled at every address; a
replica that restarted is read from its start), reads the controller's `GET /rollouts`, pins
references (automatically when a use case has none and enough samples, and when the controller
has promoted a version), runs the tests and acts on each new detection:

- the version is a canary of an active rollout, or was promoted less than `recent_s` ago: the
  new version is the cause, so the controller is asked to roll it back
  (`POST /rollouts/<use case>/rollback`; a promoted version cannot be rolled back by the
  controller, so the alert asks for the previous version to be deployed);
- otherwise (a long-standing champion): rolling back would not fix a changed world, so the alert
  with its evidence goes to the use case's `receivers.webhook` and a retraining ticket to
  `receivers.ticket_webhook`.

The controller is reached over HTTP, not imported: drift sits on a lower floor than lifecycle.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from drift.monitor import Detection, Monitor, UseCase
from vocabulary.net import send_json

log = logging.getLogger("tandem.drift")
DEFAULT_PORT = 8096
ACTIONS_KEPT = 200


class HttpError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raise HttpError(exc.code, exc.read().decode(errors="replace")[:500]) from None


def replica_urls(url: str) -> list[str]:
    """Every address a gateway URL's host name resolves to (a headless Service: each pod)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return [url]
    addrs = sorted({i[4][0] for i in infos})
    if len(addrs) <= 1:
        return [url]
    out = []
    for a in addrs:
        netloc = f"[{a}]" if ":" in str(a) else str(a)
        out.append(urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc}:{port}")))
    return out


class DriftService:
    def __init__(
        self,
        monitor: Monitor,
        gateways: Iterable[str],
        controller: str | None = None,
        *,
        post: Callable[[str, Any], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.monitor = monitor
        self.gateways = [g.rstrip("/") for g in gateways]
        self.controller = controller.rstrip("/") if controller else None
        self.post = post or (lambda url, body: http_json("POST", url, body))
        self.clock = clock
        self.cursors: dict[str, tuple[str, int]] = {}  # replica URL -> (replica id, last seq)
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.promotions_seen: dict[str, str] = {}  # use case -> rollout id whose promotion pinned
        self.pending_promotion: dict[str, tuple[str, float]] = {}  # use case -> (version, since)
        self.actions: deque[dict[str, Any]] = deque(maxlen=ACTIONS_KEPT)
        self.lock = threading.Lock()
        self.m_actions = Counter(
            "tandem_drift_actions",
            "What the drift service did about a detection: rollback, rollback_failed, alert, "
            "ticket",
            ["team", "use_case", "model_version", "action"],
            registry=monitor.registry,
        )

    # -- one pass ---------------------------------------------------------------------------
    def tick(self) -> list[Detection]:
        self.poll_gateways()
        self.poll_controller()
        with self.lock:
            self.pin_references()
            found = self.monitor.evaluate()
        for d in found:
            try:
                self.act(d)
            except Exception:  # one failed action must not stop the loop
                log.exception("acting on drift of %s %s failed", d.use_case, d.signal)
        return found

    def poll_gateways(self) -> None:
        for gw in self.gateways:
            for url in replica_urls(gw):
                try:
                    self._poll(url)
                except (OSError, HttpError, ValueError) as exc:
                    log.warning("gateway %s: %s", url, exc)

    def _poll(self, url: str) -> None:
        replica, after = self.cursors.get(url, ("", 0))
        for _ in range(20):  # at most 20 pages a tick
            page = http_json("GET", f"{url}/drift/signals?after={after}&limit=5000")
            if page["replica"] != replica:  # a new process: its log starts again at 1
                replica, after = page["replica"], 0
                if page["events"] and page["events"][0]["seq"] != 1:
                    continue  # read it again from the start of what it has
            with self.lock:
                for e in page["events"]:
                    self.monitor.ingest(e)
            after = int(page["last"])
            self.cursors[url] = (replica, after)
            if after >= int(page["newest"]):
                return

    def poll_controller(self) -> None:
        if self.controller is None:
            return
        try:
            data = http_json("GET", f"{self.controller}/rollouts")
        except (OSError, HttpError, ValueError) as exc:
            log.warning("rollout controller %s: %s", self.controller, exc)
            return
        self.rollouts = {r["use_case"]: r for r in data.get("rollouts", [])}
        for name, r in self.rollouts.items():
            if name not in self.monitor.use_cases or r.get("phase") != "promoted":
                continue
            if self.promotions_seen.get(name) == r.get("id"):
                continue
            self.promotions_seen[name] = str(r.get("id"))
            version = str(r["plan"]["canary_version"])
            ref = self.monitor.references.get(name)
            if ref is None or ref.version != version:
                self.pending_promotion[name] = (version, float(r.get("started_at") or 0.0))

    def pin_references(self) -> None:
        for name in self.monitor.use_cases:
            pending = self.pending_promotion.get(name)
            if pending is not None:
                promoted, since = pending
                if self.monitor.pin(name, promoted, start=since, source="promotion"):
                    del self.pending_promotion[name]
                    log.info("%s: reference pinned from promoted version %s", name, promoted)
                continue
            if name not in self.monitor.references:
                version = self.stable_version(name) or self.monitor.candidate_version(name)
                if version is not None and self.monitor.pin(name, version, source="auto"):
                    log.info("%s: reference pinned from version %s", name, version)

    def stable_version(self, use_case: str) -> str | None:
        r = self.rollouts.get(use_case)
        if r is None:
            return None
        plan = r.get("plan", {})
        return str(plan.get("canary_version") if r.get("phase") == "promoted" else plan.get(
            "stable_version"))  # fmt: skip

    # -- acting -----------------------------------------------------------------------------
    def role(self, d: Detection) -> str:
        """canary | recent | champion: who caused the drift decides what to do."""
        r = self.rollouts.get(d.use_case)
        m = self.monitor.use_cases[d.use_case].monitoring
        if r is not None:
            plan = r.get("plan", {})
            canary = str(plan.get("canary_version"))
            if r.get("phase") in ("deploying", "progressing", "experimenting") and (
                d.model_version == canary or d.arm == "canary"
            ):
                return "canary"
            finished = float(r.get("marks", {}).get("finished_at") or 0.0)
            if (
                r.get("phase") == "promoted"
                and d.model_version == canary
                and self.clock() - finished < m.recent_s
            ):
                return "recent"
        return "champion"

    def nearest_questions(self, d: Detection) -> list[list[dict[str, Any]]]:
        """The cached questions nearest to the drifting examples' embeddings, from the first
        gateway replica that has any (the semantic cache is per replica, shared via Redis)."""
        if not d.vectors:
            return []
        body = {"use_case": d.use_case, "vectors": d.vectors, "k": 3}
        for gw in self.gateways:
            for url in replica_urls(gw):
                try:
                    found = http_json("POST", f"{url}/drift/nearest", body)["nearest"]
                except (OSError, HttpError, ValueError, KeyError, TypeError):
                    continue
                if any(found):
                    return found
        return []

    def act(self, d: Detection) -> dict[str, Any]:
        role = self.role(d)
        if d.signal == "embedding":
            near = self.nearest_questions(d)
            if near:
                d.evidence["nearest_cached_questions"] = near
        uc = self.monitor.use_cases[d.use_case]
        receivers = uc.monitoring.receivers
        record: dict[str, Any] = {"t": self.clock(), "role": role, **d.to_dict(), "actions": []}
        why = (
            f"drift on {d.signal} (score {d.score:.2f} of its calibrated line) since "
            f"{time.strftime('%H:%M:%S', time.gmtime(d.since))} UTC"
        )
        if role in ("canary", "recent") and self.controller is not None:
            try:
                self.post(f"{self.controller}/rollouts/{d.use_case}/rollback", {"reason": why})
                record["actions"].append("rollback")
            except (OSError, HttpError) as exc:
                record["actions"].append("rollback_failed")
                record["rollback_error"] = str(exc)[:300]
                if role == "recent":
                    stable = self.rollouts.get(d.use_case, {}).get("plan", {}).get(
                        "stable_version")  # fmt: skip
                    record["advice"] = (
                        f"version {d.model_version} was promoted recently: deploy version "
                        f"{stable} again (tandem deploy) to roll it back"
                    )
        if receivers.webhook:
            try:
                self.post(receivers.webhook, {"alert": "TandemDrift", "reason": why, **record})
                record["actions"].append("alert")
            except (OSError, HttpError) as exc:
                log.warning("%s: alert webhook failed: %s", d.use_case, exc)
        if role == "champion" and receivers.ticket_webhook:
            ticket = {
                "kind": "retraining",
                "title": f"{d.use_case}: the world moved ({d.signal}); retrain or re-pin",
                "use_case": d.use_case,
                "team": d.team,
                "model_version": d.model_version,
                "evidence": d.evidence,
                "since": d.since,
            }
            try:
                self.post(receivers.ticket_webhook, ticket)
                record["actions"].append("ticket")
            except (OSError, HttpError) as exc:
                log.warning("%s: ticket webhook failed: %s", d.use_case, exc)
        for a in record["actions"]:
            self.m_actions.labels(d.team, d.use_case, d.model_version, a).inc()
        log.warning("%s version %s: %s -> %s", d.use_case, d.model_version, why, record["actions"])
        self.actions.append(record)
        return record

    def status(self, use_case: str | None = None) -> dict[str, Any]:
        with self.lock:
            out = self.monitor.status(use_case)
        out["actions"] = [a for a in self.actions if use_case in (None, a["use_case"])]
        out["generated_at"] = self.clock()
        return out

    # -- the process ------------------------------------------------------------------------
    def handler(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
                send_json(self, status, body, ctype)

            def do_GET(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                parts = [p for p in path.split("/") if p]
                if parts == ["healthz"]:
                    return self._send(200, {"status": "ok"})
                if parts == ["metrics"]:
                    with svc.lock:
                        data = generate_latest(svc.monitor.registry)
                    return self._send(200, data, CONTENT_TYPE_LATEST)
                if parts == ["status"]:
                    q = urllib.parse.parse_qs(query)
                    uc = q.get("use_case", [None])[0]
                    if uc is not None and uc not in svc.monitor.use_cases:
                        known = sorted(svc.monitor.use_cases)
                        return self._send(
                            404, {"error": f"use case {uc!r} is not monitored; known: {known}"}
                        )
                    return self._send(200, svc.status(uc))
                return self._send(404, {"error": f"unknown path {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) != 2 or parts[0] != "references":
                    return self._send(404, {"error": f"unknown path {self.path}"})
                if parts[1] not in svc.monitor.use_cases:
                    return self._send(404, {"error": f"use case {parts[1]!r} is not monitored"})
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(n) or b"{}") if n else {}
                    with svc.lock:
                        ref = svc.monitor.pin(
                            parts[1],
                            body.get("version"),
                            start=body.get("start"),
                            end=body.get("end"),
                            source="operator",
                        )
                except (ValueError, TypeError, AttributeError) as exc:
                    return self._send(400, {"error": f"bad request: {exc}"})
                if ref is None:
                    return self._send(
                        409, {"error": "too few samples of that version in that time to pin"}
                    )
                return self._send(200, ref.to_dict())

        return Handler

    def serve(self, host: str, port: int, poll_s: float) -> None:
        server = ThreadingHTTPServer((host, port), self.handler())
        stopping = threading.Event()

        def loop() -> None:
            while not stopping.is_set():
                try:
                    self.tick()
                except Exception:
                    log.exception("drift tick failed")
                stopping.wait(poll_s)

        t = threading.Thread(target=loop, name="drift-loop", daemon=True)
        t.start()
        import signal

        def stop(*_: Any) -> None:
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("drift service on http://%s:%d", host, port)
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            stopping.set()
            t.join(timeout=10)
            server.server_close()


def load_use_cases(path: str) -> list[UseCase]:
    """The drift service's config file: {use_cases: [{name, team, monitoring: {...}}]} (what the
    DriftMonitor component writes into its ConfigMap from the use cases' `monitoring:`)."""
    from pydantic import ValidationError

    from vocabulary.errors import ConfigError, format_validation_error
    from vocabulary.monitoring import Monitoring
    from vocabulary.yamlfile import load_yaml

    data = load_yaml(path)
    items = data.get("use_cases") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(["use_cases: a list of {name, team, monitoring}"], str(path))
    out: list[UseCase] = []
    errors: list[str] = []
    for i, item in enumerate(items):
        where = f"use_cases[{i}]"
        if not isinstance(item, dict) or not all(k in item for k in ("name", "team", "monitoring")):
            errors.append(f"{where}: needs name, team and monitoring")
            continue
        try:
            out.append(
                UseCase(str(item["name"]), str(item["team"]), Monitoring(**item["monitoring"]))
            )
        except ValidationError as exc:
            errors += format_validation_error(exc, Monitoring, f"{where}.monitoring")
        except TypeError:
            errors.append(f"{where}.monitoring: a mapping of the monitoring: keys")
    if errors:
        raise ConfigError(errors, str(path))
    return out
