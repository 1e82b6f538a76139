"""`tandem cache replay` on a small log: hits, wrong hits and dollars per policy, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.cli import main

WEB = "Click 'Forgot password' under the sign-in form and follow the emailed link."
APP = "In the app, open Profile, tap Security, then tap Change PIN and confirm with Face ID."


def line(question: str, answer: str, tenant: str = "team-a") -> str:
    body = {"model": "llama", "temperature": 0, "messages": [{"role": "user", "content": question}]}
    response = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 1000},
    }
    return json.dumps({"tenant": tenant, "model": "llama", "body": body, "response": response})


def test_replay_reports_hits_wrong_hits_and_savings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "requests.jsonl"
    log.write_text(
        "\n".join(
            [
                line("How do I reset my password on the website?", WEB),
                line("How do I reset my password on the website?", WEB),  # exact repeat
                line("How can I reset my password on the website?", WEB),  # paraphrase: a right hit
                line(
                    "How do I reset my password on the mobile app?", APP
                ),  # near miss: wrong if served WEB
                line(
                    "How do I reset my password on the website?", WEB, tenant="team-b"
                ),  # other tenant: miss
            ]
        )
        + "\n"
    )
    rc = main(
        [
            "cache",
            "replay",
            str(log),
            "--thresholds",
            "0.7,0.99",
            "--price-in",
            "1",
            "--price-out",
            "2",
            "--output",
            "json",
        ]
    )
    assert rc == 0
    results = {r["variant"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert set(results) == {
        "exact",
        "evidence",
        "verifier",
        "neighbourhood",
        "threshold=0.7",
        "threshold=0.99",
    }
    exact = results["exact"]
    assert (exact["requests"], exact["exact_hits"], exact["semantic_hits"]) == (5, 1, 0)
    assert exact["dollars_total"] == pytest.approx(5 * 0.003) and exact[
        "dollars_saved"
    ] == pytest.approx(0.003)
    loose = results["threshold=0.7"]
    assert loose["semantic_hits"] == 2 and loose["estimated_wrong_hits"] == 1
    assert loose["dollars_saved"] == pytest.approx(0.006)  # the wrong hit saved nothing
    assert (
        results["threshold=0.99"]["semantic_hits"] == 1
        and results["threshold=0.99"]["estimated_wrong_hits"] == 0
    )


def test_replay_rejects_a_malformed_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_text(json.dumps({"body": {}}) + "\n")
    assert main(["cache", "replay", str(log)]) == 2
    assert "needs a `body` and a `response`" in capsys.readouterr().err


def test_replay_says_which_rows_it_could_not_use_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log of answers without finish_reason, or of requests without temperature, used to replay
    as 0 % hits without a word."""
    rows = [json.loads(line(q, WEB)) for q in ("How do I reset my password?",) * 3]
    del rows[0]["response"]["choices"][0]["finish_reason"]  # not storable
    del rows[1]["body"]["temperature"]  # sampled: the API default 1.0
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["cache", "replay", str(log), "--thresholds", "0.9", "--output", "json"]) == 0
    exact = json.loads(capsys.readouterr().out)["results"][0]
    assert exact["not_looked_up"] == {"sampled: no temperature (the API default 1.0 samples)": 1}
    assert exact["not_stored"] == {"incomplete: no finish_reason": 1}
    assert exact["exact_hits"] == 0  # the third row missed: nothing was stored before it
    assert main(["cache", "replay", str(log), "--thresholds", "0.9"]) == 0
    table = capsys.readouterr().out
    assert "1 of 3 rows not looked up: sampled: no temperature" in table
    assert "1 of 3 rows not stored: incomplete: no finish_reason" in table
