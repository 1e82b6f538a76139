"""Each extra stands alone: a command runs with only its own extra's packages importable.

`pip install 'tandem[serving]'` must run `tandem serve`, `tandem[gateway]` `tandem gateway serve`,
`tandem[finops]` `tandem finops report`. This venv has every extra, so each test runs the command
in a child Python whose import system refuses every package that only *other* extras install
(read from pyproject.toml, so a new dependency is covered the day it is added). A command that
needs a package its extra does not declare fails here with that package's name.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
USECASES = REPO / "stacks" / "usecases"
NOT_RUNTIME = {"dev", "train"}  # test tools and the verifier's trainer: never needed by a command


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _dist(requirement: str) -> str:
    return _norm(Requirement(requirement).name)


def _closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, transitively (as resolved in this venv)."""
    seen: set[str] = set()
    todo = [r for r in map(Requirement, requirements) if r.marker is None or r.marker.evaluate()]
    while todo:
        req = todo.pop()  # its marker (if any) was already evaluated where it was found
        name = _norm(req.name)
        # one package asked for with different extras (ray[serve], ray[data]) brings each
        # extra's requirements: follow every (package, extras) pair once
        key = f"{name}{sorted(req.extras)}"
        if key in seen:
            continue
        seen.add(key)
        try:
            children = requires(name) or []
        except PackageNotFoundError:
            continue
        for child in map(Requirement, children):
            wanted = child.marker is None or any(
                child.marker.evaluate({"extra": e}) for e in ("", *req.extras)
            )
            if wanted:
                todo.append(child)
    # an extra that names another (`tandem[gateway]`) installs that extra's packages, not the
    # project again: the project itself is not a package of the extra
    return {k.split("[", 1)[0] for k in seen} - {"tandem"}


def _modules_of(dists: set[str]) -> set[str]:
    """Top-level import names those distributions provide (as installed here)."""
    out = set()
    for module, owners in packages_distributions().items():
        if any(o.lower().replace("_", "-") in dists for o in owners) and module.isidentifier():
            out.add(module)
    return out


def blocked_for(extra: str) -> set[str]:
    """Modules only other runtime extras install: what `pip install tandem[<extra>]` lacks."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    mine = _closure(project["dependencies"] + extras[extra])
    others = _closure([r for k, v in extras.items() if k not in NOT_RUNTIME | {extra} for r in v])
    # what this extra installs too (numpy, protobuf under ray...) stays importable
    return _modules_of(others - mine) - _modules_of(mine)


_BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in this extra)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
{code}
"""


def run_with_only(extra: str, code: str) -> subprocess.CompletedProcess:
    script = _BLOCKER.format(blocked=sorted(blocked_for(extra)), code=code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_the_blocker_sees_each_extras_own_packages() -> None:
    """Guards the test itself: the sets must be what pyproject says, or nothing is checked."""
    assert {"orjson", "redis", "usearch", "pulumi"} <= blocked_for("serving")
    assert "ray" in blocked_for("gateway") and "pulumi" in blocked_for("gateway")
    assert {"ray", "aiohttp", "pulumi"} <= blocked_for("finops")
    assert "numpy" not in blocked_for("serving")  # the serving extra has it too


@pytest.mark.parametrize("use_case", ["support-chatbot.yaml", "document-embeddings.yaml"])
def test_serving_extra_runs_tandem_serve(use_case: str) -> None:
    code = (
        "from tandem.cli import main; import serving.local, serving.batch_app; "
        f"raise SystemExit(main(['serve', '--print-config', {str(USECASES / use_case)!r}]))"
    )
    done = run_with_only("serving", code)
    assert done.returncode == 0, done.stderr
    assert "applications:" in done.stdout


def test_gateway_extra_runs_tandem_gateway(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "backends: {llm: {url: 'http://127.0.0.1:9/v1'}}\n"
        "routes: {chat: {backends: [{backend: llm}]}}\n"
        "cache: {mode: semantic}\n"
    )
    code = (
        "import gateway.app, gateway.cache.core; from gateway.config import load_config; "
        "from tandem.cli import main; "
        f"cfg = load_config({str(routes)!r}); print(len(cfg.routes)); "
        "raise SystemExit(main(['gateway', 'hash-key', 'sk-x']))"
    )
    done = run_with_only("gateway", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "1"


def test_finops_extra_runs_tandem_finops_report() -> None:
    # Nothing listens on port 9: the command imports its whole path, then reports the dead URL.
    code = (
        "import finops.report, finops.render, finops.html, finops.query, finops.fleet; "
        "from tandem.cli import main; "
        "raise SystemExit(main(['finops', 'report', '--prometheus', 'http://127.0.0.1:9', "
        "'--range', '1d']))"
    )
    done = run_with_only("finops", code)
    assert "ModuleNotFoundError" not in done.stderr, done.stderr
    assert done.returncode != 0 and "127.0.0.1:9" in done.stderr


def test_a_command_without_its_extra_names_the_extra_to_install() -> None:
    code = "from tandem.cli import main; raise SystemExit(main(['gateway', 'serve', '--config', 'r.yaml']))"
    done = run_with_only("finops", code)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr  # the environment
    assert "pip install 'tandem[gateway]'" in done.stderr


def test_gateway_extra_runs_tandem_prompts() -> None:
    code = (
        "from tandem.cli import main; "
        "raise SystemExit(main(['prompts', 'render', 'support/answer@1', '--var', 'question=hi']))"
    )
    done = run_with_only("gateway", code)
    assert done.returncode == 0, done.stderr
    assert '"content": "hi"' in done.stdout
