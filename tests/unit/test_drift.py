"""Drift's pure parts: the detectors and their calibration, the monitor's windows, references and
episodes, what the service does about a detection (canary, recently promoted, champion), the
`monitoring:` section's keys and errors, the signal log, the report and the alert rules."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from drift import rules
from drift.detectors import EmbeddingMMD, MMDTracker, NumericKS, RateTest, alpha_for
from drift.monitor import Monitor, UseCase
from drift.report import render_html, render_json, render_text
from drift.service import DriftService, HttpError, load_use_cases
from drift.signals import (
    Feedback,
    RouteMonitor,
    Sampler,
    SignalLog,
    outcome,
    parse_feedback,
)
from vocabulary.errors import ConfigError
from vocabulary.monitoring import DEFAULT_SIGNALS, Monitoring
from vocabulary.usecase import load_use_case

REPO = Path(__file__).resolve().parents[2]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _topics(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Embeddings around a few topic centres (the shape of real prompt embeddings)."""
    pick = rng.integers(0, len(centres), n)
    return _unit(centres[pick] + 0.6 * rng.normal(size=(n, centres.shape[1])))


# -- detectors --------------------------------------------------------------------------------------


def test_mmd_is_quiet_on_the_reference_distribution_and_fires_on_a_new_topic() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 64))
    new = rng.normal(size=(1, 64))
    det = EmbeddingMMD(_topics(rng, 3000, centres), 200, alpha=1e-4)
    quiet = [det.test(_topics(rng, 200, centres)).score for _ in range(30)]
    assert max(quiet) < 1.0
    shifted = np.concatenate([_topics(rng, 140, centres), _topics(rng, 60, new)])  # 30 %
    result = det.test(shifted)
    assert result.detected and result.score > 1.0
    assert len(result.evidence["examples"]) == 3


def test_the_tracker_keeps_the_same_statistic_as_a_full_test() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 32))
    det = EmbeddingMMD(_topics(rng, 1500, centres), 100, alpha=1e-3)
    tracker = MMDTracker(det)
    stream = _topics(rng, 430, centres)
    for i in range(0, 430, 37):
        tracker.add(stream[i : i + 37], [(str(j), float(j)) for j in range(i, min(i + 37, 430))])
    assert tracker.full
    full = det.test(stream[-100:])
    assert tracker.test().statistic == pytest.approx(full.statistic, rel=1e-4)


def test_a_lower_false_alarm_target_raises_every_threshold() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=2000)
    lax, strict = NumericKS(ref, 200, 1e-2), NumericKS(ref, 200, 1e-6)
    assert strict.threshold > lax.threshold
    cats = ["a"] * 900 + ["b"] * 100
    assert RateTest(cats, 200, 1e-6).threshold > RateTest(cats, 200, 1e-2).threshold
    assert alpha_for(1.0, 1000, 2) == pytest.approx(1 / 2000)
    assert alpha_for(0.1, 1000, 2) < alpha_for(1.0, 1000, 2)


def test_ks_reports_how_far_and_rate_test_names_the_moved_category() -> None:
    rng = np.random.default_rng(3)
    ks = NumericKS(rng.normal(10, 1, 2000), 300, 1e-5)
    r = ks.test(rng.normal(11, 1, 300))
    assert r.detected and r.evidence["window_median"] > r.evidence["reference_median"]
    assert {"ks", "psi", "wasserstein"} <= set(r.evidence)
    rt = RateTest(["answer"] * 950 + ["refusal"] * 50, 300, 1e-5)
    moved = rt.test(["answer"] * 240 + ["refusal"] * 60)
    assert moved.detected and moved.evidence["category"] == "refusal"
    assert not rt.test(["answer"] * 285 + ["refusal"] * 15).detected


# -- the monitor ------------------------------------------------------------------------------------


def _monitor(**monitoring) -> Monitor:
    m = Monitoring(**{"signals": ["prompt_length", "refusal"], "window_events": 50,
                      "reference_events": 200, **monitoring})  # fmt: skip
    return Monitor([UseCase("uc", "team-a", m)])


def _feed(mon: Monitor, n: int, t0: float, version: str = "1", long: float = 0.3, arm="stable"):
    rng = random.Random(int(t0))
    for i in range(n):
        tokens = rng.randint(40, 60) if rng.random() < long else rng.randint(3, 8)
        mon.ingest(
            {"t": t0 + i, "use_case": "uc", "model_version": version, "arm": arm,
             "prompt_tokens": tokens, "outcome": "answer", "response_id": f"r{t0 + i}"}
        )  # fmt: skip
    return t0 + n


def test_a_reference_is_pinned_only_from_enough_samples_and_then_tests_every_version() -> None:
    mon = _monitor()
    t = _feed(mon, 150, 0)
    assert mon.pin("uc", "1", source="auto") is None  # reference_events: 200
    t = _feed(mon, 100, t)
    ref = mon.pin("uc", "1", source="auto")
    assert ref is not None and ref.events == 250
    assert set(ref.detectors) == {"prompt_length", "refusal"}
    _feed(mon, 60, t, version="2", arm="canary")
    mon.evaluate()
    assert "2" in mon.status()["use_cases"]["uc"]["versions"]


def test_a_detection_begins_once_with_its_evidence_and_clears_after_a_clean_window() -> None:
    mon = _monitor()
    t = _feed(mon, 300, 0)
    mon.pin("uc", "1", source="auto")
    begun = []
    for _ in range(10):
        t = _feed(mon, 10, t)
        begun += mon.evaluate()
    assert not begun
    for _ in range(12):
        t = _feed(mon, 10, t, long=1.0)
        begun += mon.evaluate()
    assert len(begun) == 1
    d = begun[0]
    assert d.signal == "prompt_length" and d.score > 1 and d.since <= d.detected_at
    assert d.team == "team-a" and d.evidence["window_median"] > d.evidence["reference_median"]
    for _ in range(20):
        t = _feed(mon, 10, t)
        mon.evaluate()
    assert not mon.status()["use_cases"]["uc"]["versions"]["1"]["signals"]["prompt_length"][
        "detected"
    ]


def test_window_events_sets_how_many_samples_a_test_needs() -> None:
    for window, needed in ((50, 50), (100, 100)):
        mon = _monitor(window_events=window, reference_events=2 * window + 200)
        t = _feed(mon, 2 * window + 200, 0)
        mon.pin("uc", "1")
        mon.windows.clear()
        t = _feed(mon, needed - 1, t)
        mon.evaluate()
        assert not mon.episodes
        _feed(mon, 1, t)
        mon.evaluate()
        assert mon.episodes


# -- what the service does --------------------------------------------------------------------------


def _service(rollout: dict | None, receivers: dict | None = None, recent_s: float = 3600):
    m = Monitoring(signals=["prompt_length"], window_events=50, reference_events=200,
                   recent_s=recent_s, receivers=receivers or {})  # fmt: skip
    posts: list[tuple[str, dict]] = []

    def post(url, body):
        posts.append((url, body))
        if url.endswith("/rollback") and rollout and rollout["phase"] == "promoted":
            raise HttpError(409, "no active rollout")

    svc = DriftService(Monitor([UseCase("uc", "team-a", m)]), [], "http://ctl", post=post,
                       clock=lambda: 10_000.0)  # fmt: skip
    if rollout is not None:
        svc.rollouts = {"uc": rollout}
    return svc, posts


def _detection(svc: DriftService, version: str, arm: str = "stable"):
    mon = svc.monitor
    t = _feed(mon, 250, 0, version="1")
    mon.pin("uc", "1")
    t = _feed(mon, 100, t, version=version, long=1.0, arm=arm)
    found = mon.evaluate()
    assert found
    return found[0]


ROLLOUT = {"use_case": "uc", "id": "r1", "plan": {"stable_version": "1", "canary_version": "2"}}
HOOKS = {"webhook": "http://hooks/alert", "ticket_webhook": "http://hooks/ticket"}


def test_a_drifting_canary_is_rolled_back_through_the_controller() -> None:
    svc, posts = _service({**ROLLOUT, "phase": "progressing"}, HOOKS)
    record = svc.act(_detection(svc, "2", arm="canary"))
    assert record["role"] == "canary" and record["actions"] == ["rollback", "alert"]
    assert posts[0][0] == "http://ctl/rollouts/uc/rollback"
    assert "drift on prompt_length" in posts[0][1]["reason"]
    assert not [u for u, _ in posts if u.endswith("/ticket")]


def test_a_recently_promoted_version_is_rolled_back_or_the_alert_says_how() -> None:
    promoted = {**ROLLOUT, "phase": "promoted", "marks": {"finished_at": 9_000.0}}
    svc, posts = _service(promoted, HOOKS, recent_s=3600)
    record = svc.act(_detection(svc, "2"))
    assert record["role"] == "recent" and "rollback_failed" in record["actions"]
    assert "deploy version 1 again" in record["advice"]
    svc, posts = _service(promoted, HOOKS, recent_s=600)  # promoted 1,000 s ago: a champion now
    record = svc.act(_detection(svc, "2"))
    assert record["role"] == "champion" and record["actions"] == ["alert", "ticket"]


def test_a_drifting_champion_alerts_with_evidence_and_a_ticket_and_is_not_rolled_back() -> None:
    svc, posts = _service(None, HOOKS)
    record = svc.act(_detection(svc, "1"))
    assert record["role"] == "champion" and record["actions"] == ["alert", "ticket"]
    (alert_url, alert), (ticket_url, ticket) = posts
    assert alert_url == HOOKS["webhook"] and alert["signal"] == "prompt_length"
    assert alert["evidence"]["ks"] > 0 and alert["since"] and alert["reference"]["version"] == "1"
    assert ticket_url == HOOKS["ticket_webhook"] and ticket["kind"] == "retraining"
    svc, posts = _service(None)  # no receivers: nothing is posted, the action is still recorded
    assert svc.act(_detection(svc, "1"))["actions"] == [] and posts == []


# -- the section ------------------------------------------------------------------------------------


def test_the_shipped_chatbot_is_monitored() -> None:
    uc = load_use_case(REPO / "stacks" / "usecases" / "support-chatbot.yaml")
    assert uc.monitoring is not None and uc.monitoring.sample_rate == 0.1
    assert "embedding" in uc.monitoring.signals


@pytest.mark.parametrize(
    ("monitoring", "says"),
    [
        ({"sample_rate": 0}, "monitoring.sample_rate"),
        ({"signals": ["tone"]}, "monitoring.signals[0]"),
        ({"window_events": 400, "reference_events": 500}, "at least twice window_events"),
        ({"receivers": {"webhook": "hooks:80"}}, "not an http(s) URL"),
        ({"windows": 3}, "unknown key 'windows'"),
    ],
)
def test_a_bad_monitoring_section_names_the_field(tmp_path, monitoring, says) -> None:
    doc = yaml.safe_load((REPO / "stacks" / "usecases" / "support-chatbot.yaml").read_text())
    doc["monitoring"] = monitoring
    path = tmp_path / "uc.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as exc:
        load_use_case(path)
    assert says in str(exc.value)


def test_monitoring_needs_a_gateway(tmp_path) -> None:
    doc = yaml.safe_load((REPO / "stacks" / "usecases" / "support-chatbot.yaml").read_text())
    for key in ("gateway", "rollout", "features"):
        doc.pop(key)
    path = tmp_path / "uc.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="needs a `gateway:` section"):
        load_use_case(path)


def test_the_service_config_lists_errors_by_path(tmp_path) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text(
        "use_cases: [{name: a, team: t, monitoring: {false_alarms_per_30d: 0}}, {x: 1}]"
    )
    with pytest.raises(ConfigError) as exc:
        load_use_cases(str(path))
    assert "use_cases[0].monitoring.false_alarms_per_30d" in str(exc.value)
    assert "use_cases[1]: needs name, team and monitoring" in str(exc.value)


# -- the gateway's side -----------------------------------------------------------------------------


ANSWER = {"id": "cmpl-1", "choices": [{"finish_reason": "stop", "message": {"content": "Sure."}}]}


def _observe(sampler: Sampler, monitor: RouteMonitor, **kw) -> None:
    sampler.observe(monitor, model_version="3", arm="canary", endpoint="chat.completions",
                    latency_s=0.2, tokens_in=12, tokens_out=30, answer=ANSWER, **kw)  # fmt: skip


def test_a_sample_holds_the_listed_signals_and_never_text() -> None:
    log = SignalLog(100)
    sampler = Sampler(log)
    few = RouteMonitor("uc", 1.0, frozenset({"prompt_length"}), ("plan",))
    _observe(sampler, few, embedding=[0.5, 0.5], body={"features": {"plan": "pro", "pii": "x"}})
    all_ = RouteMonitor("uc", 1.0, frozenset(DEFAULT_SIGNALS) | {"latency"})
    _observe(sampler, all_, embedding=np.array([0.123456, 0.5]))
    (a, b), last = log.after(0)
    assert last == 2
    assert set(a) == {"t", "kind", "use_case", "model_version", "arm", "endpoint",
                      "prompt_tokens", "features", "seq"}  # fmt: skip
    assert a["features"] == {"plan": "pro"}
    assert b["finish_reason"] == "stop" and b["outcome"] == "answer" and b["latency_s"] == 0.2
    assert b["embedding"] == [0.1235, 0.5] and b["completion_tokens"] == 30
    assert "Sure" not in str(a) + str(b)


def test_the_sample_rate_is_the_share_sampled_and_the_log_is_bounded() -> None:
    sampler = Sampler(SignalLog(100), random.Random(7))
    monitor = RouteMonitor("uc", 0.1)
    hits = sum(sampler.wants(monitor) for _ in range(20_000))
    assert 1700 < hits < 2300
    log = SignalLog(100)
    for i in range(250):
        log.append({"i": i})
    events, last = log.after(0)
    assert len(events) == 100 and events[0]["i"] == 150 and last == 250 and log.dropped == 150
    assert log.after(250) == ([], 250)


def test_outcome_and_feedback() -> None:
    assert outcome("") == "empty" and outcome("I'm sorry, I can't help") == "refusal"
    assert outcome("Your card arrives Monday") == "answer"
    fb = Feedback(max_ids=2)
    for rid in ("a", "b", "c"):
        fb.remember(rid, "uc", "3", "stable")
    assert fb.lookup("a") is None and fb.lookup("c") == ("uc", "3", "stable")
    assert parse_feedback({"response_id": "c", "rating": -1}) == ("c", "down")
    for bad, says in (
        ({"rating": "up"}, "response_id"),
        ({"response_id": "c", "rating": 5}, "rating"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_feedback(bad)


# -- report and rules -------------------------------------------------------------------------------


def test_the_report_names_what_moved_since_when_and_plots_it() -> None:
    mon = _monitor()
    t = _feed(mon, 300, 0)
    mon.pin("uc", "1")
    for _ in range(15):
        t = _feed(mon, 10, t, long=1.0)
        mon.evaluate()
    status = {**mon.status("uc"), "actions": []}
    text = render_text(status, "uc")
    assert "DRIFT" in text and "prompt_length" in text and "reference: version 1" in text
    doc = __import__("json").loads(render_json(status, "uc"))
    assert doc["signals"][0]["detected"] and "history" not in doc["signals"][0]
    page = render_html(status, "uc")
    assert page.count("<svg") == 1 and "<polyline" in page and "stroke-dasharray" in page


def test_the_drift_alerts_under_promtool(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found: apt-get install -y prometheus")
    (tmp_path / "rules.yaml").write_text(rules.rule_file(annotations=False))
    (tmp_path / "full.yaml").write_text(rules.rule_file())
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(rules.unit_tests("rules.yaml")))
    for args in (
        ("check", "rules", "rules.yaml", "full.yaml"),
        ("test", "rules", "tests.yaml"),
    ):
        proc = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("stack", "embedding"), [("dev", True), ("prod", False)])
def test_the_plan_says_what_is_sampled_and_that_embeddings_need_a_semantic_cache(
    stack, embedding
) -> None:
    from tandem.stack import load

    (check,) = [c for c in load(stack).checks["support-chatbot"] if c.check == "monitoring"]
    assert check.ok and "samples 10% of answers" in check.message
    assert ("embedding not sampled" not in check.message) == embedding


def test_an_embedding_drift_alert_carries_the_nearest_cached_questions(monkeypatch) -> None:
    import drift.service as service

    rng = np.random.default_rng(5)
    centres, new = rng.normal(size=(6, 32)), rng.normal(size=(1, 32))
    m = Monitoring(signals=["embedding"], window_events=50, reference_events=200,
                   receivers={"webhook": "http://hooks/alert"})  # fmt: skip
    posts: list[tuple[str, dict]] = []
    svc = DriftService(Monitor([UseCase("uc", "t", m)]), ["http://gw:8080"], None,
                       post=lambda url, body: posts.append((url, body)))  # fmt: skip
    asked = []

    def fake_http(method, url, body=None, timeout=10.0):
        asked.append((url, body))
        return {"nearest": [[{"question": "how do I bake bread", "similarity": 0.8}]]}

    monkeypatch.setattr(service, "http_json", fake_http)
    for i, v in enumerate(_topics(rng, 400, centres)):
        svc.monitor.ingest({"t": i, "use_case": "uc", "model_version": "1", "embedding": v})
    svc.monitor.pin("uc", "1")
    found = []
    for i, v in enumerate(_topics(rng, 100, new), start=400):
        svc.monitor.ingest({"t": i, "use_case": "uc", "model_version": "1", "embedding": v})
        found += svc.monitor.evaluate()
    assert found and found[0].signal == "embedding" and len(found[0].vectors) == 3
    record = svc.act(found[0])
    assert asked[0][0] == "http://gw:8080/drift/nearest" and len(asked[0][1]["vectors"]) == 3
    assert record["evidence"]["nearest_cached_questions"][0][0]["question"] == "how do I bake bread"
    assert "_vectors" not in record["evidence"] and "vectors" not in posts[0][1]
