"""The drift benchmark's peers, run inside .venv-drift-peers (`make drift-peers-env`) by
benchmarks/drift_detection.py: Evidently's data drift preset on hourly windows and alibi-detect's
online MMD detector, on the same stream the Tandem detector saw.

    .venv-drift-peers/bin/python benchmarks/drift_peers.py --input STREAM.npz --peer evidently

The input holds `t` (seconds), `x` (one row per event: the prompt embedding projected or the
tabular features; the caller says which), `reference_s`, `onset_s` (NaN: stationary), `rate_rps`,
`fa_per_30d` (the false-alarm target), `window`, alibi-detect's `n_bootstraps` and `window_size`
and, for a delay run, `start_s` (where to start feeding: a window before the onset; the detector's
state before it is only its window). `--stop-at-first`: stop at the first alarm at or after the
onset. Prints one JSON object: alarms (seconds), events fed, CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

SECONDS_30D = 30 * 86400.0


def evidently(d: dict, stop_at_first: bool) -> dict:
    """DataDriftPreset (its defaults: per-column tests, dataset drift when >= 50 % of columns
    drift) on consecutive whole hours after the reference hour."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    t, x = d["t"], d["x"]
    ref_s = float(d["reference_s"])
    cols = [f"c{i}" for i in range(x.shape[1])]
    ref = pd.DataFrame(x[t < ref_s], columns=cols)
    alarms, fed, cpu = [], 0, 0.0
    start = float(d.get("start_s", ref_s))
    h0 = ref_s + math.floor(max(0.0, start - ref_s) / 3600.0) * 3600.0
    end = float(t[-1])
    h = h0
    while h + 3600.0 <= end + 1e-9:
        sel = (t >= h) & (t < h + 3600.0)
        cur = pd.DataFrame(x[sel], columns=cols)
        c0 = time.process_time()
        snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        share = snap.dict()["metrics"][0]["value"]["share"]
        cpu += time.process_time() - c0
        fed += int(sel.sum())
        if share >= 0.5:
            alarms.append(h + 3600.0)  # known when the hour's report is made
            if stop_at_first and not h + 3600.0 < float(d.get("onset_s", np.nan)):
                break
        h += 3600.0
    return {"alarms": alarms, "events": fed, "cpu_s": cpu, "windows": int((h - h0) / 3600.0)}


def alibi(d: dict, stop_at_first: bool) -> dict:
    """MMDDriftOnline (PyTorch backend). Its thresholds are quantiles of `n_bootstraps` simulated
    runs and it refuses an expected run time (ERT, in events) beyond the bootstraps: the target
    (30 days between false alarms: 2.6 million events at 1 request/s) would need millions of
    simulations, so the ERT is the largest its bootstraps allow (n_bootstraps / 2), and the
    false alarms it then raises are measured and reported. Window 100 (its documentation's
    scale; configuring 2,000 bootstraps on a 300-event window took minutes here), reference
    subsampled to 500 points (configuration is quadratic in it)."""
    import torch
    from alibi_detect.cd import MMDDriftOnline

    torch.set_num_threads(1)
    t, x = d["t"], d["x"].astype(np.float32)
    ref_s = float(d["reference_s"])
    ref = x[t < ref_s]
    rng = np.random.default_rng(0)
    if len(ref) > 500:
        ref = ref[rng.choice(len(ref), 500, replace=False)]
    rate = float(d["rate_rps"])
    boots = int(d.get("n_bootstraps", 2000))
    target = SECONDS_30D * rate / float(d["fa_per_30d"])
    ert = min(target, boots / 2)
    window = int(d.get("window_size", 100))
    c0 = time.process_time()
    det = MMDDriftOnline(
        ref, ert=ert, window_size=window, backend="pytorch", n_bootstraps=boots, verbose=False,
        device="cpu",
    )  # fmt: skip
    setup = time.process_time() - c0
    start = float(d.get("start_s", ref_s))
    alarms, fed, cpu = [], 0, 0.0
    idx = np.nonzero(t >= start)[0]
    c0 = time.process_time()
    onset = float(d.get("onset_s", np.nan))
    for i in idx:
        p = det.predict(x[i], return_test_stat=False)
        fed += 1
        if p["data"]["is_drift"]:
            alarms.append(float(t[i]))
            if stop_at_first and not float(t[i]) < onset:
                break
            det.reset_state()
    cpu = time.process_time() - c0
    # the configuration's CPU is spread over the events, as Tandem's calibration is
    return {"alarms": alarms, "events": fed, "cpu_s": cpu + setup, "ert": ert, "target_ert": target}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--peer", choices=("evidently", "alibi-detect"), required=True)
    ap.add_argument("--stop-at-first", action="store_true")
    args = ap.parse_args()
    with np.load(args.input) as z:
        d = {k: z[k] for k in z.files}
    run = evidently if args.peer == "evidently" else alibi
    print(json.dumps(run(d, args.stop_at_first)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
