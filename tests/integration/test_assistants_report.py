"""`tandem assistants report` on real data: a gateway serving three kinds of assistant traffic, a real
Prometheus scraping it every second, and the report read back from that Prometheus.

Developers: alice (Claude Code, Messages), bob (Codex, Responses) and carol (holds a key, never
uses it) on team platform; dave on team payments, behind an identity-aware proxy (Cursor, chat
completions), with a roster of two. The report must count what the gateway counted: adoption,
sessions, tokens and dollars per developer and team, the tool mix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from finops.localprom import LocalPrometheus
from finops.prom import PromClient
from gateway.config import hash_key
from tandem.cli import main
from tests.support.gateway_harness import RunningGateway
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration

CLAUDE_UA = "claude-cli/2.1.332 (external, sdk-cli)"
CODEX_UA = "codex_exec/0.171.0 (Debian 12.0.0; x86_64)"
CURSOR_UA = "Mozilla/5.0 Cursor/1.2.3"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    up = Upstream("local")
    keys = [
        {"id": d, "team": "platform", "sha256": hash_key(f"sk-{d}"), "developer": d}
        for d in ("alice", "bob", "carol")
    ]
    keys.append(
        {
            "id": "payments-proxy",
            "team": "payments",
            "sha256": hash_key("sk-proxy"),
            "developer_header": "X-Forwarded-Email",
        }
    )
    config = {
        "backends": {"local": {"url": "http://127.0.0.1:1/v1"}},
        "routes": {"coder": {"backends": [{"backend": "local"}]}},
        "prices": {"local": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "teams": {"payments": {"developers": ["dave@example.com", "erin@example.com"]}},
        "keys": keys,
    }
    with ServerThread(up.app) as srv:
        config["backends"]["local"]["url"] = srv.url + "/v1"
        with RunningGateway(config) as gw:
            data = tmp_path_factory.mktemp("prom") / "data"
            data.mkdir()
            prom = LocalPrometheus(
                data, scrape=[gw.url.removeprefix("http://")], scrape_interval="1s"
            )
            with prom:
                _traffic(gw)
                _wait_scraped(prom.url, gw)
                yield gw, prom.url


def _traffic(gw: RunningGateway) -> None:
    msg = {"model": "coder", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):  # alice: one Claude Code session, three requests
        r = httpx.post(
            gw.url + "/v1/messages",
            json=msg,
            headers={
                "x-api-key": "sk-alice",
                "User-Agent": CLAUDE_UA,
                "X-Claude-Code-Session-Id": "s1",
            },
        )
        assert r.status_code == 200, r.text
    for session in ("c1", "c2"):  # bob: two Codex sessions
        r = httpx.post(
            gw.url + "/v1/responses",
            json={"model": "coder", "input": "hi"},
            headers={
                "Authorization": "Bearer sk-bob",
                "User-Agent": CODEX_UA,
                "session-id": session,
            },
        )
        assert r.status_code == 200, r.text
    r = httpx.post(  # dave, through the proxy
        gw.url + "/v1/chat/completions",
        json={"model": "coder", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "Authorization": "Bearer sk-proxy",
            "User-Agent": CURSOR_UA,
            "X-Forwarded-Email": "dave@example.com",
        },
    )
    assert r.status_code == 200, r.text


def _wait_scraped(url: str, gw: RunningGateway) -> None:
    client = PromClient(url)
    deadline = time.monotonic() + 60
    want = got = None
    while time.monotonic() < deadline:
        # the gateway counts a session in a background task after the answer: read it each time
        want = gw.metric("tandem_gateway_assistant_sessions_total")
        got = client.query("sum(tandem_gateway_assistant_sessions_total)", time.time())
        if got and got[0].values[-1] == want == 4:
            return
        time.sleep(0.5)
    pytest.fail(
        f"Prometheus did not scrape the gateway's 4 assistant sessions in 60 s "
        f"(gateway: {want}, Prometheus: {got[0].values[-1] if got else None})"
    )


def _report(url: str, capsys, *extra: str) -> dict:
    assert (
        main(
            [
                "assistants",
                "report",
                "--prometheus",
                url,
                "--range",
                "1h",
                "--format",
                "json",
                *extra,
            ]
        )
        == 0
    )
    return json.loads(capsys.readouterr().out)


def test_the_report_counts_what_the_gateway_counted(scraped, capsys) -> None:
    gw, url = scraped
    rep = _report(url, capsys)
    teams = {t["team"]: t for t in rep["teams"]}
    platform, payments = teams["platform"], teams["payments"]
    assert (platform["developers_with_keys"], platform["weekly_active_developers"]) == (3, 2)
    assert platform["adoption"] == pytest.approx(2 / 3, abs=1e-4)
    assert (platform["requests"], platform["sessions"]) == (5, 3)
    assert platform["sessions_per_active_developer"] == 1.5
    assert (
        payments["developers_with_keys"],
        payments["active_developers"],
        payments["adoption"],
    ) == (2, 1, 0.5)
    devs = {d["developer"]: d for d in rep["developers"]}
    assert set(devs) == {"alice", "bob", "dave@example.com"}  # carol never came
    assert devs["alice"]["tools"] == {"claude-code": 3} and devs["alice"]["sessions"] == 1
    assert devs["bob"]["tools"] == {"codex": 2}
    for d in ("alice", "bob"):
        assert devs[d]["cost_usd"] == pytest.approx(
            gw.metric("tandem_gateway_assistant_cost_usd_total", developer=d), abs=1e-4
        )
        assert devs[d]["tokens_in"] == gw.metric(
            "tandem_gateway_assistant_tokens_total", developer=d, direction="in"
        )
    mix = {t["tool"]: (t["requests"], t["developers"]) for t in rep["tools"]}
    assert mix == {"claude-code": (3, 1), "codex": (2, 1), "cursor": (1, 1)}
    assert (
        rep["totals"]["developers_with_keys"] == 5
        and rep["totals"]["weekly_active_developers"] == 3
    )


def test_the_html_report_for_the_cto(scraped, tmp_path, capsys) -> None:
    _, url = scraped
    out = tmp_path / "assistants.html"
    assert (
        main(
            [
                "assistants",
                "report",
                "--prometheus",
                url,
                "--range",
                "1h",
                "--format",
                "html",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "Coding assistants report" in page
    assert page.count("<svg") == 3 and "claude-code" in page and "60%" in page  # 3 of 5 active


def test_a_prometheus_without_assistant_data_says_so(tmp_path, capsys) -> None:
    with LocalPrometheus(tmp_path / "empty") as prom:
        code = main(["assistants", "report", "--prometheus", prom.url, "--range", "1h"])
    assert code == 3
    assert "no coding-assistant data" in capsys.readouterr().err
