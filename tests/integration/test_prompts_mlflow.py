"""`tandem prompts publish` against a real MLflow server (.venv-mlflow, sqlite store): the shipped
prompt becomes an MLflow prompt that MLflow's own client loads by alias, with its messages and
variables; publishing again changes nothing; a version whose text differs from MLflow's is
refused, never overwritten."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tandem.cli import main
from tests.support.lifecycle import MLFLOW_VENV, mlflow_server

pytestmark = pytest.mark.integration
SHIPPED = Path(__file__).resolve().parents[2] / "stacks" / "prompts"


def _load(url: str, uri: str) -> dict:
    code = (
        f"import json, mlflow; mlflow.set_tracking_uri({url!r}); "
        f"p = mlflow.genai.load_prompt({uri!r}); "
        "print(json.dumps({'version': p.version, 'variables': sorted(p.variables), "
        "'template': p.template, 'text': p.is_text_prompt}))"
    )
    done = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_publish_mirrors_the_files_into_mlflows_prompt_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) as server:
        assert main(["prompts", "publish", "support/answer", "--registry", server.url]) == 0
        out = capsys.readouterr().out
        assert "support/answer -> MLflow prompt support.answer: created versions [1, 2, 3]" in out

        loaded = _load(server.url, "prompts:/support.answer@production")
        assert loaded["version"] == 2 and loaded["text"] is False  # a chat prompt
        assert loaded["variables"] == ["open_tickets", "plan_tier", "question", "tenure_months"]
        assert loaded["template"][-1] == {"role": "user", "content": "{{question}}"}
        assert _load(server.url, "prompts:/support.answer@candidate")["version"] == 3

        assert main(["prompts", "publish", "--registry", server.url]) == 0  # idempotent
        assert "unchanged [1, 2, 3]" in capsys.readouterr().out

        # version 2 edited in place: refused, MLflow keeps what it had
        changed = tmp_path / "prompts"
        (changed / "support").mkdir(parents=True)
        doc = yaml.safe_load((SHIPPED / "support" / "answer.yaml").read_text())
        doc["versions"][1]["messages"][1]["content"] = "Q: {{question}}"
        (changed / "support" / "answer.yaml").write_text(yaml.safe_dump(doc))
        args = ["prompts", "publish", "--dir", str(changed), "--registry", server.url]
        assert main(args) == 2
        assert "versions are immutable" in capsys.readouterr().err
        assert _load(server.url, "prompts:/support.answer/2")["template"][-1]["content"] == (
            "{{question}}"
        )
