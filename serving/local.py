"""Local mode: run a generated Serve config on a local Ray, the way KubeRay runs it.

`start()` launches `python -m serving.local run CONFIG` as its own process group: it starts a
single-node Ray (token auth off, more logical CPUs than cores so ingress, router and model replicas
all schedule) and PUTs the config to the dashboard's `/api/serve/applications/`, the same call the
KubeRay operator makes with a RayService's `serveConfigV2`. `stop()` ends that process by its pid;
it shuts down only the Ray it started. The integration tests use these same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from vocabulary.net import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "serve-local.json"


def _request(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    return json.loads(text) if text.strip() else None


def deploy(dashboard: str, config: dict[str, Any]) -> None:
    """What KubeRay does with serveConfigV2."""
    _request("PUT", f"{dashboard}/api/serve/applications/", config, timeout=60)


def applications(dashboard: str) -> dict[str, Any]:
    return _request("GET", f"{dashboard}/api/serve/applications/")


def wait_running(dashboard: str, names: list[str], timeout_s: float, proc: Any = None) -> dict:
    """Poll Serve until every application is RUNNING; fail fast with Serve's own message."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"local Serve process exited with {proc.returncode}")
        try:
            last = applications(dashboard)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
            continue
        apps = last.get("applications") or {}
        statuses = {n: (apps.get(n) or {}).get("status") for n in names}
        failed = [n for n, s in statuses.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise RuntimeError(
                f"Serve applications failed: {json.dumps({n: apps[n].get('message') for n in failed})}"
            )
        if all(s == "RUNNING" for s in statuses.values()):
            return last
        time.sleep(1)
    raise TimeoutError(
        f"Serve applications not RUNNING after {timeout_s}s: {json.dumps(last)[:2000]}"
    )


@dataclass
class LocalServe:
    pid: int
    endpoint: str
    dashboard: str
    metrics: str  # Ray's Prometheus endpoint (Serve, and vLLM's series through Ray's agent)
    config_path: str
    log_path: str


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a local Ray: auth off (2.60 defaults to token auth), the repo importable."""
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def start(
    config: dict[str, Any],
    state_dir: Path,
    *,
    num_cpus: int = 8,
    timeout_s: float = 180.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> LocalServe:
    """Run `config` on a fresh local Ray in the background; returns once every app is RUNNING."""
    state_dir = state_dir.resolve()  # the runner works in the repository, not the caller's dir
    state_dir.mkdir(parents=True, exist_ok=True)
    port = int(config.get("http_options", {}).get("port") or free_port())
    config = {**config, "http_options": {"host": "127.0.0.1", "port": port}}
    config_path = state_dir / "serve-config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    dash_port, metrics_port = free_port(), free_port()
    log_path = state_dir / "serve-local.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "serving.local",
                "run",
                str(config_path),
                "--num-cpus",
                str(num_cpus),
                "--dashboard-port",
                str(dash_port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=ray_env(env),
            start_new_session=True,
        )
    state = LocalServe(
        proc.pid,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{dash_port}",
        f"http://127.0.0.1:{metrics_port}/metrics",
        str(config_path),
        str(log_path),
    )
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state)))
    try:
        wait_running(state.dashboard, [a["name"] for a in config["applications"]], timeout_s, proc)
    except Exception as exc:
        stop(state_dir)
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{exc}\n--- {log_path} (tail) ---\n{tail}") from exc
    return state


def stop(state_dir: Path, timeout_s: float = 30.0) -> bool:
    """SIGTERM the runner (it shuts its Ray down), SIGKILL its group if it lingers."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return False
    pid = json.loads(path.read_text())["pid"]
    path.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the group this module created for the runner
    return True


def _run(config_path: str, num_cpus: int, dashboard_port: int, metrics_port: int) -> None:
    import ray
    from ray import serve

    config = yaml.safe_load(Path(config_path).read_text())
    stopping = False

    def _term(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        _metrics_export_port=metrics_port or None,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    )
    try:
        deploy(f"http://127.0.0.1:{dashboard_port}", config)
        print(f"serving on http://127.0.0.1:{config['http_options']['port']}", flush=True)
        while not stopping:
            time.sleep(0.5)
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="foreground: local Ray + deploy CONFIG until SIGTERM")
    run.add_argument("config")
    run.add_argument("--num-cpus", type=int, default=8)
    run.add_argument("--dashboard-port", type=int, default=8265)
    run.add_argument("--metrics-port", type=int, default=0, help="0: Ray picks one")
    args = parser.parse_args(argv)
    _run(args.config, args.num_cpus, args.dashboard_port, args.metrics_port)


if __name__ == "__main__":
    main()
