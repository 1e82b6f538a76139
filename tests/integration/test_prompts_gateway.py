"""Prompts by name and the context budget, through the real gateway to real upstream servers.

- a request naming `support/answer@production` reaches the backend rendered (the prompt's system
  message, the caller's earlier turns, the templated question), with the prompt's parameters as
  defaults and the model alias the prompt is written for; the answer says which version served
  it and every request metric carries `prompt` and `prompt_version`;
- missing, unexpected or ill-typed variables, an unknown prompt, label or version, a model the
  prompt is not written for: OpenAI-style 4xx naming each, and the backend never called;
- a prompt version's canary through the same live split as a model's (real Redis): 100 % moves
  every `production` reference, an experiment keeps each caller on one version;
- the context budget: `truncate_oldest` drops the oldest turns (counted with a real Hugging Face
  tokenizer file) and the backend gets a request that fits; `fallback` goes to the long-context
  route; no fallback is a 400 naming the numbers, with no backend call.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
import redis

from tests.support.gateway_harness import RunningGateway, fresh_upstreams, upstream_servers
from tests.support.redis_server import redis_server
from tests.support.upstream import wait_until
from vocabulary.prompts import load_prompts
from vocabulary.rollout import TrafficSplit, split_key

pytestmark = pytest.mark.integration

SHIPPED = load_prompts("stacks/prompts", ["support/answer"])["support/answer"]
FACTS = {"plan_tier": "pro", "tenure_months": 7, "open_tickets": 0}


@pytest.fixture(scope="module")
def ups():
    with upstream_servers("short", "long") as servers:
        yield servers


@pytest.fixture
def upstreams(ups):
    return fresh_upstreams(ups)


def _config(ups, **extra) -> dict:
    return {
        "backends": {
            "short": {"url": ups["short"][1].url + "/v1", "context_window": 1000},
            "long": {"url": ups["long"][1].url + "/v1", "context_window": 100_000},
        },
        "routes": {
            "support-chat": {"backends": [{"backend": "short"}], "use_case": "support-chatbot"},
            "support-chat-long": {"backends": [{"backend": "long"}]},
        },
        "prompts": {"support/answer": SHIPPED.model_dump(mode="json")},
        **extra,
    }


def _post(gw: RunningGateway, body: dict) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


def test_a_prompt_named_by_the_caller_reaches_the_backend_rendered(ups, upstreams) -> None:
    with RunningGateway(_config(ups)) as gw:
        history = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ]
        r = _post(
            gw,
            {
                "prompt": "support/answer@production",
                "variables": {"question": "Where is my refund?", **FACTS},
                "messages": history,
                "temperature": 0.7,
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["X-Tandem-Prompt"] == "support/answer@2"
        sent = upstreams["short"].bodies[-1]
        assert "prompt" not in sent and "variables" not in sent
        assert sent["model"] == "support-chat"  # the alias the prompt is written for
        assert sent["temperature"] == 0.7 and sent["max_tokens"] == 400  # caller's, prompt's
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert "on the pro plan (customer for 7 months)" in sent["messages"][0]["content"]
        assert "has 0 open tickets" in sent["messages"][0]["content"]
        assert sent["messages"][1:3] == history
        assert sent["messages"][3] == {"role": "user", "content": "Where is my refund?"}

        # a version by number, and a label; the version labels every request metric
        r = _post(gw, {"prompt": "support/answer@1", "variables": {"question": "Hi"}})
        assert r.status_code == 200 and r.headers["X-Tandem-Prompt"] == "support/answer@1"
        assert "plan" not in upstreams["short"].bodies[-1]["messages"][0]["content"]
        r = _post(
            gw, {"prompt": "support/answer@candidate", "variables": {"question": "Hi", **FACTS}}
        )
        assert r.status_code == 200 and r.headers["X-Tandem-Prompt"] == "support/answer@3"
        requests = "tandem_gateway_requests_total"
        for version in ("1", "2", "3"):
            assert gw.metric(requests, prompt="support/answer", prompt_version=version) == 1
        assert gw.metric("tandem_gateway_tokens_total", prompt_version="2", direction="in") > 0
        renders = "tandem_gateway_prompt_renders_total"
        assert gw.metric(renders, prompt="support/answer", outcome="rendered") == 3

        # a plain request still works and carries empty prompt labels
        r = _post(gw, {"model": "support-chat", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200 and "X-Tandem-Prompt" not in r.headers
        assert gw.metric(requests, prompt="", prompt_version="", code="200") == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"variables": {**FACTS}}, 400, "prompt_variables_invalid", ["missing", "'question'"]),
        (
            {"variables": {"question": "q", "tone": "warm", **FACTS}},
            400,
            "prompt_variables_invalid",
            ["unexpected", "'tone'"],
        ),
        (
            {"variables": {"question": {"nested": 1}, **FACTS}},
            400,
            "prompt_variables_invalid",
            ["strings, numbers or booleans", "'question'"],
        ),
        ({"prompt": "support/nope"}, 404, "prompt_not_found", ["support/nope"]),
        ({"prompt": "support/answer@staging"}, 404, "prompt_not_found", ["staging", "candidate"]),
        ({"prompt": "support/answer@9"}, 404, "prompt_not_found", ["no version 9"]),
        ({"prompt": "not a name"}, 400, "invalid_request", ["<namespace>/<name>"]),
        ({"model": "support-chat-long"}, 400, "prompt_model_mismatch", ["support-chat"]),
        ({"variables": ["question"]}, 400, "invalid_request", ["'variables'"]),
    ],
)
def test_bad_prompt_requests_are_refused_naming_the_fault(
    ups, upstreams, body, status, code, words
) -> None:
    request = {"prompt": "support/answer", "variables": {"question": "q", **FACTS}, **body}
    with RunningGateway(_config(ups)) as gw:
        r = _post(gw, request)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    assert upstreams["short"].requests == 0 and upstreams["long"].requests == 0


def test_a_prompt_version_rolls_out_through_the_live_split(ups, upstreams) -> None:
    """`tandem prompts split` writes the record a model's rollout writes; the gateway applies it."""
    from tandem.cli import main

    with redis_server("the prompt rollout test") as url:
        cfg = _config(ups, redis={"url": url, "prefix": "t"}, server={"split_poll_s": 0.05})
        split = ["prompts", "split", "support/answer", "--redis", url, "--prefix", "t"]
        body = {"prompt": "support/answer", "variables": {"question": "q", **FACTS}}
        with RunningGateway(cfg) as gw:
            assert _post(gw, body).headers["X-Tandem-Prompt"] == "support/answer@2"
            assert main([*split, "--version", "3", "--weight", "100"]) == 0
            record = redis.Redis.from_url(url).get(split_key("t", "prompt:support/answer"))
            assert TrafficSplit.model_validate_json(record).canary_version == "3"
            assert wait_until(
                lambda: _post(gw, body).headers["X-Tandem-Prompt"] == "support/answer@3",
                timeout=30,
            )
            # pinned references are never split
            pinned = {**body, "prompt": "support/answer@2"}
            assert _post(gw, pinned).headers["X-Tandem-Prompt"] == "support/answer@2"
            assert gw.metric("tandem_gateway_prompt_renders_total", arm="canary") >= 1

            # an experiment: each caller keeps one version; both versions are served
            sticky = ["--version", "3", "--weight", "50", "--sticky-by", "user"]
            assert main([*split, *sticky]) == 0
            prompts = lambda: gw.gateway.compiled.prompts.by_name["support/answer"]  # noqa: E731
            assert wait_until(lambda: prompts().sticky is not None, timeout=30)
            seen: dict[str, set[str]] = {}
            for i in range(40):
                for _ in range(2):
                    r = _post(gw, {**body, "user": f"customer-{i}"})
                    seen.setdefault(f"customer-{i}", set()).add(r.headers["X-Tandem-Prompt"])
            assert all(len(v) == 1 for v in seen.values())
            assert {v for s in seen.values() for v in s} == {"support/answer@2", "support/answer@3"}

            assert main([*split, "--version", "3", "--weight", "0"]) == 0  # ended
            assert wait_until(
                lambda: _post(gw, body).headers["X-Tandem-Prompt"] == "support/answer@2",
                timeout=30,
            )
        assert main([*split, "--version", "9", "--weight", "10"]) == 2  # no such version


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> str:
    """A real Hugging Face tokenizer.json (word-level, trained here), as a model ships one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["turn number one two three four five six seven eight nine ten"] * 3,
        trainers.WordLevelTrainer(special_tokens=["[UNK]"]),
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def _turns(n: int, words: int = 20) -> list[dict]:
    text = " ".join(["turn"] * words)
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {text}"} for i in range(n)
    ]


def test_truncate_oldest_keeps_the_request_within_the_window(
    ups, upstreams, tokenizer_file
) -> None:
    cfg = _config(ups)
    cfg["routes"]["support-chat"]["context"] = {
        "overflow": "truncate_oldest",
        "tokenizer": tokenizer_file,
    }
    with RunningGateway(cfg) as gw:
        # 12 turns of 101 words (106 tokens each with the message overhead): > 1000
        body = {
            "prompt": "support/answer@1",
            "variables": {"question": "Where is my refund?"},
            "messages": _turns(12, words=100),
            "max_tokens": 20,
        }
        r = _post(gw, body)
        assert r.status_code == 200, r.text
        dropped = int(r.headers["X-Tandem-Context"].split("dropped=")[1])
        sent = upstreams["short"].bodies[-1]["messages"]
        assert sent[0]["role"] == "system" and sent[-1]["content"] == "Where is my refund?"
        assert sent[1:-1] == _turns(12, words=100)[dropped:]  # the newest turns kept, in order
        assert 0 < dropped < 12
        # counted with the tokenizer: every kept message is 1 token a word (+ 5 overhead)
        counter = gw.gateway.compiled.routes["support-chat"].counter
        assert counter.name == "tokenizer:tokenizer.json"
        assert counter.count(" ".join(["turn"] * 20)) == 20
        assert gw.metric("tandem_gateway_context_overflow_total", action="truncated") == 1
        assert upstreams["long"].requests == 0

        # too long even alone: the last message is never dropped; no fallback -> 400
        huge = [{"role": "user", "content": " ".join(["turn"] * 1200)}]
        r = _post(gw, {"model": "support-chat", "messages": huge})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and "1000-token" in err["message"]
        assert "1205 tokens" in err["message"]  # 1200 words + 5 overhead, counted, not guessed
        assert upstreams["short"].requests == 1  # only the first request reached a backend


def test_overflow_goes_to_the_long_context_route(ups, upstreams) -> None:
    cfg = _config(ups)
    cfg["routes"]["support-chat"]["context_fallback"] = "support-chat-long"
    with RunningGateway(cfg) as gw:
        r = _post(gw, {"model": "support-chat", "messages": _turns(30, words=100)})
        assert r.status_code == 200, r.text
        assert r.headers["X-Tandem-Context"] == "fallback; to=support-chat-long"
        assert upstreams["short"].requests == 0 and upstreams["long"].requests == 1
        assert len(upstreams["long"].bodies[-1]["messages"]) == 30  # nothing dropped
        assert gw.metric("tandem_gateway_context_overflow_total", action="fallback") == 1


def test_the_span_names_the_prompt_and_its_version(ups, upstreams) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    with RunningGateway(_config(ups), span_exporter=exporter) as gw:
        body = {"prompt": "support/answer@1", "variables": {"question": "Hi"}}
        assert _post(gw, body).status_code == 200
        bad = {"prompt": "support/answer@1", "variables": {}}
        assert _post(gw, bad).status_code == 400
        assert wait_until(lambda: len(exporter.get_finished_spans()) == 2, timeout=30)
    for span in exporter.get_finished_spans():
        assert span.attributes["tandem.prompt.name"] == "support/answer"
        assert span.attributes["tandem.prompt.version"] == "1"
        assert "Hi" not in str(dict(span.attributes))  # no text, only the name and version


def test_a_batch_line_may_name_a_prompt(ups, upstreams) -> None:
    import asyncio

    from gateway.config import ANONYMOUS

    with RunningGateway(_config(ups)) as gw:
        line = {"prompt": "support/answer@1", "variables": {"question": "Hi"}}

        async def run() -> object:
            return await gw.gateway.call_route(ANONYMOUS, "chat.completions", line, batch=True)

        answer = asyncio.run_coroutine_threadsafe(run(), gw.server.loop).result(30)
    assert answer.status == 200
    sent = upstreams["short"].bodies[-1]
    assert sent["messages"][-1] == {"role": "user", "content": "Hi"}
    assert orjson.loads(orjson.dumps(sent))["model"] == "support-chat"
