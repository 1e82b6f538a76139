"""benchmarks/cache_savings.py end to end on a small log: its JSON interface (the field names the
issue defines) and the exact answer comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = "Click 'Forgot password' under the sign-in form and follow the emailed link."
APP = "In the app, open Profile, tap Security, then tap Change PIN and confirm with Face ID."


def row(question: str, answer: str) -> str:
    body = {"model": "llama", "temperature": 0, "messages": [{"role": "user", "content": question}]}
    response = {
        "choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 100},
    }
    return json.dumps({"model": "llama", "body": body, "response": response})


def test_cache_savings_reports_the_interface_fields(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(
        "\n".join(
            [
                row("How do I reset my password on the website?", WEB),
                row("How do I reset my password on the website?", WEB),  # exact repeat
                row("How do I reset my password on the mobile app?", APP),  # near miss
            ]
        )
        + "\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cache_savings.py"),
            "--log",
            str(log),
            "--variants",
            "no_cache",
            "exact",
            "threshold=0.7",
            "default",
            "--thresholds",
            "0.7",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    variants = {v["variant"]: v for v in json.loads(run.stdout)["variants"]}
    assert set(variants) == {"no_cache", "exact", "threshold=0.7", "default"}
    for v in variants.values():
        assert {
            "variant",
            "requests",
            "calls_avoided_share",
            "wrong_answer_share",
            "dollars_saved_share",
        } <= set(v) and v["requests"] == 3
    assert variants["no_cache"]["calls_avoided_share"] == 0
    assert variants["exact"]["calls_avoided_share"] == round(1 / 3, 4)
    loose = variants["threshold=0.7"]  # serves the website answer for the app question: wrong
    assert loose["wrong_answer_share"] == round(1 / 3, 4)
    assert loose["calls_avoided_share"] == round(1 / 3, 4)  # a wrong answer avoided nothing
    assert variants["default"]["wrong_answer_share"] == 0
