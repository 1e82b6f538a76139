"""Feast operations, run inside the Feast environment (.venv-feast), never imported by Tandem.

    python -m features.feast_tool inspect REPO
    python -m features.feast_tool apply|materialize|push|historical|online --yaml STORE.yaml ...

`inspect` is `tandem plan`'s `feast plan`: it imports a feature repository's definitions with
Feast's own parser and runs Feast's own plan (validation, inference, the registry and infra
diff) against an empty local registry, without touching any store, and prints one JSON object:
the project's entities, feature views (TTL, online, source kind, features and their Feast
types), push sources and feature services, or the errors. features/repo.py calls it in a
subprocess, because Feast pins prometheus-client, redis and tenacity below Tandem's and so
cannot share Tandem's environment.

The other commands are the operations the tests and benchmarks run against real stores (a
local redis-server and a file offline store); in a cluster the same operations are Feast's CLI
in Feast's image (`feast apply`, `feast materialize-incremental`) and its feature server's
`/push` (components/feature_store.py). Only stdlib and feast are imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
DUMMY_ENTITY = "__dummy"


def _enter(repo: Path) -> None:
    """As the feast CLI does: the repository is the working folder and on sys.path, so its
    modules import by their file names (what `feast apply` in the cluster sees)."""
    root = str(repo.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    os.chdir(root)


def _ttl_seconds(fv: Any) -> int:
    return int(fv.ttl.total_seconds()) if fv.ttl else 0


def _source_kind(fv: Any) -> tuple[str, str | None]:
    from feast.data_source import PushSource

    src = fv.stream_source or fv.batch_source
    if isinstance(fv.stream_source, PushSource):
        return "push", fv.stream_source.name
    if isinstance(src, PushSource):
        return "push", src.name
    return "batch", None


def inspect(repo: Path) -> dict[str, Any]:
    """Parse and plan a feature repository offline: what `feast plan` would register."""
    from feast.feature_store import FeatureStore
    from feast.repo_config import RepoConfig
    from feast.repo_operations import parse_repo

    here = os.getcwd()
    out: dict[str, Any] = {"ok": False, "project": repo.name, "errors": []}
    try:
        _enter(repo)
        with contextlib.redirect_stdout(io.StringIO()):
            contents = parse_repo(repo.resolve())
    except Exception as exc:  # a definitions file that does not import: say where
        tb = traceback.extract_tb(exc.__traceback__)
        where = next(
            (f"{f.filename}:{f.lineno}" for f in reversed(tb) if repo.name in f.filename), ""
        )
        out["errors"].append(f"{where + ': ' if where else ''}{type(exc).__name__}: {exc}")
        return out
    finally:
        os.chdir(here)
    with tempfile.TemporaryDirectory() as tmp:
        config = RepoConfig(
            project=repo.name,
            provider="local",
            registry=str(Path(tmp) / "registry.db"),
            online_store={"type": "redis", "connection_string": "localhost:6379"},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=str(repo.resolve()),
        )
        try:
            store = FeatureStore(config=config)
            registry_diff, infra_diff, _ = store.plan(contents)
        except Exception as exc:
            out["errors"].append(f"feast plan: {type(exc).__name__}: {exc}")
            return out
    lines = registry_diff.to_string().splitlines() + infra_diff.to_string().splitlines()
    out["plan"] = [_ANSI.sub("", line) for line in lines if line.strip()]
    out["entities"] = [
        {
            "name": e.name,
            "join_key": e.join_key,
            "value_type": e.value_type.name if e.value_type is not None else "UNKNOWN",
        }
        for e in contents.entities
        if e.name != DUMMY_ENTITY  # Feast adds it for views without entities
    ]
    views = []
    for fv in list(contents.feature_views) + list(contents.stream_feature_views):
        kind, push = _source_kind(fv)
        views.append(
            {
                "name": fv.name,
                "entities": list(fv.entities),
                "join_keys": [c.name for c in fv.entity_columns],
                "ttl_s": _ttl_seconds(fv),
                "online": bool(fv.online),
                "source": kind,
                "push_source": push,
                "features": [{"name": f.name, "dtype": str(f.dtype)} for f in fv.features],
            }
        )
    out["views"] = views
    out["on_demand_views"] = [v.name for v in contents.on_demand_feature_views]
    out["push_sources"] = sorted({v["push_source"] for v in views if v["push_source"]})
    out["services"] = [
        {
            "name": s.name,
            "views": [
                {"name": p.name_to_use(), "features": [f.name for f in p.features]}
                for p in s.feature_view_projections
            ],
        }
        for s in contents.feature_services
    ]
    out["ok"] = True
    return out


# -- operations against real stores (tests, benchmarks) ------------------------------------------


def _store(yaml_path: str, repo: str | None = None) -> Any:
    from feast.feature_store import FeatureStore
    from feast.repo_config import load_repo_config

    root = Path(repo or Path(yaml_path).parent).resolve()
    return FeatureStore(config=load_repo_config(root, Path(yaml_path)))


def _when(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def apply(yaml_path: str, repo: str) -> dict[str, Any]:
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    here = os.getcwd()
    try:
        _enter(Path(repo))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            apply_total(
                load_repo_config(Path(repo).resolve(), Path(yaml_path)),
                Path(repo).resolve(),
                skip_source_validation=False,
            )
    finally:
        os.chdir(here)
    return {"ok": True, "log": printed.getvalue().splitlines()}


def materialize(yaml_path: str, repo: str, end: str, start: str | None) -> dict[str, Any]:
    store = _store(yaml_path, repo)
    with contextlib.redirect_stdout(io.StringIO()):
        if start:
            store.materialize(_when(start), _when(end))
        else:
            store.materialize_incremental(_when(end))
    return {"ok": True}


def push(yaml_path: str, repo: str, source: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import pandas as pd

    df = pd.DataFrame(rows)
    for col in ("event_timestamp", "created"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True)
    _store(yaml_path, repo).push(source, df)
    return {"ok": True, "rows": len(rows)}


def historical(
    yaml_path: str, repo: str, service: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """A point-in-time-correct training set: each entity row joined with the feature values
    as of its `event_timestamp` (Feast's get_historical_features)."""
    import pandas as pd

    store = _store(yaml_path, repo)
    entity_df = pd.DataFrame(rows)
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    df = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(service)
    ).to_df()
    df = df.sort_values(list(entity_df.columns)).reset_index(drop=True)
    df["event_timestamp"] = df["event_timestamp"].map(lambda t: t.isoformat())
    records = json.loads(df.to_json(orient="records", date_format="iso"))
    return {"ok": True, "rows": records}


def online(yaml_path: str, repo: str, service: str, key: str, values: list[Any]) -> dict[str, Any]:
    store = _store(yaml_path, repo)
    got = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{key: v} for v in values]
    ).to_dict()
    return {"ok": True, "features": got}


def write_parquet(path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Offline data for a FileSource (tests, benchmarks): timestamps as UTC datetimes."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for col in ("event_timestamp", "created"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path)
    return {"ok": True, "rows": len(rows)}


def _rows(text: str) -> Any:
    """JSON given inline, or `@path` to a JSON file (large data sets)."""
    return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="feast_tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("inspect").add_argument("repo", type=Path)
    wp = sub.add_parser("write-parquet")
    wp.add_argument("path")
    wp.add_argument("--rows", required=True)
    for name in ("apply", "materialize", "push", "historical", "online"):
        sp = sub.add_parser(name)
        sp.add_argument("--yaml", required=True)
        sp.add_argument("--repo", required=True)
        if name == "materialize":
            sp.add_argument("--end", required=True)
            sp.add_argument("--start")
        if name == "push":
            sp.add_argument("--source", required=True)
        if name in ("historical", "online"):
            sp.add_argument("--service", required=True)
        if name == "online":
            sp.add_argument("--key", required=True)
        if name in ("push", "historical", "online"):
            sp.add_argument("--rows", required=True, help="JSON list (online: entity values)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "inspect":
            out = inspect(a.repo)
        elif a.cmd == "write-parquet":
            out = write_parquet(a.path, _rows(a.rows))
        elif a.cmd == "apply":
            out = apply(a.yaml, a.repo)
        elif a.cmd == "materialize":
            out = materialize(a.yaml, a.repo, a.end, a.start)
        elif a.cmd == "push":
            out = push(a.yaml, a.repo, a.source, _rows(a.rows))
        elif a.cmd == "historical":
            out = historical(a.yaml, a.repo, a.service, _rows(a.rows))
        else:
            out = online(a.yaml, a.repo, a.service, a.key, _rows(a.rows))
    except Exception as exc:
        out = {"ok": False, "errors": [f"{type(exc).__name__}: {exc}"]}
    sys.stdout.write(json.dumps(out, default=str) + "\n")
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
