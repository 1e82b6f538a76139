"""Where the controller applies a use case's Serve config: a local Ray, or a KubeRay RayService.

Both take the whole config (every application of the use case), as KubeRay's `serveConfigV2`
does: Serve compares it with what runs and changes only the applications that differ, so adding
the canary application does not touch the stable one.

- `LocalServe`: the Ray dashboard's REST API (`PUT /api/serve/applications/`), the call KubeRay
  itself makes; used by the local tier and the tests.
- `KubeRayServe`: a merge patch of the RayService's `spec.serveConfigV2` through the Kubernetes
  API, with the controller's service account (RBAC: get and patch rayservices in the serving
  namespace); KubeRay applies a Serve-only change in place, without a new Ray cluster.

`app_ready(name, app)` is True once the application runs *that* config (after an in-place update
the old version keeps reporting RUNNING until Serve starts replacing it).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import yaml

from lifecycle.http import HttpError, call

RUNNING = "RUNNING"
FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


class ServeTarget(Protocol):
    def apply(self, config: dict[str, Any]) -> None: ...

    def status(self, app: str) -> tuple[str, str]:
        """(status, message) of one application; ("", "") when it does not exist."""
        ...

    def app_ready(self, name: str, app: dict[str, Any]) -> bool: ...


def _app_spec(app: dict[str, Any]) -> dict[str, Any]:
    return {k: app.get(k) for k in ("import_path", "args", "route_prefix")}


class LocalServe:
    def __init__(self, dashboard: str) -> None:
        self.dashboard = dashboard.rstrip("/")

    def _get(self) -> dict[str, Any]:
        return call("GET", f"{self.dashboard}/api/serve/applications/", timeout=15) or {}

    def apply(self, config: dict[str, Any]) -> None:
        running = self._get()
        # a running Serve keeps its HTTP options; the config's own (0.0.0.0:8000 for the
        # cluster) would be refused
        opts = running.get("http_options") or {}
        config = {
            **config,
            "http_options": {
                "host": opts.get("host", "127.0.0.1"),
                "port": opts.get("port", config.get("http_options", {}).get("port", 8000)),
            },
        }
        call("PUT", f"{self.dashboard}/api/serve/applications/", config, timeout=60)

    def status(self, app: str) -> tuple[str, str]:
        a = (self._get().get("applications") or {}).get(app)
        if not a:
            return "", ""
        return a.get("status", ""), a.get("message", "")

    def app_ready(self, name: str, app: dict[str, Any]) -> bool:
        a = (self._get().get("applications") or {}).get(name)
        if not a or a.get("status") != RUNNING:
            return False
        deployed = a.get("deployed_app_config") or {}
        return _normal(_app_spec(deployed)) == _normal(_app_spec(app))


def _normal(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeRayServe:
    """The RayService named after the use case, through the in-cluster Kubernetes API."""

    def __init__(
        self,
        namespace: str,
        name: str,
        api: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.api = (api or f"https://{host}:{port}").rstrip("/")
        self.path = f"/apis/ray.io/v1/namespaces/{namespace}/rayservices/{name}"
        self._token = token
        self._ca = ca_file if ca_file is not None else str(SA_DIR / "ca.crt")
        self._generation = 0

    def _headers(self) -> dict[str, str]:
        token = self._token or (SA_DIR / "token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def _open(self, method: str, body: bytes | None = None, ctype: str = "") -> dict[str, Any]:
        req = urllib.request.Request(self.api + self.path, data=body, method=method)
        for k, v in self._headers().items():
            req.add_header(k, v)
        if ctype:
            req.add_header("Content-Type", ctype)
        ctx = None
        if self.api.startswith("https") and os.path.exists(self._ca):
            ctx = ssl.create_default_context(cafile=self._ca)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise HttpError(
                f"{method} {self.path}: HTTP {exc.code}: {exc.read()[:300]!r}", exc.code
            ) from None

    def patch_body(self, config: dict[str, Any]) -> bytes:
        return json.dumps(
            {"spec": {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)}}
        ).encode()

    def apply(self, config: dict[str, Any]) -> None:
        done = self._open("PATCH", self.patch_body(config), "application/merge-patch+json")
        self._generation = int((done.get("metadata") or {}).get("generation") or 0)

    def _status(self) -> tuple[dict[str, Any], bool]:
        rs = self._open("GET")
        status = rs.get("status") or {}
        observed = int(status.get("observedGeneration") or 0)
        generation = int((rs.get("metadata") or {}).get("generation") or 0)
        apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        return apps, observed >= max(generation, self._generation)

    def status(self, app: str) -> tuple[str, str]:
        apps, _ = self._status()
        a = apps.get(app) or {}
        return a.get("status", ""), a.get("message", "")

    def app_ready(self, name: str, app: dict[str, Any]) -> bool:
        apps, current = self._status()
        return current and (apps.get(name) or {}).get("status") == RUNNING
