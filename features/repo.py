"""A feature repository (stacks/features/<project>/, Feast's own Python definitions) as Tandem
sees it: what Feast's plan says it registers, checked for what the platform needs.

`inspect(project)` runs features/feast_tool.py inside the Feast environment (.venv-feast, or
$TANDEM_FEAST_PYTHON) in a subprocess: Feast imports the definitions with its own parser and
plans them offline against an empty registry (`feast plan` without a store). The JSON it prints
is cached on disk beside that environment, keyed by the definitions' bytes, the tool's and
Feast's version, so a plan reruns Feast only when something changed.

`check_repo` adds the platform's rules (every view online, with a TTL longer than the
materialization interval; names Feast itself would accept), and `feature_read` resolves a use
case's `features:` against a repository into the gateway's `FeatureRead`. Both return plain
messages; tandem/stack.py turns them into plan-time checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from vocabulary.errors import UnavailableError
from vocabulary.features import (
    FEATURES_DIR,
    FeatureRead,
    UseCaseFeatures,
    ViewRead,
    schedule_interval_s,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FEAST_VENV = REPO_ROOT / ".venv-feast"
TOOL = Path(__file__).with_name("feast_tool.py")
# Feast types the gateway decodes (features.redis_format): scalars and lists of scalars
SCALAR_TYPES = ("String", "Int32", "Int64", "Float32", "Float64", "Bool", "Bytes", "UnixTimestamp")
GATEWAY_TYPES = frozenset(SCALAR_TYPES + tuple(f"Array({t})" for t in SCALAR_TYPES))
KEY_TYPES = {"STRING": "string", "INT64": "int64"}


@dataclass(frozen=True)
class View:
    name: str
    join_keys: list[str]
    ttl_s: int
    online: bool
    source: str  # "batch" | "push"
    push_source: str | None
    features: dict[str, str]  # name -> Feast type


@dataclass(frozen=True)
class Repo:
    """One project's definitions, as Feast parsed them (or the errors it raised)."""

    project: str
    errors: list[str]
    plan: list[str] = field(default_factory=list)
    entities: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (join key, type)
    views: dict[str, View] = field(default_factory=dict)
    services: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        """What the cluster and the policy pack see of the project (the feature-store
        ConfigMap's `tandem-summary.json`): every view's TTL and source, the services."""
        return {
            "project": self.project,
            "views": [
                {
                    "name": v.name,
                    "ttl_s": v.ttl_s,
                    "online": v.online,
                    "source": v.source,
                    "push_source": v.push_source,
                }
                for v in self.views.values()
            ],
            "services": sorted(self.services),
        }


def project_dir(project: str) -> Path:
    return REPO_ROOT / FEATURES_DIR / project


def feast_python() -> Path:
    return Path(os.environ.get("TANDEM_FEAST_PYTHON") or FEAST_VENV / "bin" / "python")


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256(TOOL.read_bytes())
    for path in sorted(folder.rglob("*.py")):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def _run_tool(folder: Path) -> dict[str, Any]:
    python = feast_python()
    if not python.exists():
        raise UnavailableError(
            f"the Feast environment is missing ({python}); build it with `make feast-env` "
            "(or point TANDEM_FEAST_PYTHON at a Python with feast installed)"
        )
    proc = subprocess.run(
        [str(python), "-m", "features.feast_tool", "inspect", str(folder)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UnavailableError(
            f"the Feast environment ({python}) could not inspect {folder}: {' | '.join(tail)}"
        ) from None


@lru_cache(maxsize=32)
def _inspect_cached(folder: str, fingerprint: str) -> dict[str, Any]:
    cache = feast_python().parent.parent / ".tandem-inspect" / f"{fingerprint}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    out = _run_tool(Path(folder))
    try:
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps(out))
    except OSError:  # a read-only environment: no cache, same answer
        print(f"note: cannot cache Feast's inspection in {cache.parent}", file=sys.stderr)
    return out


def inspect(project: str) -> Repo:
    """The project's definitions as Feast plans them; errors (a definition that does not
    import, a view Feast refuses) are in `Repo.errors`, not raised."""
    folder = project_dir(project)
    if not folder.is_dir() or not any(folder.glob("*.py")):
        return Repo(project, [f"{FEATURES_DIR}/{project}: no such feature repository (.py files)"])
    raw = _inspect_cached(str(folder), _fingerprint(folder))
    if not raw.get("ok"):
        return Repo(project, [f"{FEATURES_DIR}/{project}: {e}" for e in raw.get("errors", [])])
    return Repo(
        project=project,
        errors=[],
        plan=list(raw.get("plan", [])),
        entities={e["name"]: (e["join_key"], e["value_type"]) for e in raw["entities"]},
        views={
            v["name"]: View(
                name=v["name"],
                join_keys=list(v["join_keys"]),
                ttl_s=int(v["ttl_s"]),
                online=bool(v["online"]),
                source=v["source"],
                push_source=v["push_source"],
                features={f["name"]: f["dtype"] for f in v["features"]},
            )
            for v in raw["views"]
        },
        services={
            s["name"]: [(p["name"], list(p["features"])) for p in s["views"]]
            for s in raw["services"]
        },
    )


def check_repo(repo: Repo, materialize_schedule: str) -> list[str]:
    """The platform's rules on a project's definitions; one message per problem."""
    if repo.errors:
        return list(repo.errors)
    where = f"{FEATURES_DIR}/{repo.project}"
    interval = schedule_interval_s(materialize_schedule)
    problems = []
    for v in repo.views.values():
        if not v.online:
            problems.append(
                f"{where}: feature view {v.name!r} has online=False; every view is materialized "
                "into the online store, set online=True (or move it to its own project)"
            )
        if v.ttl_s <= 0:
            problems.append(
                f"{where}: feature view {v.name!r} has no ttl; set ttl=timedelta(...) (how old "
                "a value may be before the freshness alert fires and training sets drop it)"
            )
        elif v.source == "batch" and v.ttl_s <= interval:
            problems.append(
                f"{where}: feature view {v.name!r} has ttl {v.ttl_s} s, not longer than the "
                f"materialization interval ({materialize_schedule!r}: up to {interval} s), so "
                "its online values would expire between runs; raise the ttl or run "
                "materialization more often (featureStore.materializeSchedule)"
            )
    if not repo.views:
        problems.append(f"{where}: defines no feature view")
    return problems


def feature_read(
    repo: Repo, use_case: str, spec: UseCaseFeatures
) -> tuple[FeatureRead | None, list[str]]:
    """The gateway's read for a use case's `features:`, or the reasons it cannot be served."""
    where = f"use case {use_case!r} features"
    if repo.errors:
        return None, [f"{where}: project {spec.project!r} has errors (see its check)"]
    parts = repo.services.get(spec.service)
    if parts is None:
        return None, [
            f"{where}.service: {spec.service!r} is not a feature service of project "
            f"{spec.project!r}; services: {', '.join(sorted(repo.services)) or 'none'}"
        ]
    problems: list[str] = []
    names: list[str] = []
    key_types = set()
    for view_name, feats in parts:
        view = repo.views[view_name]
        if view.join_keys != [spec.entity.name]:
            problems.append(
                f"{where}.entity.name: {spec.entity.name!r}, but feature view {view_name!r} of "
                f"service {spec.service!r} is keyed by {view.join_keys}; the gateway serves "
                "services whose views share one single-key entity"
            )
        for f in feats:
            dtype = view.features.get(f, "?")
            if dtype not in GATEWAY_TYPES:
                problems.append(
                    f"{where}: feature {view_name}.{f} is of Feast type {dtype}; the gateway "
                    f"serves {', '.join(SCALAR_TYPES)} and arrays of them"
                )
        names += feats
        key_types |= {t for k, t in repo.entities.values() if k == spec.entity.name}
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(
            f"{where}: service {spec.service!r} has several features named {dupes}; give them "
            "distinct names (the prompt and the model see feature names without their view)"
        )
    key_type = KEY_TYPES.get(next(iter(key_types), "STRING"))
    if key_type is None:
        problems.append(
            f"{where}.entity.name: {spec.entity.name!r} is of type {next(iter(key_types))}; "
            "the gateway reads entities keyed by STRING or INT64"
        )
    if problems:
        return None, problems
    return (
        FeatureRead(
            project=spec.project,
            service=spec.service,
            entity=spec.entity,
            on_missing=spec.on_missing,
            key_type=key_type or "string",
            views=[ViewRead(name=v, features=f) for v, f in parts],
        ),
        [],
    )
