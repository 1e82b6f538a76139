"""A real Feast deployment on this machine: a feature repository copied from stacks/features/
into a temporary folder, with a feature_store.yaml pointing at a local registry file, a real
redis-server (the online store) and parquet files (the file offline store).

Feast runs in its own environment (.venv-feast, `make feast-env`); every operation is
features/feast_tool.py in a subprocess there, so the tests drive the same Feast `tandem plan`
inspects and the cluster runs. A missing environment fails the test, never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from features.repo import REPO_ROOT, feast_python, project_dir
from features.store_yaml import feature_store_yaml


@dataclass
class LocalFeast:
    repo: Path  # the working copy: definitions + feature_store.yaml
    data: Path  # $TANDEM_FEATURES_OFFLINE: parquet files
    redis_url: str
    project: str

    @property
    def yaml(self) -> Path:
        return self.repo / "feature_store.yaml"

    def tool(self, *args: str, timeout: float = 300) -> dict[str, Any]:
        python = feast_python()
        if not python.exists():
            pytest.fail(f"the Feast environment is required ({python}): make feast-env")
        proc = subprocess.run(
            [str(python), "-m", "features.feast_tool", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),
                "TANDEM_FEATURES_OFFLINE": str(self.data),
            },
        )
        lines = proc.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if lines else {"ok": False, "errors": [proc.stderr[-2000:]]}
        if not out.get("ok"):
            raise AssertionError(
                f"feast_tool {args[0]} failed: {out.get('errors')}\n{proc.stderr[-2000:]}"
            )
        return out

    def _common(self) -> tuple[str, ...]:
        return ("--yaml", str(self.yaml), "--repo", str(self.repo))

    def write(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Offline data: `<data>/<project>/<name>.parquet` (the FileSource paths)."""
        path = self.data / self.project / f"{name}.parquet"
        self.tool("write-parquet", str(path), "--rows", self._json(rows))

    def _json(self, obj: Any) -> str:
        text = json.dumps(obj)
        if len(text) < 100_000:
            return text
        path = self.data / f"rows-{abs(hash(text))}.json"
        path.write_text(text)
        return f"@{path}"

    def apply(self) -> dict[str, Any]:
        return self.tool("apply", *self._common())

    def materialize(self, end: str, start: str | None = None) -> None:
        self.tool(
            "materialize", *self._common(), "--end", end, *(("--start", start) if start else ())
        )

    def push(self, source: str, rows: list[dict[str, Any]]) -> None:
        self.tool("push", *self._common(), "--source", source, "--rows", self._json(rows))

    def historical(self, service: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.tool(
            "historical", *self._common(), "--service", service, "--rows", self._json(rows)
        )["rows"]

    def online(self, service: str, key: str, values: list[Any]) -> dict[str, list[Any]]:
        out = self.tool(
            "online",
            *self._common(),
            "--service",
            service,
            "--key",
            key,
            "--rows",
            json.dumps(values),
        )
        return out["features"]


def local_feast(tmp: Path, project: str, redis_url: str, source: Path | None = None) -> LocalFeast:
    """A working copy of `stacks/features/<project>` (or `source`) wired to `redis_url`."""
    repo = tmp / project
    shutil.copytree(
        source or project_dir(project), repo, ignore=shutil.ignore_patterns("__pycache__")
    )
    data = tmp / "offline"
    data.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        feature_store_yaml(
            project, registry=str(tmp / "registry.db"), redis_url=redis_url, registry_cache_ttl_s=0
        )
    )
    return LocalFeast(repo=repo, data=data, redis_url=redis_url, project=project)


# The shipped customer_care project's test data: two customers, C1 upgrading from free to
# enterprise on 2026-11-10 and opening tickets, C2 on pro with no ticket activity.
PROFILE: list[dict[str, Any]] = [
    {"customer_id": "C1", "event_timestamp": "2026-11-08T00:00:00Z", "created": "2026-11-08T01:00:00Z",
     "plan_tier": "free", "tenure_months": 3, "lifetime_value_usd": 0.0, "region": "eu"},
    # C1 upgrades on the 10th: a training row before that must not see "enterprise"
    {"customer_id": "C1", "event_timestamp": "2026-11-10T00:00:00Z", "created": "2026-11-10T01:00:00Z",
     "plan_tier": "enterprise", "tenure_months": 4, "lifetime_value_usd": 1200.0, "region": "eu"},
    {"customer_id": "C2", "event_timestamp": "2026-11-09T00:00:00Z", "created": "2026-11-09T01:00:00Z",
     "plan_tier": "pro", "tenure_months": 12, "lifetime_value_usd": 340.5, "region": "us"},
]  # fmt: skip
ACTIVITY: list[dict[str, Any]] = [
    {"customer_id": "C1", "event_timestamp": "2026-11-08T22:00:00Z", "open_tickets": 1,
     "last_ticket_hours_ago": 3.0, "csat_last_30d": 4.5},
    {"customer_id": "C1", "event_timestamp": "2026-11-09T02:00:00Z", "open_tickets": 5,
     "last_ticket_hours_ago": 0.5, "csat_last_30d": 3.0},
]  # fmt: skip


def seeded_customer_care(tmp: Path, redis_url: str) -> LocalFeast:
    """customer_care applied, its offline data written and materialized for November 2026
    (online: C1 enterprise with 5 open tickets, C2 pro without activity)."""
    f = local_feast(tmp, "customer_care", redis_url)
    f.write("customer_profile", PROFILE)
    f.write("support_activity", ACTIVITY)
    f.apply()
    f.materialize(start="2026-11-01T00:00:00+00:00", end="2026-11-13T00:00:00+00:00")
    return f
