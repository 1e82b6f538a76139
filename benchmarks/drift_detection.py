"""Drift detection delay, false alarms and CPU: Tandem's detectors (drift/monitor.py, the code the
drift service runs) against Evidently's data drift preset on hourly windows and alibi-detect's
online MMD, on the same streams (docs/benchmarks.md, "Drift detection").

    python benchmarks/drift_detection.py --output json                 built-in streams, Tandem only
    python benchmarks/drift_detection.py --peers --output json        ... and the peers
    python benchmarks/drift_detection.py --stream FILE.jsonl          one given stream
    python benchmarks/drift_detection.py --peers --matched ...        ... and Tandem at the peers'
                                                                      false-alarm rate

A stream is JSONL, one event a line: {"t": seconds, "use_case": ..., "prompt": ..., "features":
{...}}; its sidecar `FILE.onset.json` holds {"onset_s": seconds} or {"onset_s": null} (stationary);
the first `--reference-s` seconds are the reference. Prompts are embedded once with the semantic
cache's MiniLM (embedding/minilm.py: in production the gateway reuses the cache's embedding), so
the embedding's cost is not the detector's and is not counted in `cpu_ms_per_event`; numeric
features are tested per feature, other features as categories.

Built-in streams (real text from $TANDEM_SHARED_DIR/data/semcache, never copied; a synthetic
sensor stream for the manufacturing scenario), each at 1 and 10 requests/s in accelerated time:
- topic-shift-30: Banking77 support questions; at the onset 30 % of traffic becomes Quora questions;
- gradual-mix: the Quora share goes 10 % -> 30 % -> 100 % (an hour each; delay from the 10 % step);
- sensor-mean-shift / sensor-variance-shift: temperature, vibration, pressure of a machine; the
  vibration mean rises by 0.5 sd / the pressure's sd grows by half (all traffic);
- output-length-30: 30 % of answers twice as long (`features.response_tokens`);
- stationary-text / stationary-sensor: nothing changes, for false alarms per 30 days.
Each shift stream is repeated `--reps` times with the onset drawn uniformly 10-70 minutes after the
reference hour; a repetition ends at the first alarm after the onset or 3 hours after it.

Matched false-alarm rate: alibi-detect cannot be configured to Tandem's target (it refuses an
expected run time beyond half its bootstraps: 1,000 events), so `--matched` also runs Tandem's
monitor calibrated to alibi-detect's configured rate on each stream (`alibi_rate_per_30d`: 2,592
false alarms per 30 days per detector at 1 request/s, ten times that at 10/s), with alibi-detect's
window of 100 (`tandem@alibi-rate`) and with Tandem's default 300 (`tandem@alibi-rate/w300`);
`--fa-targets 1,30,300,3000` adds Tandem at each target (`tandem@fa<N>`, `/w<N>` with
`--fa-windows`): the delay-vs-false-alarm trade-off.

Output (`--output json`), the interface other tools read: `streams[]` with `name`, `rate_rps`,
`detector` (`tandem`, `tandem@...`, `evidently`, `alibi-detect`), `detected` (every repetition
detected), `delay_p50_s`, `delay_p95_s`, `false_alarms_per_30d` (measured: stationary streams:
alarms scaled to 30 days; shift streams: alarms before the onset, scaled by the stationary time
they had), `cpu_ms_per_event`, plus `reps`, `stationary_hours`, `notes`,
`false_alarm_target_per_30d` (what the detector was configured for: Tandem's target,
alibi-detect's capped ERT as a rate; null for Evidently, which has none) and `window_events`
(null for Evidently: hourly windows).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # as the drift service runs (tandem drift serve)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drift.monitor import Monitor, UseCase  # noqa: E402
from vocabulary.monitoring import Monitoring  # noqa: E402

SHARED = Path(os.environ.get("TANDEM_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data" / "semcache"
PEERS_PY = ROOT / ".venv-drift-peers" / "bin" / "python"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tandem-drift-bench"
DAY = 86400.0
SECONDS_30D = 30 * DAY
WINDOW = 300  # Tandem's window_events (its default)
AFTER_ONSET_S = 3 * 3600.0
# alibi-detect's MMDDriftOnline as drift_peers.py configures it: thresholds from ALIBI_BOOTSTRAPS
# simulated runs, so an expected run time (ERT, events between false alarms) of at most half of
# them, on windows of ALIBI_WINDOW events
ALIBI_BOOTSTRAPS = 2000
ALIBI_WINDOW = 100


def alibi_ert(rate: float, fa_per_30d: float, bootstraps: int = ALIBI_BOOTSTRAPS) -> float:
    """The ERT (events) drift_peers.py gives one alibi-detect detector asked for `fa_per_30d`
    false alarms per 30 days at `rate` requests/s: the target's ERT, capped at what its
    bootstraps allow (it refuses more)."""
    return min(SECONDS_30D * rate / fa_per_30d, bootstraps / 2)


def alibi_rate_per_30d(rate: float, groups: int, bootstraps: int = ALIBI_BOOTSTRAPS) -> float:
    """The false alarms per 30 days alibi-detect is configured to raise on a stream: each of its
    `groups` detectors (embeddings, numeric features) is asked for 1 / groups of Tandem's target
    of 1, gets the capped ERT, and an alarm from any counts, so the rates add up."""
    ert = alibi_ert(rate, 1.0 / groups, bootstraps)
    return groups * SECONDS_30D * rate / ert


@dataclass(frozen=True)
class TandemSpec:
    """One Tandem configuration the benchmark runs: the row's `detector`, the monitor's
    false-alarm target (None: alibi-detect's configured rate on the stream: `alibi_rate_per_30d`)
    and its window."""

    detector: str = "tandem"
    target: float | None = 1.0
    window: int = WINDOW

    def target_for(self, s: Stream, rate: float) -> float:
        if self.target is not None:
            return self.target
        return alibi_rate_per_30d(rate, peer_groups(s))


def tandem_monitoring(
    signals: list[str], features: list[str], target: float, window: int, ref_n: int
) -> Monitoring:
    """The monitor's `monitoring:` section for a run. A use case may ask for at most 30 false
    alarms per 30 days (the vocabulary's bound: a page a day); the benchmark's matched-rate runs
    ask for alibi-detect's thousands, so the validated section gets the target set directly (the
    monitor only derives its per-test alpha from it)."""
    m = Monitoring(
        sample_rate=1.0,
        signals=signals,  # type: ignore[arg-type]
        features=features,
        window_events=window,
        reference_events=max(2 * window, min(ref_n, 100_000)),
        false_alarms_per_30d=min(target, 30.0),
    )
    return m if target <= 30.0 else m.model_copy(update={"false_alarms_per_30d": target})


@dataclass
class Stream:
    name: str
    t: np.ndarray
    texts: list[str] | None  # prompts (None: a tabular stream)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    onset: float | None = None


# -- data -----------------------------------------------------------------------------------------


def load_text() -> tuple[list[str], list[str]]:
    if not DATA.is_dir():
        sys.exit(f"drift_detection: {DATA} is missing; set TANDEM_SHARED_DIR (the shared data)")
    with open(DATA / "banking77_train.csv", newline="") as f:
        banking = [r["text"] for r in csv.DictReader(f)]
    qqp: list[str] = []
    seen = set()
    with open(DATA / "qqp_pairs_dev.jsonl") as f:
        for line in f:
            q = json.loads(line)["text_a"].strip()
            if q and q not in seen:
                seen.add(q)
                qqp.append(q)
            if len(qqp) >= 4000:
                break
    return banking, qqp


def embed(texts: list[str]) -> dict[str, np.ndarray]:
    """Each distinct text's MiniLM unit vector, cached on disk between runs (outside the repo)."""
    uniq = sorted(set(texts))
    key = hashlib.sha256("\n".join(uniq).encode()).hexdigest()[:16]
    path = CACHE / f"emb-{key}.npy"
    if path.exists():
        vecs = np.load(path)
    else:
        from embedding.minilm import Embedder

        print(f"embedding {len(uniq)} texts once (cached in {CACHE})", file=sys.stderr)
        vecs = Embedder(None).encode(uniq, batch_size=64).astype(np.float32)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vecs)
    return dict(zip(uniq, vecs, strict=True))


# -- built-in streams -------------------------------------------------------------------------------


def _times(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrivals at `rate` per second for `duration` seconds."""
    n = int(rate * duration * 1.1) + 10
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    return t[t < duration]


def text_stream(
    name: str,
    banking: list[str],
    qqp: list[str],
    rate: float,
    duration: float,
    onset: float | None,
    seed: int,
    share=None,
    output_shift: float = 0.0,
) -> Stream:
    rng = np.random.default_rng(seed)
    t = _times(rate, duration, rng)
    shifted = np.zeros(len(t), dtype=bool)
    if onset is not None and share is not None:
        shifted = rng.random(len(t)) < np.array([share(x - onset) for x in t])
    b = rng.integers(0, len(banking), len(t))
    q = rng.integers(0, len(qqp), len(t))
    texts = [qqp[q[i]] if shifted[i] else banking[b[i]] for i in range(len(t))]
    tokens = np.round(rng.lognormal(np.log(60), 0.4, len(t)))
    if onset is not None and output_shift:
        longer = (t >= onset) & (rng.random(len(t)) < output_shift)
        tokens[longer] *= 2
    return Stream(name, t, texts, {"response_tokens": tokens}, onset)


def sensor_stream(
    name: str, rate: float, duration: float, onset: float | None, seed: int, shift: str = ""
) -> Stream:
    rng = np.random.default_rng(seed)
    t = _times(rate, duration, rng)
    n = len(t)
    temp = rng.normal(70.0, 2.0, n)
    vib = rng.normal(0.50, 0.10, n)
    pres = rng.normal(101.0, 0.5, n)
    if onset is not None:
        after = t >= onset
        if shift == "mean":
            vib[after] += 0.05  # +0.5 sd: a bearing starting to wear
        elif shift == "variance":
            pres[after] = 101.0 + (pres[after] - 101.0) * 1.5  # a valve starting to hunt
    return Stream(name, t, None, {"temperature": temp, "vibration": vib, "pressure": pres}, onset)


def gradual(dt: float) -> float:
    return 0.0 if dt < 0 else 0.1 if dt < 3600 else 0.3 if dt < 7200 else 1.0


def shift_streams(
    banking: list[str], qqp: list[str], rate: float, reference_s: float, rep: int
) -> list[Stream]:
    rng = random.Random(1000 * rep + int(rate))
    out = []
    for i, kind in enumerate(
        ("topic-shift-30", "gradual-mix", "sensor-mean-shift", "sensor-variance-shift",
         "output-length-30")
    ):  # fmt: skip
        onset = reference_s + rng.uniform(600, 4200)
        dur = onset + AFTER_ONSET_S
        seed = 7919 * rep + 31 * i + int(rate * 10)
        if kind == "topic-shift-30":
            s = text_stream(kind, banking, qqp, rate, dur, onset, seed, lambda d: 0.3 * (d >= 0))
        elif kind == "gradual-mix":
            s = text_stream(kind, banking, qqp, rate, dur, onset, seed, gradual)
        elif kind == "output-length-30":
            s = text_stream(kind, banking, qqp, rate, dur, onset, seed, output_shift=0.3)
        else:
            shift = "mean" if "mean" in kind else "variance"
            s = sensor_stream(kind, rate, dur, onset, seed, shift)
        out.append(s)
    return out


# -- a given stream ---------------------------------------------------------------------------------


def read_stream(path: Path) -> Stream:
    side = Path(str(path) + ".onset.json")
    if not side.exists():
        sys.exit(f'drift_detection: {side} is missing: it holds {{"onset_s": seconds or null}}')
    onset = json.loads(side.read_text()).get("onset_s")
    ts, texts, feats = [], [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                ts.append(float(e["t"]))
            except (ValueError, KeyError, TypeError):
                sys.exit(f"drift_detection: {path}:{n}: not an event with a numeric `t`")
            texts.append(e.get("prompt"))
            feats.append(e.get("features") or {})
    order = np.argsort(np.asarray(ts), kind="stable")
    t = np.asarray(ts)[order]
    has_text = any(x for x in texts)
    names = sorted({k for f in feats for k in f})
    features: dict[str, np.ndarray] = {}
    for k in names:
        col = [feats[i].get(k) for i in order]
        if all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in col if v is not None
        ):
            features[k] = np.asarray([np.nan if v is None else float(v) for v in col])
        else:
            features[k] = np.asarray([str(v) for v in col], dtype=object)
    return Stream(
        path.stem,
        t,
        [texts[i] or "" for i in order] if has_text else None,
        features,
        None if onset is None else float(onset),
    )


# -- Tandem -----------------------------------------------------------------------------------------


def run_tandem(
    s: Stream,
    vecs: dict[str, np.ndarray] | None,
    reference_s: float,
    stop_after_onset: bool,
    target: float = 1.0,
    window: int = WINDOW,
) -> dict[str, Any]:
    """The stream through drift.monitor.Monitor as the drift service feeds it."""
    ref_n = int(np.sum(s.t < reference_s))
    feats = list(s.features)
    signals = ["embedding"] if s.texts is not None else []
    m = tandem_monitoring(signals, feats, target, window, ref_n)
    mon = Monitor([UseCase("bench", "bench", m)])
    alarms: list[float] = []
    pinned = False
    rows = [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in zip(feats, r, strict=True)}
        for r in zip(*(s.features[k].tolist() for k in feats), strict=True)
    ] if feats else [{} for _ in range(len(s.t))]  # fmt: skip
    emb = [vecs[x] for x in s.texts] if s.texts is not None and vecs is not None else None
    c0 = time.process_time()
    fed = 0
    for i, t in enumerate(s.t.tolist()):
        if not pinned and t >= reference_s:
            if mon.pin("bench", "1", end=reference_s, source="auto") is None:
                raise SystemExit(f"{s.name}: too few reference events ({ref_n}) to pin")
            pinned = True
        e: dict[str, Any] = {"t": t, "use_case": "bench", "model_version": "1", "arm": "stable"}
        if emb is not None:
            e["embedding"] = emb[i]
        if feats:
            e["features"] = rows[i]
        mon.ingest(e)
        fed += 1
        if pinned:  # a test per value: the most the service's ticks can run
            for _d in mon.evaluate():
                alarms.append(t)
            if stop_after_onset and s.onset is not None and alarms and alarms[-1] >= s.onset:
                break
    cpu = time.process_time() - c0
    return {"alarms": alarms, "events": fed, "cpu_s": cpu}


# -- peers ------------------------------------------------------------------------------------------


def peer_groups(s: Stream) -> int:
    """How many detectors a peer runs on `s` (as `_groups` splits it)."""
    numeric = any(v.dtype != object for v in s.features.values())
    return int(s.texts is not None) + int(numeric)


def _groups(s: Stream, vecs: dict[str, np.ndarray] | None, reference_s: float, peer: str):
    """What each peer is given: the embeddings (Evidently: their 32 principal components, fitted
    on the reference: its per-column tests on 384 dimensions would take minutes an hour) and the
    numeric features (standardised on the reference), one detector per group."""
    ref = s.t < reference_s
    out = []
    if s.texts is not None and vecs is not None:
        x = np.stack([vecs[t] for t in s.texts]).astype(np.float32)
        if peer == "evidently":
            mu = x[ref].mean(axis=0)
            _, _, vt = np.linalg.svd(x[ref] - mu, full_matrices=False)
            x = (x - mu) @ vt[:32].T
        out.append(("embedding", x))
    num = [k for k, v in s.features.items() if v.dtype != object]
    if num:
        x = np.stack([s.features[k] for k in num], axis=1).astype(np.float64)
        mu, sd = np.nanmean(x[ref], axis=0), np.nanstd(x[ref], axis=0) + 1e-9
        out.append(("features", np.nan_to_num((x - mu) / sd).astype(np.float32)))
    return out


def run_peer(
    peer: str,
    s: Stream,
    vecs: dict[str, np.ndarray] | None,
    rate: float,
    reference_s: float,
    delay_run: bool,
) -> dict[str, Any]:
    groups = _groups(s, vecs, reference_s, peer)
    alarms: list[float] = []
    events, cpu = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for gname, x in groups:
            d: dict[str, Any] = {
                "t": s.t,
                "x": x,
                "reference_s": reference_s,
                "rate_rps": rate,
                "fa_per_30d": 1.0 / len(groups),  # the target shared by the groups, as Tandem's
                "window": WINDOW,
                "n_bootstraps": ALIBI_BOOTSTRAPS,
                "window_size": ALIBI_WINDOW,
            }
            if s.onset is not None:
                d["onset_s"] = s.onset
            if delay_run and s.onset is not None and peer == "alibi-detect":
                d["start_s"] = max(reference_s, s.onset - 2 * ALIBI_WINDOW / rate)
            path = Path(tmp) / f"{gname}.npz"
            np.savez(path, **d)
            args = [str(PEERS_PY), str(ROOT / "benchmarks" / "drift_peers.py"),
                    "--input", str(path), "--peer", peer]  # fmt: skip
            if delay_run:
                args.append("--stop-at-first")  # at the first alarm after the onset
            done = subprocess.run(args, capture_output=True, text=True, timeout=7200)
            if done.returncode != 0:
                raise SystemExit(f"{peer} failed on {s.name}: {done.stderr[-2000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            alarms += r["alarms"]
            events = max(events, r["events"])
            cpu += r["cpu_s"]
    return {"alarms": sorted(alarms), "events": events, "cpu_s": cpu}


# -- the report -------------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def summarise(
    name: str,
    rate: float,
    detector: str,
    runs: list[tuple[Stream, dict]],
    reference_s: float,
    target: float | None = None,
    window: int | None = None,
) -> dict[str, Any]:
    delays, undetected, false_alarms, stationary_s, events, cpu = [], 0, 0, 0.0, 0, 0.0
    for s, r in runs:
        events += r["events"]
        cpu += r["cpu_s"]
        if s.onset is None:
            false_alarms += len(r["alarms"])
            stationary_s += float(s.t[-1]) - reference_s
            continue
        before = [a for a in r["alarms"] if a < s.onset]
        false_alarms += len(before)
        stationary_s += s.onset - reference_s
        after = [a for a in r["alarms"] if a >= s.onset]
        if after:
            delays.append(after[0] - s.onset)
        else:
            undetected += 1
    shift = any(s.onset is not None for s, _ in runs)
    row: dict[str, Any] = {
        "name": name,
        "rate_rps": rate,
        "detector": detector,
        "detected": bool(shift and undetected == 0),
        "delay_p50_s": round(_pct(delays, 50), 1) if shift and delays else None,
        "delay_p95_s": round(_pct(delays, 95), 1) if shift and not undetected else None,
        "false_alarms_per_30d": round(false_alarms * SECONDS_30D / stationary_s, 3)
        if stationary_s > 0
        else None,
        "cpu_ms_per_event": round(1000 * cpu / events, 4) if events else None,
        "reps": len(runs),
        "stationary_hours": round(stationary_s / 3600, 1),
        "false_alarm_target_per_30d": None if target is None else round(target, 3),
        "window_events": window,
    }
    if shift and undetected:
        row["notes"] = f"{undetected} of {len(runs)} repetitions not detected within 3 h"
    return row


def tandem_specs(matched: bool, fa_targets: str, fa_windows: str) -> list[TandemSpec]:
    """Tandem at its defaults, then (`--matched`) at alibi-detect's configured false-alarm rate
    with alibi-detect's window and with its own, then (`--fa-targets`) a delay-vs-false-alarm-target curve."""
    specs = [TandemSpec()]
    if matched:  # its window, and Tandem's default one
        specs.append(TandemSpec("tandem@alibi-rate", None, ALIBI_WINDOW))
        specs.append(TandemSpec(f"tandem@alibi-rate/w{WINDOW}", None, WINDOW))
    for w in [int(x) for x in fa_windows.split(",") if x]:
        for target in [float(x) for x in fa_targets.split(",") if x]:
            name = f"tandem@fa{target:g}" + ("" if w == WINDOW else f"/w{w}")
            if (target, w) != (1.0, WINDOW) and name not in {x.detector for x in specs}:
                specs.append(TandemSpec(name, target, w))
    return specs


def run_one(
    det: TandemSpec | str,
    s: Stream,
    vecs: dict[str, np.ndarray] | None,
    rate: float,
    reference_s: float,
    delay_run: bool,
) -> tuple[dict[str, Any], float | None, int | None]:
    """One detector on one stream: its run, its false-alarm target per 30 days and window."""
    if isinstance(det, TandemSpec):
        target = det.target_for(s, rate)
        r = run_tandem(s, vecs, reference_s, delay_run, target, det.window)
        return r, target, det.window
    r = run_peer(det, s, vecs, rate, reference_s, delay_run)
    if det == "alibi-detect":
        return r, alibi_rate_per_30d(rate, peer_groups(s)), ALIBI_WINDOW
    return r, None, None  # Evidently: hourly windows, per-column p-values, no such target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", choices=("json", "table"), default="table")
    ap.add_argument("--stream", type=Path, help="run one given JSONL stream (sidecar .onset.json)")
    ap.add_argument("--reference-s", type=float, default=3600.0)
    ap.add_argument("--rate", type=float, default=1.0, help="--stream: its rate, for the report")
    ap.add_argument("--rates", default="1,10", help="built-in streams: requests/s, comma-separated")
    ap.add_argument("--reps", type=int, default=10, help="repetitions of each shift stream")
    ap.add_argument(
        "--stationary-days",
        type=float,
        default=30.0,
        help="Tandem's stationary streams at 1 request/s (a tenth of it at 10/s: as many events)",
    )
    ap.add_argument(
        "--peer-stationary-hours",
        type=float,
        default=24.0,
        help="the peers' stationary streams (alibi-detect's: a tenth of it at 10/s)",
    )
    ap.add_argument("--peer-reps", type=int, default=5, help="repetitions for the peers")
    ap.add_argument("--peers", action="store_true", help="also run Evidently and alibi-detect")
    ap.add_argument(
        "--matched",
        action="store_true",
        help="also run Tandem at alibi-detect's configured false-alarm rate and window "
        "(detector `tandem@alibi-rate`)",
    )
    ap.add_argument(
        "--fa-targets",
        default="",
        help="also run Tandem at these false alarms per 30 days (detector `tandem@fa<N>`)",
    )
    ap.add_argument(
        "--fa-windows", default=str(WINDOW), help="--fa-targets: Tandem's windows (`/w<N>`)"
    )
    ap.add_argument("--no-tandem", action="store_true", help="skip Tandem at its defaults")
    ap.add_argument("--only", help="comma-separated stream names")
    ap.add_argument("-o", "--out", type=Path, help="write the JSON here too")
    args = ap.parse_args()
    if args.peers and not PEERS_PY.exists():
        sys.exit(f"drift_detection: {PEERS_PY} missing; build it with `make drift-peers-env`")
    specs = tandem_specs(args.matched, args.fa_targets, args.fa_windows)
    if args.no_tandem:
        specs = specs[1:]
    detectors: list[TandemSpec | str] = [
        *specs, *(["evidently", "alibi-detect"] if args.peers else [])
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    t_start = time.time()

    def add(name: str, rate: float, det: TandemSpec | str, runs, target, window) -> None:
        label = det.detector if isinstance(det, TandemSpec) else det
        rows.append(summarise(name, rate, label, runs, args.reference_s, target, window))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    if args.stream:
        s = read_stream(args.stream)
        vecs = embed(s.texts) if s.texts is not None else None
        for det in detectors:
            r, target, window = run_one(det, s, vecs, args.rate, args.reference_s, False)
            add(s.name, args.rate, det, [(s, r)], target, window)
    else:
        banking, qqp = load_text()
        vecs = embed(banking + qqp)
        only = set(args.only.split(",")) if args.only else None
        for rate in [float(x) for x in args.rates.split(",")]:
            reps = [
                shift_streams(banking, qqp, rate, args.reference_s, k) for k in range(args.reps)
            ]
            for j, name in enumerate(s.name for s in reps[0]):
                if only and name not in only:
                    continue
                for det in detectors:
                    tandem = isinstance(det, TandemSpec)
                    n = args.reps if tandem else min(args.reps, args.peer_reps)
                    runs = []
                    for k in range(n):
                        s = reps[k][j]
                        v = vecs if s.texts is not None else None
                        r, target, window = run_one(det, s, v, rate, args.reference_s, True)
                        runs.append((s, r))
                    add(name, rate, det, runs, target, window)
            for name in ("stationary-text", "stationary-sensor"):
                if only and name not in only:
                    continue
                for det in detectors:
                    if isinstance(det, TandemSpec):
                        hours = args.stationary_days * 24 / max(1.0, rate)
                    elif det == "alibi-detect":  # its cost is per event: as many events
                        hours = args.peer_stationary_hours / max(1.0, rate)
                    else:  # Evidently tests whole hours: as many hours
                        hours = args.peer_stationary_hours
                    dur = args.reference_s + hours * 3600
                    s = (
                        text_stream(name, banking, qqp, rate, dur, None, 99)
                        if name == "stationary-text"
                        else sensor_stream(name, rate, dur, None, 99)
                    )
                    v = vecs if s.texts is not None else None
                    r, target, window = run_one(det, s, v, rate, args.reference_s, False)
                    add(name, rate, det, [(s, r)], target, window)
    doc = {
        "benchmark": "drift_detection",
        "reference_s": args.reference_s,
        "window_events": WINDOW,
        "false_alarm_target_per_30d": 1.0,
        "machine": f"{os.cpu_count()} cores (shared)",
        "argv": sys.argv[1:],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - t_start, 1),
        "streams": rows,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    if args.output == "json":
        print(text)
    else:
        print(f"{'stream':<22} {'rps':>4} {'detector':<13} {'det':<5} {'p50 s':>8} {'p95 s':>8} "
              f"{'FA/30d':>7} {'CPU ms/ev':>9}")  # fmt: skip
        for r in rows:
            print(
                f"{r['name']:<22} {r['rate_rps']:>4g} {r['detector']:<13} {r['detected']!s:<5} "
                f"{r['delay_p50_s'] if r['delay_p50_s'] is not None else '-':>8} "
                f"{r['delay_p95_s'] if r['delay_p95_s'] is not None else '-':>8} "
                f"{r['false_alarms_per_30d'] if r['false_alarms_per_30d'] is not None else '-':>7} "
                f"{r['cpu_ms_per_event'] if r['cpu_ms_per_event'] is not None else '-':>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
