"""Windows, references and verdicts: the drift service's state, without any I/O.

Per use case the monitor keeps a bounded history of samples (to pin references from) and, per
model version and signal, a sliding window of the last `window_events` values. A use case's
reference is pinned from one version's samples: automatically from the serving version's first
`reference_events` samples, again when the rollout controller promotes a version (its own samples
during the rollout and after), or by an operator (`POST /references/<use case>`). Every version
is tested against the use case's reference, so a canary that answers differently from the
champion's reference shows as drift on the canary's version.

Each signal is tested whenever new values arrived (the benchmark: after every value; the service:
once a tick) once its window is full. The target false alarms per test come from the use case's
`false_alarms_per_30d`, the reference's event rate (a test per value, the most there can be) and
the number of signals (detectors.alpha_for); each detector turns that into its line by simulating
its own null stream (detectors.calibrate). A detection holds until a whole new window tests
clean.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from drift.detectors import (
    SECONDS_30D,
    EmbeddingMMD,
    LookupTracker,
    MMDTracker,
    NumericKS,
    RateTest,
    Result,
    alpha_for,
)
from vocabulary.monitoring import Monitoring

KINDS = {
    "embedding": "embedding",
    "prompt_length": "numeric",
    "response_length": "numeric",
    "latency": "numeric",
    "finish_reason": "categorical",
    "refusal": "categorical",
    "feedback": "categorical",
}
_FIELD = {
    "embedding": "embedding",
    "prompt_length": "prompt_tokens",
    "response_length": "completion_tokens",
    "latency": "latency_s",
    "finish_reason": "finish_reason",
    "refusal": "outcome",
}
HISTORY_EVENTS = 60_000  # per use case: what a reference can be pinned from
SCORES_KEPT = 2_000  # per version and signal: the report's plot


def signal_names(m: Monitoring) -> list[str]:
    return [*m.signals, *(f"feature:{f}" for f in m.features)]


def value_of(event: dict[str, Any], signal: str) -> Any:
    """The value `event` carries for `signal`, or None."""
    if signal == "feedback":
        return event.get("rating") if event.get("kind") == "feedback" else None
    if event.get("kind", "answer") != "answer":
        return None
    if signal.startswith("feature:"):
        feats = event.get("features")
        return feats.get(signal[8:]) if isinstance(feats, dict) else None
    return event.get(_FIELD[signal])


def kind_of(signal: str, values: Iterable[Any]) -> str:
    if signal in KINDS:
        return KINDS[signal]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return "numeric" if numeric else "categorical"


@dataclass
class UseCase:
    name: str
    team: str
    monitoring: Monitoring


@dataclass
class Reference:
    version: str
    pinned_at: float
    source: str  # auto | promotion | operator
    start: float
    end: float
    events: int
    detectors: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # signal -> why it has no detector

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pinned_at": self.pinned_at,
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "events": self.events,
            "signals": {
                s: {
                    "threshold": round(d.threshold, 6),
                    "alpha": d.alpha,
                    **({"calibration": d.calibration.to_dict()} if d.calibration else {}),
                }
                for s, d in self.detectors.items()
            },
            "skipped": self.skipped,
        }


@dataclass
class Episode:
    """One version's one signal: its latest test and the current drift episode, if any."""

    score: float = 0.0
    detected: bool = False
    since: float | None = None  # when the score first rose past half the line, this episode
    detected_at: float | None = None
    clean: int = 0  # values tested clean since the detection
    evidence: dict[str, Any] = field(default_factory=dict)
    scores: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))


@dataclass
class Detection:
    use_case: str
    team: str
    model_version: str
    arm: str
    signal: str
    score: float
    since: float
    detected_at: float
    evidence: dict[str, Any]
    reference: dict[str, Any]
    vectors: list[list[float]] = field(default_factory=list)  # embeddings: the examples'

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case,
            "team": self.team,
            "model_version": self.model_version,
            "arm": self.arm,
            "signal": self.signal,
            "score": round(self.score, 3),
            "since": self.since,
            "detected_at": self.detected_at,
            "evidence": self.evidence,
            "reference": self.reference,
        }


class Window:
    def __init__(self, size: int) -> None:
        self.values: deque[Any] = deque(maxlen=size)
        self.times: deque[float] = deque(maxlen=size)
        self.ids: deque[str | None] = deque(maxlen=size)
        self.new = 0
        # embeddings: the window's MMD, kept up to date; numbers: their reference lookups
        self.tracker: MMDTracker | LookupTracker | None = None

    def add(self, t: float, value: Any, rid: str | None) -> None:
        self.values.append(value)
        self.times.append(t)
        self.ids.append(rid)
        self.new += 1


class Monitor:
    def __init__(
        self,
        use_cases: Iterable[UseCase],
        *,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        seed: int = 0,
    ) -> None:
        self.use_cases = {u.name: u for u in use_cases}
        self.clock = clock
        self.seed = seed
        self.history: dict[str, deque[dict[str, Any]]] = {
            u: deque(maxlen=HISTORY_EVENTS) for u in self.use_cases
        }
        self.windows: dict[tuple[str, str, str], Window] = {}
        self.arms: dict[tuple[str, str], str] = {}  # (use case, version) -> last arm seen
        self.references: dict[str, Reference] = {}
        self.episodes: dict[tuple[str, str, str], Episode] = {}
        self.cpu_s = 0.0
        self.events = 0
        r = self.registry = registry or CollectorRegistry()
        labels = ["team", "use_case", "model_version", "signal"]
        self.m_score = Gauge(
            "tandem_drift_score",
            "Latest drift test statistic over its calibrated threshold (1: the line)",
            labels,
            registry=r,
        )
        self.m_detected = Gauge(
            "tandem_drift_detected", "1 while the signal drifts from the reference", labels,
            registry=r,
        )  # fmt: skip
        self.m_since = Gauge(
            "tandem_drift_since_timestamp_seconds",
            "When the current drift episode began (unix time; absent when none)",
            labels,
            registry=r,
        )
        self.m_reference = Gauge(
            "tandem_drift_reference_pinned_timestamp_seconds",
            "When the use case's reference was pinned, by the version it was pinned from",
            ["team", "use_case", "model_version", "source"],
            registry=r,
        )
        self.m_samples = PromCounter(
            "tandem_drift_samples", "Samples received from the gateways",
            ["team", "use_case", "model_version"], registry=r,
        )  # fmt: skip
        self.m_cpu = PromCounter(
            "tandem_drift_cpu_seconds", "CPU seconds spent testing (calibration included)",
            registry=r,
        )  # fmt: skip

    # -- samples ------------------------------------------------------------------------------
    def ingest(self, event: dict[str, Any]) -> None:
        uc = self.use_cases.get(str(event.get("use_case")))
        if uc is None:
            return
        version = str(event.get("model_version") or "unknown")
        self.events += 1
        self.history[uc.name].append(event)
        self.arms[(uc.name, version)] = str(event.get("arm") or "stable")
        self.m_samples.labels(uc.team, uc.name, version).inc()
        t = float(event.get("t") or self.clock())
        rid = event.get("response_id")
        for signal in signal_names(uc.monitoring):
            v = value_of(event, signal)
            if v is None:
                continue
            key = (uc.name, version, signal)
            w = self.windows.get(key)
            if w is None:
                w = self.windows[key] = Window(uc.monitoring.window_events)
            w.add(t, v, rid)

    # -- references ---------------------------------------------------------------------------
    def candidate_version(self, use_case: str) -> str | None:
        """The version a reference is pinned from automatically: the stable arm's commonest."""
        counts = Counter(
            str(e.get("model_version") or "unknown")
            for e in self.history[use_case]
            if e.get("arm", "stable") == "stable" and e.get("kind", "answer") == "answer"
        )
        return counts.most_common(1)[0][0] if counts else None

    def pin(
        self,
        use_case: str,
        version: str | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        source: str = "operator",
        min_events: int | None = None,
    ) -> Reference | None:
        """Pin `use_case`'s reference from `version`'s samples in [start, end] (default: all
        kept). None when there are fewer than `min_events` answers (default reference_events)."""
        uc = self.use_cases[use_case]
        m = uc.monitoring
        version = version or self.candidate_version(use_case)
        if version is None:
            return None
        lo, hi = start if start is not None else 0.0, end if end is not None else float("inf")
        events = [
            e
            for e in self.history[use_case]
            if str(e.get("model_version") or "unknown") == version and lo <= float(e["t"]) <= hi
        ]
        answers = [e for e in events if e.get("kind", "answer") == "answer"]
        need = m.reference_events if min_events is None else min_events
        if len(answers) < need:
            return None
        t0 = time.process_time()
        ts = [float(e["t"]) for e in answers]
        span = max(1.0, max(ts) - min(ts))
        ref = Reference(version, self.clock(), source, min(ts), max(ts), len(answers))
        signals = signal_names(m)
        # at most one test per value: the values expected in 30 days at the reference's rate
        tests = SECONDS_30D * (len(answers) / span)
        rate = alpha_for(m.false_alarms_per_30d, tests, len(signals))  # alarms per test
        for signal in signals:
            values = [v for e in events if (v := value_of(e, signal)) is not None]
            if len(values) < 2 * min(m.window_events, 100):
                ref.skipped[signal] = f"{len(values)} values in the reference"
                continue
            try:
                ref.detectors[signal] = self._detector(signal, values, m.window_events, rate)
            except ValueError as exc:
                ref.skipped[signal] = str(exc)
        self.references[use_case] = ref
        for key in [k for k in self.episodes if k[0] == use_case]:
            del self.episodes[key]  # a new reference starts every verdict afresh
        for (u, _v, _s), w in self.windows.items():
            if u == use_case:
                w.new = 0
        old = {k for k in self.m_reference._metrics if k[1] == use_case}
        for k in old:
            self.m_reference.remove(*k)
        self.m_reference.labels(uc.team, use_case, version, source).set(ref.pinned_at)
        self._cpu(time.process_time() - t0)
        return ref

    def _detector(self, signal: str, values: list[Any], window: int, rate: float) -> Any:
        """`signal`'s detector on the reference `values`, its line calibrated for `rate` false
        alarms per test with a test on every value."""
        kind = kind_of(signal, values)
        seed = self.seed
        if kind == "embedding":
            x = np.asarray(values, dtype=np.float32)
            return EmbeddingMMD(x, window, rate, seed=seed, rate=rate)
        if kind == "numeric":
            return NumericKS([float(v) for v in values], window, rate, rate=rate, seed=seed)
        return RateTest(values, window, rate, rate=rate, seed=seed)

    # -- tests --------------------------------------------------------------------------------
    def evaluate(self) -> list[Detection]:
        """Test every full window with enough new values; the detections that began now."""
        began: list[Detection] = []
        t0 = time.process_time()
        for (use_case, version, signal), w in self.windows.items():
            ref = self.references.get(use_case)
            if ref is None or signal not in ref.detectors:
                continue
            m = self.use_cases[use_case].monitoring
            if len(w.values) < m.window_events or w.new < 1:
                continue
            tested = w.new
            w.new = 0
            det = ref.detectors[signal]
            if isinstance(det, EmbeddingMMD):
                result = self._mmd(w, det, tested)
            elif isinstance(det, NumericKS):
                result = self._numeric(w, det, tested)
            else:
                result = det.test(list(w.values))
            d = self._record(use_case, version, signal, w, result, tested, ref)
            if d is not None:
                began.append(d)
        self._cpu(time.process_time() - t0)
        return began

    @staticmethod
    def _numeric(w: Window, det: NumericKS, new: int) -> Result:
        if not isinstance(w.tracker, LookupTracker) or w.tracker.det is not det:
            w.tracker = LookupTracker(det)  # first test against this reference
            new = len(w.values)
        n = len(w.values)
        w.tracker.add([w.values[i] for i in range(n - min(new, n), n)])
        return w.tracker.test(list(w.values))

    @staticmethod
    def _mmd(w: Window, det: EmbeddingMMD, new: int) -> Result:
        if not isinstance(w.tracker, MMDTracker) or w.tracker.det is not det:
            w.tracker = MMDTracker(det)  # first test against this reference
            new = len(w.values)
        n = len(w.values)
        last = range(n - min(new, n), n)
        values, ids, times = ([d[i] for i in last] for d in (w.values, w.ids, w.times))
        w.tracker.add(np.asarray(values, dtype=np.float32), list(zip(ids, times, strict=True)))
        result = w.tracker.test()
        tags = w.tracker.tags
        slots = list(result.evidence["examples"])
        if result.detected:  # the alert's examples (only a detection that begins uses them)
            result.evidence["_vectors"] = [
                w.tracker.x[i].tolist() for i in slots if tags[i] is not None
            ]
        result.evidence["examples"] = [
            {"response_id": tags[i][0], "t": tags[i][1]}
            for i in result.evidence.pop("examples")
            if tags[i] is not None
        ]
        return result

    def _record(
        self,
        use_case: str,
        version: str,
        signal: str,
        w: Window,
        result: Result,
        tested: int,
        ref: Reference,
    ) -> Detection | None:
        uc = self.use_cases[use_case]
        key = (use_case, version, signal)
        ep = self.episodes.get(key)
        if ep is None:
            ep = self.episodes[key] = Episode()
        now = w.times[-1]
        ep.score = result.score
        ep.scores.append((now, result.score))
        evidence = dict(result.evidence)
        vectors = evidence.pop("_vectors", None)  # kept out of the status and the alert
        ep.evidence = evidence
        labels = (uc.team, use_case, version, signal)
        self.m_score.labels(*labels).set(result.score)
        if ep.since is None and result.score > 0.5:
            ep.since = now
        elif not ep.detected and result.score <= 0.5:
            ep.since = None
        began = None
        if result.detected:
            ep.clean = 0
            if not ep.detected:
                ep.detected, ep.detected_at = True, now
                ep.since = ep.since or now
                began = Detection(
                    use_case, uc.team, version, self.arms.get((use_case, version), "stable"),
                    signal, result.score, ep.since, now, evidence, ref.to_dict(), vectors or [],
                )  # fmt: skip
        elif ep.detected:
            ep.clean += tested
            if ep.clean >= uc.monitoring.window_events:
                ep.detected, ep.detected_at, ep.since, ep.clean = False, None, None, 0
        self.m_detected.labels(*labels).set(1.0 if ep.detected else 0.0)
        if ep.detected and ep.since is not None:
            self.m_since.labels(*labels).set(ep.since)
        else:
            with contextlib.suppress(KeyError):
                self.m_since.remove(*labels)
        return began

    def _cpu(self, seconds: float) -> None:
        self.cpu_s += seconds
        self.m_cpu.inc(seconds)

    # -- views --------------------------------------------------------------------------------
    def status(self, use_case: str | None = None) -> dict[str, Any]:
        """Everything `tandem drift report` shows: references, per version and signal the latest
        score, the episode and the score's history."""
        out: dict[str, Any] = {"use_cases": {}}
        for name, uc in self.use_cases.items():
            if use_case is not None and name != use_case:
                continue
            ref = self.references.get(name)
            versions: dict[str, Any] = {}
            for (u, version, signal), ep in sorted(self.episodes.items()):
                if u != name:
                    continue
                versions.setdefault(
                    version, {"arm": self.arms.get((u, version), "stable"), "signals": {}}
                )["signals"][signal] = {
                    "score": round(ep.score, 4),
                    "detected": ep.detected,
                    "since": ep.since,
                    "detected_at": ep.detected_at,
                    "evidence": ep.evidence,
                    "history": [[round(t, 3), round(s, 4)] for t, s in ep.scores],
                }
            out["use_cases"][name] = {
                "team": uc.team,
                "reference": ref.to_dict() if ref else None,
                "samples": len(self.history[name]),
                "versions": versions,
            }
        return out
