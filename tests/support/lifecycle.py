"""Real parts for the model-lifecycle tier and its benchmark: Postgres, an MLflow tracking server,
a scraping Prometheus, model versions that behave well or badly, and a steady client.

- `postgres()`: Debian's PostgreSQL in a temporary data directory on a free loopback port. The
  server refuses to run as root, so as root (CI) every step runs as the `postgres` user.
- `mlflow_server(dsn)`: `mlflow server` from `.venv-mlflow` (`make mlflow-env`) on that
  database, with the artifact proxy writing to a temporary directory.
- `prometheus(targets)`: a Prometheus scraping the given loopback targets every second.
- `model_variant(dst, kind)`: a copy of all-MiniLM-L6-v2 that is `good` (the same weights),
  `errors` (exported with a 12-row position table: every input longer than 12 tokens fails, the
  class of bug a wrong export produces) or `slow` (its six layers repeated three times: 3x the
  compute of the good version).
- `Traffic`: a client thread sending steady embedding requests through the gateway as 40 users,
  recording each answer's status and the arm and version that served it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vocabulary.net import free_port

REPO = Path(__file__).resolve().parents[2]
MLFLOW_VENV = REPO / ".venv-mlflow"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _fail(message: str) -> None:
    if os.environ.get("PYTEST_CURRENT_TEST"):
        pytest.fail(message, pytrace=False)
    raise RuntimeError(message)


def _wait_http(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            _fail(f"{url}: the server exited with {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    _fail(f"{url} not up after {timeout_s:g} s")


# --- PostgreSQL ----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    """Yields a DSN (postgresql+psycopg2://tandem@127.0.0.1:PORT/mlflow: SQLAlchemy 2.1 would pick
    psycopg 3 for a bare postgresql://)."""
    bindir = PG_BIN if PG_BIN.is_dir() else None
    initdb = str(bindir / "initdb") if bindir else shutil.which("initdb")
    pg_ctl = str(bindir / "pg_ctl") if bindir else shutil.which("pg_ctl")
    if not initdb or not pg_ctl or not Path(initdb).exists():
        _fail("PostgreSQL is required for the lifecycle tier: apt-get install -y postgresql")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    # its own folder under the system temp dir: pytest's are private to this user (0700), and
    # the postgres user must be able to reach its data directory
    base = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
    if as_root:
        shutil.chown(base, "postgres")
    data, log, port = base / "data", base / "postgres.log", free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            _fail(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")

    run(initdb, "-D", str(data), "-U", "tandem", "--auth=trust", "-E", "UTF8")
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "start")
    try:
        run(
            str(Path(pg_ctl).parent / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "tandem",
            "mlflow",
        )
        yield f"postgresql+psycopg2://tandem@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
        )


# --- MLflow --------------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    url: str
    artifacts: Path  # the server's --artifacts-destination
    proc: subprocess.Popen


@contextlib.contextmanager
def mlflow_server(dsn: str, tmp: Path) -> Iterator[MlflowServer]:
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if not exe.exists():
        _fail(f"{exe} missing: build the registry server's environment with `make mlflow-env`")
    port = free_port()
    artifacts = Path(tmp) / "mlflow-artifacts"
    log = Path(tmp) / "mlflow.log"
    prom_dir = Path(tmp) / "mlflow-prometheus"
    prom_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(exe), "server", "--host", "127.0.0.1", "--port", str(port),
                "--backend-store-uri", dsn, "--artifacts-destination", str(artifacts),
                "--serve-artifacts", "--workers", "1", "--expose-prometheus", str(prom_dir),
            ],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", 120, proc, log)
        yield MlflowServer(f"http://127.0.0.1:{port}", artifacts, proc)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)  # the group this module started (mlflow forks its workers)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)


# --- Prometheus ----------------------------------------------------------------------------------


@contextlib.contextmanager
def prometheus(
    targets: dict[str, str], tmp: Path, scrape_s: float = 1.0, rules: str | None = None
) -> Iterator[str]:
    """A Prometheus scraping {job: host:port} (path /metrics) every `scrape_s`, evaluating the
    rule file text `rules` when given."""
    exe = shutil.which("prometheus")
    if exe is None:
        _fail("prometheus is required: apt-get install -y prometheus")
    port = free_port()
    base = Path(tmp) / f"prom-{port}"
    base.mkdir(parents=True)
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: ['{t}']}}]\n"
        for job, t in targets.items()
    )
    rule_files = ""
    if rules is not None:
        (base / "rules.yml").write_text(rules)
        rule_files = f"rule_files: ['{base / 'rules.yml'}']\n"
    (base / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {scrape_s:g}s\n  evaluation_interval: {scrape_s:g}s\n"
        f"{rule_files}scrape_configs:\n{jobs}"
    )
    log = base / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                exe, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
            ],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/-/ready", 60, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


# --- model versions ------------------------------------------------------------------------------

MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")


def model_variant(dst: Path, kind: str) -> Path:
    """A model directory of the given kind (good | errors | slow), built from the packaged MiniLM."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from embedding.minilm import default_model_path

    src = default_model_path()
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    if kind == "good":
        shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    else:
        weights = load_file(str(src / "model.safetensors"))
        if kind == "errors":
            rows = 12
            key = "embeddings.position_embeddings.weight"
            weights[key] = np.ascontiguousarray(weights[key][:rows])
            config["max_position_embeddings"] = rows
        elif kind == "slow":
            layers = config["num_hidden_layers"]
            prefix = "encoder.layer."
            for copy in (1, 2):
                for name in [k for k in weights if k.startswith(prefix)]:
                    i, rest = name[len(prefix) :].split(".", 1)
                    weights[f"{prefix}{int(i) + copy * layers}.{rest}"] = weights[name]
            config["num_hidden_layers"] = layers * 3
        else:
            raise ValueError(f"unknown model kind {kind!r}")
        save_file(weights, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(json.dumps(config))
    return dst


# --- steady traffic ------------------------------------------------------------------------------

SHORT = ["reset my password", "where is my order", "cancel the plan", "refund please", "hello"]
LONG = [
    "I was charged twice for the same order last month and the second payment has still not been "
    "returned to my card although support promised it would be within five days",
    "Could you explain how the annual subscription renews, whether I am notified before the renewal "
    "and how I can switch to the monthly plan without losing my saved settings",
]


@dataclass
class Answer:
    t: float
    user: str
    status: int
    arm: str  # X-Tandem-Rollout ("" when the gateway itself failed the request)
    version: str
    long: bool
    seconds: float


@dataclass
class Traffic:
    """Steady embedding requests through the gateway until stopped (bounded by `max_s`)."""

    url: str
    model: str
    rps: float = 15.0
    long_share: float = 0.3
    users: int = 40
    max_s: float = 900.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, workers: int = 8) -> Traffic:
        for i in range(workers):
            t = threading.Thread(target=self._run, args=(i, workers), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, worker: int, workers: int) -> None:
        rng = random.Random(worker)
        period = workers / self.rps
        end = time.monotonic() + self.max_s
        nxt = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            long = rng.random() < self.long_share
            user = f"user-{rng.randrange(self.users)}"
            text = rng.choice(LONG if long else SHORT)
            body = json.dumps({"model": self.model, "input": text, "user": user}).encode()
            req = urllib.request.Request(
                self.url + "/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
            )
            t0 = time.monotonic()
            status, arm, version = 0, "", ""
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    status = r.status
                    arm = r.headers.get("X-Tandem-Rollout", "")
                    version = r.headers.get("X-Tandem-Model-Version", "")
            except urllib.error.HTTPError as exc:
                status = exc.code
                arm = exc.headers.get("X-Tandem-Rollout", "")
                version = exc.headers.get("X-Tandem-Model-Version", "")
            except (urllib.error.URLError, OSError):
                status = -1
            self.answers.append(
                Answer(time.time(), user, status, arm, version, long, time.monotonic() - t0)
            )
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.t <= end]


# --- the local tier's use case -------------------------------------------------------------------

USE_CASE = "embed-lifecycle"
REGISTERED_MODEL = "embed-minilm"
ALIAS = "embed"
REVIEW = {
    "date": "2026-12-01",
    "durable_advantage": "Embeddings tuned on our own support corpus",
    "consumers": ["search", "support-chatbot"],
    "kpi": {
        "name": "search click-through",
        "baseline": "41%",
        "target": "60%",
        "target_date": "2027-02-01",
    },
    "cto_assessment": "https://wiki.example.com/ai/embed/cto",
    "data_audit": {"completed": True, "date": "2026-11-01"},
    "maintenance": {
        "owner": "ml@example.com",
        "plan": "https://wiki.example.com/ai/embed/plan",
        "horizon_months": 18,
    },
}


def use_case_doc(rollout: dict, monitoring: dict | None = None) -> dict:
    """The local tier's use case: the packaged MiniLM as a batch app on CPU, from the registry."""
    doc = {
        "name": USE_CASE,
        "team": "search",
        "pool": "cpu",
        "deployments": [
            {
                "name": "embed",
                "model": "minilm",
                "registry": {"name": REGISTERED_MODEL, "alias": "champion"},
                "kind": "batch",
                "gpu": "cpu",
                "cpus_per_replica": 0.5,
                "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.005},
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            }
        ],
        "gateway": {
            "alias": ALIAS,
            "endpoints": ["embeddings"],
            "deadline_s": 20,
            "retries": 2,
            "price": {"input_per_mtok": 0.02, "output_per_mtok": 0.0},
            "timeouts": {"connect_s": 2, "first_token_s": 15, "total_s": 20},
        },
        "rollout": rollout,
        "review": REVIEW,
    }
    if monitoring is not None:
        doc["monitoring"] = monitoring
    return doc


def canary_rollout(interval_s: float = 4, steps: tuple = (20, 50, 80), **analysis: object) -> dict:
    return {
        "strategy": "canary",
        "steps": list(steps),
        "step_duration_s": interval_s,
        "interval_s": interval_s,
        "drain_s": 2,
        "deploy_timeout_s": 120,
        "analysis": {
            "error_rate": {"max": 0.05},
            "min_requests": 8,
            **analysis,
        },
    }


# --- the whole local tier ------------------------------------------------------------------------


@dataclass
class Tier:
    """One MLflow on Postgres, one Redis, one local Ray with the use case's stable app, the real
    gateway, a Prometheus scraping it and the controller, and the controller's process."""

    tmp: Path
    registry_url: str
    artifacts: Path
    redis_url: str
    prometheus_url: str
    dashboard: str
    gateway_url: str
    controller_port: int
    resolutions: Path
    controller: subprocess.Popen | None = None
    models: dict[str, Path] = field(default_factory=dict)
    monitoring: dict | None = None  # the use case's `monitoring:` (the drift tier)

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def start_controller(self, tick_s: float = 0.5) -> None:
        log = open(self.tmp / "controller.log", "ab")  # noqa: SIM115 - handed to the child
        self.controller = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "python"), "-m", "tandem.cli", "rollout", "controller",
                "--redis", self.redis_url, "--prometheus", self.prometheus_url,
                "--serve", f"local:{self.dashboard}", "--registry", self.registry_url,
                "--port", str(self.controller_port), "--tick", str(tick_s), "--lease", "3",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        _wait_http(
            self.controller_url + "/healthz", 60, self.controller, self.tmp / "controller.log"
        )

    def kill_controller(self) -> None:
        """SIGKILL: no clean shutdown, no lease released (a crash, not a stop)."""
        assert self.controller is not None
        os.killpg(self.controller.pid, 9)
        self.controller.wait(10)

    def model(self, kind: str) -> Path:
        if kind not in self.models:
            self.models[kind] = model_variant(self.tmp / "models" / kind, kind)
        return self.models[kind]

    def use_case_file(self, rollout: dict, name: str = "use-case.yaml") -> Path:
        import yaml

        path = self.tmp / name
        path.write_text(yaml.safe_dump(use_case_doc(rollout, self.monitoring), sort_keys=False))
        return path

    def deploy(self, use_case: Path, *args: str, timeout: float = 300) -> tuple[int, dict]:
        """`tandem deploy ... --output json` as a user runs it: (exit code, its JSON)."""
        done = subprocess.run(
            [
                str(REPO / ".venv" / "bin" / "python"), "-m", "tandem.cli", "deploy", str(use_case),
                "--resolutions", str(self.resolutions), "--registry", self.registry_url,
                "--artifacts-destination", str(self.artifacts),
                "--controller", self.controller_url, "--output", "json", *args,
            ],
            capture_output=True, text=True, cwd=REPO, timeout=timeout,
        )  # fmt: skip
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"deploy printed no JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}"
            ) from None

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.controller_url}/rollouts/{USE_CASE}", timeout=10) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def local_tier(
    tmp: Path,
    initial_rollout: dict,
    *,
    monitoring: dict | None = None,
    scrape: dict[str, str] | None = None,
    rules: str | None = None,
) -> Iterator[Tier]:
    """Everything up, the stable version (v1, a good model) registered, aliased and serving.
    `monitoring`: the use case's `monitoring:` section (the gateway samples drift signals);
    `scrape`: more Prometheus jobs {job: host:port}; `rules`: a rule file Prometheus evaluates."""
    import yaml

    from gateway.spec import RouteTarget, routes_from_use_cases
    from lifecycle.registry import Registry, serving_source
    from serving import builder, local
    from tests.support.redis_server import redis_server
    from vocabulary.registry import Resolutions, save_resolutions
    from vocabulary.usecase import load_use_case, resolve_registry

    tmp = Path(tmp)
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(postgres(tmp))
        mlflow = stack.enter_context(mlflow_server(dsn, tmp))
        redis_url = stack.enter_context(redis_server("the lifecycle tier"))
        registry = Registry(mlflow.url)
        v1 = registry.register_directory(
            REGISTERED_MODEL, model_variant(tmp / "models" / "v1", "good")
        )
        registry.set_alias(REGISTERED_MODEL, "champion", v1.version)
        resolutions_path = tmp / "resolutions.yaml"
        res = Resolutions()
        res.record(
            REGISTERED_MODEL,
            v1.version,
            serving_source(v1.source, str(mlflow.artifacts)),
            "setup",
            "champion",
        )
        save_resolutions(resolutions_path, "local", res)

        uc_path = tmp / "stable-use-case.yaml"
        uc_path.write_text(
            yaml.safe_dump(use_case_doc(initial_rollout, monitoring), sort_keys=False)
        )
        spec, _ = resolve_registry(load_use_case(uc_path), res, str(resolutions_path))
        serve_port = free_port()
        config = builder.serve_config(spec.deployments, host="127.0.0.1", port=serve_port)
        state_dir = tmp / "serve"
        served = local.start(config, state_dir, num_cpus=6, timeout_s=240)
        stack.callback(local.stop, state_dir)

        base = f"http://127.0.0.1:{serve_port}"
        target = RouteTarget(
            USE_CASE, spec.team, spec.gateway, f"{base}/embed/v1", "minilm",
            model_version=v1.version, canary_url=f"{base}/embed-canary/v1",
            monitoring=spec.monitoring,
        )  # fmt: skip
        routes = routes_from_use_cases([target]).model_dump(
            mode="json", exclude_unset=True, exclude_none=True
        )
        gw_port, ctl_port = free_port(), free_port()
        routes["server"] = {
            "host": "127.0.0.1",
            "port": gw_port,
            "split_poll_s": 0.5,
            "reload_interval_s": 0,
        }
        routes["redis"] = {"url": redis_url, "prefix": "tandem:gw"}
        (tmp / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False))
        gw_log = tmp / "gateway.log"
        with open(gw_log, "wb") as out:
            gw = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "python"), "-m", "tandem.cli", "gateway", "serve", "--config", str(tmp / "routes.yaml")],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        stack.callback(_stop, gw)
        _wait_http(f"http://127.0.0.1:{gw_port}/readyz", 60, gw, gw_log)
        prom = stack.enter_context(
            prometheus(
                {
                    "gateway": f"127.0.0.1:{gw_port}",
                    "controller": f"127.0.0.1:{ctl_port}",
                    **(scrape or {}),
                },
                tmp,
                rules=rules,
            )
        )
        tier = Tier(
            tmp, mlflow.url, mlflow.artifacts, redis_url, prom, served.dashboard,
            f"http://127.0.0.1:{gw_port}", ctl_port, resolutions_path,
        )  # fmt: skip
        tier.models["good"] = tmp / "models" / "v1"
        tier.monitoring = monitoring
        tier.start_controller()
        stack.callback(lambda: tier.controller and _stop(tier.controller))
        yield tier


def empty_dashboard_panels(
    prometheus_url: str, board: dict, skip: tuple[str, ...] = ()
) -> list[str]:
    """The panels of `board` whose query returns nothing from this Prometheus now (a typo in a
    metric or label name returns nothing rather than failing), Grafana's variables filled in."""
    from lifecycle.analysis import Prometheus
    from observability.dashboards import panel_queries

    prom = Prometheus(prometheus_url)
    empty = []
    for title, expr in panel_queries(board):
        if title in skip:
            continue
        for var, value in {"$__rate_interval": "1m", "$__range": "1h"}.items():
            expr = expr.replace(var, value)
        if not prom.vector(expr):
            empty.append(f"{title}: {expr}")
    return empty
