"""LLM tier: local mode's LLM example run the way a user runs it, from the LLM environment.

Runs in .venv-llm (tests/llm/setup-env.sh, `make llm-env`). Builds the tiny random Llama where
stacks/local/tiny-llm.yaml looks for it (`python -m serving.tiny_llm`), starts it with the
`tandem` script (`tandem serve --local stacks/local/tiny-llm.yaml`: the builder's Serve config on
a local Ray, as KubeRay deploys it), then checks the OpenAI endpoints return the requested
number of tokens, that vLLM's metrics are scraped, that `vllm bench serve` (the environment's
`vllm` command) drives it, and stops it with `tandem serve --stop`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving import builder
from serving.tiny_llm import build_random_llama
from vocabulary.net import free_port
from vocabulary.usecase import load_deployment_or_use_case

pytestmark = pytest.mark.llm

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "stacks" / "local" / "tiny-llm.yaml"
BIN = Path(sys.executable).parent  # .venv-llm/bin: the scripts a user of this environment runs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The user's current directory: the model where the example expects it, the serve state."""
    cwd = tmp_path_factory.mktemp("llm-user")
    build_random_llama(cwd / ".tandem" / "models" / "tiny-llama")
    return cwd


@pytest.fixture(scope="module")
def spec():
    (deployment,) = load_deployment_or_use_case(EXAMPLE).deployments
    return deployment


def _tandem(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tandem"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def served(workdir: Path):
    port = free_port()
    started = time.monotonic()
    done = _tandem(workdir, "serve", "--local", str(EXAMPLE), "--port", str(port), timeout=600)
    log = workdir / ".tandem" / "serve-local" / "serve-local.log"
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
    assert done.returncode == 0, f"{done.stdout}{done.stderr}--- {log} ---\n{tail}"
    print(f"\ntandem serve --local: RUNNING after {time.monotonic() - started:.0f}s")
    try:
        state = json.loads((workdir / ".tandem" / "serve-local" / "serve-local.json").read_text())
        assert state["endpoint"] == f"http://127.0.0.1:{port}"
        assert f"http://127.0.0.1:{port}/tiny-llm/v1/chat/completions" in done.stdout
        yield state
    finally:
        stopped = _tandem(workdir, "serve", "--stop", timeout=120)
        assert stopped.returncode == 0 and "stopped local Serve" in stopped.stdout


def test_completions_return_the_requested_tokens(served, spec) -> None:
    url = f"{served['endpoint']}{builder.route_prefix(spec)}/v1/completions"
    resp = httpx.post(
        url,
        json={
            "model": spec.model,
            "prompt": "the model serves",
            "max_tokens": 7,
            "ignore_eos": True,
            "temperature": 0,
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == 7
    assert isinstance(body["choices"][0]["text"], str)


def test_chat_completions_return_the_requested_tokens(served, spec) -> None:
    url = f"{served['endpoint']}{builder.route_prefix(spec)}/v1/chat/completions"
    resp = httpx.post(
        url,
        json={
            "model": spec.model,
            "max_tokens": 5,
            "ignore_eos": True,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "scale the cluster"},
            ],
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_vllm_metrics_are_scraped(served, spec) -> None:
    """vLLM's engine series reach Ray's Prometheus endpoint (what the PodMonitor scrapes)."""

    def generated(text: str) -> float:
        lines = [ln for ln in text.splitlines() if "vllm" in ln and not ln.startswith("#")]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if "generation_tokens_total" in ln)

    deadline = time.monotonic() + 90  # Ray's agent exports on its own interval: poll
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(served["metrics"], timeout=10).text
        if generated(text) >= 12:
            break
        time.sleep(2)
    assert "generation_tokens" in text, text[-2000:]
    assert generated(text) >= 12, text[-2000:]  # the two requests above: 7 + 5 tokens


def test_vllm_command_benchmarks_the_served_model(served, spec, workdir: Path) -> None:
    """`vllm` works in this environment: vLLM's own benchmark client against the served model."""
    done = subprocess.run(
        [str(BIN / "vllm"), "--version"], capture_output=True, text=True, timeout=300
    )
    from vocabulary.pins import VLLM_VERSION

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == VLLM_VERSION, done.stdout
    bench = subprocess.run(
        [str(BIN / "vllm"), "bench", "serve", "--backend", "openai",
         "--base-url", served["endpoint"], "--endpoint", f"{builder.route_prefix(spec)}/v1/completions",
         "--model", spec.model, "--tokenizer", str(workdir / ".tandem" / "models" / "tiny-llama"),
         "--dataset-name", "random", "--random-input-len", "16", "--random-output-len", "4",
         "--num-prompts", "4", "--ignore-eos"],
        capture_output=True, text=True, timeout=300, cwd=workdir,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert "Successful requests:" in bench.stdout
    line = next(ln for ln in bench.stdout.splitlines() if "Successful requests:" in ln)
    assert int(line.split()[-1]) == 4, bench.stdout[-2000:]


def test_messages_through_the_gateway_translated_to_the_served_model(
    served, spec, workdir: Path
) -> None:
    """Issue 24's self-hosted path on the real server: an Anthropic Messages call (what Claude Code
    sends) to the gateway, translated to the served vLLM's chat completions and back, answered and
    streamed with every Messages event. The gateway runs as its own process from the main
    environment, as it is deployed. (Claude Code itself needs a model that holds its prompt and
    calls tools; this tier's random 256-token Llama does neither: docs/assistants.md.)"""
    import yaml

    from tests.support.lifecycle import _wait_http

    gateway_bin = REPO / ".venv" / "bin" / "tandem"
    assert gateway_bin.exists(), (
        f"the gateway runs from the main environment: make setup ({gateway_bin})"
    )
    port = free_port()
    routes = workdir / "gateway-routes.yaml"
    upstream = f"{served['endpoint']}{builder.route_prefix(spec)}/v1"
    routes.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "backends": {"tiny": {"url": upstream, "model": spec.model}},
                "routes": {"coder": {"backends": [{"backend": "tiny"}]}},
            }
        )
    )
    log_path = workdir / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(gateway_bin), "gateway", "serve", "--config", str(routes)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    gateway = f"http://127.0.0.1:{port}"
    try:
        _wait_http(gateway + "/readyz", 60, proc, log_path)
        headers = {"anthropic-version": "2023-06-01", "x-api-key": "local-dev"}
        body = {
            "model": "coder",
            "max_tokens": 5,
            "temperature": 0,
            "system": "be brief",
            "messages": [{"role": "user", "content": "scale the cluster"}],
        }
        r = httpx.post(gateway + "/v1/messages", json=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        m = r.json()
        assert (m["type"], m["role"], m["model"]) == ("message", "assistant", "coder"), m
        assert m["id"].startswith("msg_") and m["stop_reason"] in ("max_tokens", "end_turn"), m
        assert 1 <= m["usage"]["output_tokens"] <= 5 and m["usage"]["input_tokens"] > 0, m
        assert all(block["type"] == "text" for block in m["content"]), m

        events: list[str] = []
        usage: dict = {}
        with httpx.stream(
            "POST", gateway + "/v1/messages", json={**body, "stream": True}, headers=headers,
            timeout=120,
        ) as s:  # fmt: skip
            assert s.status_code == 200
            data = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if data.get("type") == "message_delta":
                        usage = data["usage"]
        assert events[0] == "message_start" and events[-1] == "message_stop", events
        assert {"content_block_start", "content_block_delta", "message_delta"} <= set(events)
        assert 1 <= usage.get("output_tokens", 0) <= 5, usage
    finally:
        proc.terminate()
        proc.wait(20)


def test_every_golden_llm_config_is_a_valid_llmconfig() -> None:
    """The builder's LLM configs against Serve LLM's own pydantic model (needs pyarrow, vllm)."""
    import yaml
    from ray.serve.llm import LLMConfig

    golden = Path(__file__).resolve().parents[1] / "unit" / "golden"
    configs = [
        cfg
        for path in sorted(golden.glob("serving_llm*.yaml"))
        for app in yaml.safe_load(path.read_text())["applications"]
        for cfg in app["args"]["llm_configs"]
    ]
    assert len(configs) >= 2
    for cfg in configs:
        parsed = LLMConfig(**cfg)
        auto = parsed.deployment_config["autoscaling_config"]
        assert (
            auto["target_ongoing_requests"]
            == cfg["deployment_config"]["autoscaling_config"]["target_ongoing_requests"]
        )
