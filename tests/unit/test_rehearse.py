"""`tandem rehearse --dry-run`: the sandbox checklist for a stack, printed without a cloud."""

from __future__ import annotations

from tandem.cli import main
from tandem.cli.rehearse import steps


def test_dry_run_prints_every_step_for_the_stack(capsys) -> None:
    assert main(["rehearse", "--stack", "prod", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "1. Offline plan (typically 10 s)",
        "$ tandem plan --stack prod",
        "$ pulumi preview --stack prod --policy-pack policies",
        "$ pulumi up --stack prod --policy-pack policies --yes",
        "aws eks update-kubeconfig --name tandem-prod --region us-east-1",
        "tandem:gatewayKey-customer-care",
        "tandem:alertingSecret-platform-oncall",
        "/v1/models lists support-chat, doc-embed",
        "dry run: nothing was executed",
    ):
        assert expected in out, expected


def test_only_the_offline_plan_runs_without_a_cloud() -> None:
    plan = steps("dev")
    assert [s.cloud for s in plan].count(False) == 1 and not plan[0].cloud
    assert all(s.expect and s.typical for s in plan)
