"""The model registry: MLflow's REST API (registered models, versions, aliases), stdlib only.

Tandem does not need the `mlflow` package (pandas, pyarrow, scikit-learn...) to register a
version or move an alias: these are a handful of JSON calls on the tracking server
(`/api/2.0/mlflow/...`). A local model directory is registered the way `mlflow.register_model`
does it: a run in the `tandem-deploy` experiment, the files uploaded through the server's
artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/...`, so the caller needs no cloud
credentials: the server writes to its bucket), and a version whose source is that run's
artifact path.

Serving needs a location it can read (an `s3://` prefix on the cluster, a path locally), not the
proxy's `mlflow-artifacts:/` URI: `serving_source` maps one to the other with the server's
`--artifacts-destination`, which the ModelRegistry component sets and the deployer is told.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.http import HttpError, call

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
DEPLOY_EXPERIMENT = "tandem-deploy"
PROXY_SCHEME = "mlflow-artifacts:"


class RegistryError(RuntimeError):
    """The registry refused or could not be reached; the message says which call and why."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str
    run_id: str
    status: str
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, mv: dict[str, Any]) -> ModelVersion:
        return cls(
            mv["name"],
            str(mv["version"]),
            mv.get("source", ""),
            mv.get("run_id", "") or "",
            mv.get("status", ""),
            tuple(mv.get("aliases") or ()),
        )


class Registry:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"registry URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        try:
            return call(method, self.url + path, body, timeout=self.timeout, **kw)
        except HttpError as exc:
            code = exc.body.get("error_code") if isinstance(exc.body, dict) else None
            err = RegistryError(
                f"model registry at {self.url}: {exc}"
                if exc.status == 0
                else f"model registry {method} {path}: {code or exc.status}: "
                + (exc.body.get("message", "") if isinstance(exc.body, dict) else str(exc.body))
            )
            err.code = code  # type: ignore[attr-defined]
            raise err from None

    # -- registered models and versions ---------------------------------------------------------
    def ensure_model(self, name: str) -> None:
        try:
            self._call("POST", f"{API}/registered-models/create", {"name": name})
        except RegistryError as exc:
            if getattr(exc, "code", None) != "RESOURCE_ALREADY_EXISTS":
                raise

    def create_version(
        self, name: str, source: str, run_id: str = "", description: str = ""
    ) -> ModelVersion:
        self.ensure_model(name)
        body: dict[str, Any] = {"name": name, "source": source}
        if run_id:
            body["run_id"] = run_id
        if description:
            body["description"] = description
        mv = ModelVersion.from_api(
            self._call("POST", f"{API}/model-versions/create", body)["model_version"]
        )
        return self.wait_ready(name, mv.version) if mv.status != "READY" else mv

    def get_version(self, name: str, version: str) -> ModelVersion:
        data = self._call(
            "GET", f"{API}/model-versions/get", params={"name": name, "version": version}
        )
        return ModelVersion.from_api(data["model_version"])

    def wait_ready(self, name: str, version: str, timeout_s: float = 120.0) -> ModelVersion:
        deadline = time.monotonic() + timeout_s
        while True:
            mv = self.get_version(name, version)
            if mv.status == "READY":
                return mv
            if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise RegistryError(f"{name} version {version} is {mv.status}, not READY")
            time.sleep(0.5)

    # -- aliases --------------------------------------------------------------------------------
    def alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version `alias` names, or None when the alias is not set."""
        try:
            data = self._call(
                "GET", f"{API}/registered-models/alias", params={"name": name, "alias": alias}
            )
        except RegistryError as exc:
            if getattr(exc, "code", None) in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise
        return ModelVersion.from_api(data["model_version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            "POST",
            f"{API}/registered-models/alias",
            {"name": name, "alias": alias, "version": version},
        )

    # -- registering what a notebook produced ---------------------------------------------------
    def run_artifact_uri(self, run_id: str) -> str:
        data = self._call("GET", f"{API}/runs/get", params={"run_id": run_id})
        return data["run"]["info"]["artifact_uri"]

    def register_run(self, name: str, run_id: str, path: str = "model") -> ModelVersion:
        """A version from an MLflow run's artifacts (`runs:/<run_id>/<path>`)."""
        source = f"{self.run_artifact_uri(run_id).rstrip('/')}/{path.strip('/')}"
        return self.create_version(name, source, run_id=run_id, description=f"run {run_id}")

    def register_directory(self, name: str, directory: Path) -> ModelVersion:
        """A version from a local model directory: a run in the `tandem-deploy` experiment, the
        files uploaded through the server's artifact proxy, the version sourced from them."""
        directory = Path(directory)
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"{directory}: no files to register")
        exp = self._experiment(DEPLOY_EXPERIMENT)
        run = self._call(
            "POST",
            f"{API}/runs/create",
            {"experiment_id": exp, "run_name": f"{name}-{directory.name}", "start_time": _ms()},
        )["run"]["info"]
        run_id, artifact_uri = run["run_id"], run["artifact_uri"].rstrip("/")
        if not artifact_uri.startswith(PROXY_SCHEME):
            raise RegistryError(
                f"the registry's artifact store is {artifact_uri!r}, not its artifact proxy: start "
                "`mlflow server` with --serve-artifacts and --artifacts-destination"
            )
        base = artifact_uri[len(PROXY_SCHEME) :].lstrip("/")
        for f in files:
            rel = f.relative_to(directory).as_posix()
            path = urllib.parse.quote(f"{base}/model/{rel}")
            self._call(
                "PUT",
                f"{ARTIFACTS}/{path}",
                data=f.read_bytes(),
                content_type="application/octet-stream",
            )
        self._call(
            "POST",
            f"{API}/runs/update",
            {"run_id": run_id, "status": "FINISHED", "end_time": _ms()},
        )
        return self.create_version(
            name, f"{artifact_uri}/model", run_id=run_id, description=f"from {directory.name}"
        )

    def _experiment(self, name: str) -> str:
        try:
            data = self._call(
                "GET", f"{API}/experiments/get-by-name", params={"experiment_name": name}
            )
            return data["experiment"]["experiment_id"]
        except RegistryError as exc:
            if getattr(exc, "code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
        return self._call("POST", f"{API}/experiments/create", {"name": name})["experiment_id"]


def serving_source(source: str, artifacts_destination: str | None) -> str:
    """Where serving reads a version: a proxied `mlflow-artifacts:/x` becomes
    `<artifacts_destination>/x` (s3://bucket/prefix on the cluster); anything else as is."""
    if not source.startswith(PROXY_SCHEME):
        return source
    if not artifacts_destination:
        raise RegistryError(
            f"version source {source!r} lives behind the registry's artifact proxy; give the "
            "server's --artifacts-destination (--artifacts-destination, or the stack's "
            "tandem:registry) so serving can read it directly"
        )
    rel = source[len(PROXY_SCHEME) :].lstrip("/")
    return f"{artifacts_destination.rstrip('/')}/{rel}"


def _ms() -> int:
    return int(time.time() * 1000)
