"""Time to deploy a model version, on the local tier's real parts: register -> 100 % traffic, and
threshold breach -> 100 % stable, with a client sending steady traffic the whole time.

The tier is the lifecycle integration tier's (tests/support/lifecycle.py): MLflow on Debian's
PostgreSQL, Ray Serve on a local Ray serving the packaged MiniLM as a batch app, the real
gateway, a Prometheus scraping it every second, the rollout controller, and 15 requests/s from
40 users. The schedule is compressed (three canary steps of 20, 50 and 80 %, 4 s each, analysed
every 4 s, 2 s drains) so the run takes minutes; the production default (the chatbot's) is 60 s
per analysis, as in Argo Rollouts and Flagger, whose default analysis interval (1 minute) is the
peer reference for detection delay.

Three rollouts, one after the other:

1. good: a new version (same weights) registered from a local directory with `tandem deploy`
   and promoted through every step -> `register_to_full_traffic_s` and `phases`;
2. bad: a version that fails every input longer than 12 tokens, rolled back by its first
   analysis -> `breach_to_stable_s`: from the canary's first traffic (the bad version breaches
   from its first request) to the last answer any client got from the canary arm, i.e. until
   every gateway applied the 100 % stable split;
3. restart: a good version, the controller SIGKILLed at step 2 and restarted; it resumes and
   promotes once.

`failed_requests_by_mechanics` counts client requests that failed in any rollout's window and
were not the bad version's own failures (a long input on the bad rollout's canary, its retries
used up).

    python benchmarks/time_to_deploy.py                 # table
    python benchmarks/time_to_deploy.py --output json   # one JSON object on stdout

Needs `make mlflow-env` (.venv-mlflow) and Debian's postgresql, prometheus and redis-server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEER_INTERVAL_S = 60.0  # Argo Rollouts' and Flagger's default analysis interval
TARGETS = {"register_to_full_traffic_s": 180.0, "breach_to_stable_s": 30.0}


def _wait(tier: Any, phase: str | None = None, step: int | None = None, limit: float = 180) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        state = tier.status()
        if state["phase"] in ("promoted", "rolled_back"):
            return state
        if step is not None and state["phase"] == phase and state["step"] >= step:
            return state
        time.sleep(0.2)
    raise RuntimeError(f"rollout not done after {limit} s: {state['phase']}")


def run(log: Any) -> dict[str, Any]:
    from tests.support.lifecycle import Traffic, canary_rollout, local_tier

    schedule = canary_rollout()
    with tempfile.TemporaryDirectory(prefix="tandem-ttd-") as tmp:
        t0 = time.time()
        with local_tier(Path(tmp), schedule) as tier:
            log(f"tier up in {time.time() - t0:.0f} s")
            traffic = Traffic(tier.gateway_url, "embed").start()
            try:
                time.sleep(3)  # the stable version warm, Prometheus has a baseline
                use_case = tier.use_case_file(schedule)
                windows: list[tuple[str, float, float]] = []

                code, good = tier.deploy(use_case, "--model-dir", str(tier.model("good")))
                state = tier.status()
                windows.append(("good", state["started_at"], state["marks"]["finished_at"]))
                log(f"good: {good['outcome']} in {good['register_to_full_traffic_s']} s")
                if good["outcome"] != "promoted":
                    raise RuntimeError(f"the good version was not promoted: {good}")

                code, bad = tier.deploy(use_case, "--model-dir", str(tier.model("errors")))
                bad_state = tier.status()
                start, end = bad_state["started_at"], bad_state["marks"]["finished_at"]
                windows.append(("bad", start, end))
                if bad["outcome"] != "rolled_back":
                    raise RuntimeError(f"the bad version was not rolled back: {bad}")
                time.sleep(2)
                breach = bad_state["marks"]["first_traffic_at"]
                on_canary = [a.t for a in traffic.between(breach, time.time()) if a.arm == "canary"]
                stable_everywhere = max([bad_state["marks"]["stable_at"], *on_canary])
                breach_to_stable = stable_everywhere - breach
                log(f"bad: rolled back, breach -> 100 % stable {breach_to_stable:.1f} s")

                code, _ = tier.deploy(
                    use_case, "--model-dir", str(tier.model("good")), "--no-follow"
                )
                mid = _wait(tier, "progressing", 1)
                tier.kill_controller()
                killed_at = time.time()
                time.sleep(3)
                tier.start_controller()
                down_s = time.time() - killed_at
                restart = _wait(tier)
                windows.append(("restart", restart["started_at"], restart["marks"]["finished_at"]))
                promotions = [e for e in restart["events"] if e["kind"] == "promoted"]
                log(
                    f"restart: killed at step {mid['step'] + 1}, resumed, {restart['phase']} "
                    f"({len(promotions)} promotion)"
                )
                if restart["phase"] != "promoted" or len(promotions) != 1:
                    raise RuntimeError(f"the restarted rollout did not promote once: {restart}")
            finally:
                traffic.stop()

            mechanics, own = 0, 0
            for name, start, end in windows:
                for a in traffic.between(start, end + 1):
                    if a.status == 200:
                        continue
                    if name == "bad" and (a.arm == "canary" or a.long):
                        own += 1
                    else:
                        mechanics += 1
            answered = traffic.between(windows[0][1], windows[-1][2])
    return {
        "register_to_full_traffic_s": good["register_to_full_traffic_s"],
        "breach_to_stable_s": round(breach_to_stable, 3),
        "failed_requests_by_mechanics": mechanics,
        "phases": good["phases"],
        "bad_version_own_failures": own,
        "requests_during_rollouts": len(answered),
        "rollback_phases": bad["phases"],
        "controller_killed_at_step": mid["step"] + 1,
        "controller_down_s": round(down_s, 1),
        "schedule": {k: schedule[k] for k in ("steps", "step_duration_s", "interval_s", "drain_s")},
        "peer": {
            "name": "Argo Rollouts / Flagger default analysis interval",
            "analysis_interval_s": PEER_INTERVAL_S,
            "breach_to_stable_vs_peer_interval": round(breach_to_stable / PEER_INTERVAL_S, 3),
        },
        "targets": TARGETS,
    }


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("register -> 100 % traffic", f"{r['register_to_full_traffic_s']:.1f} s", "< 180 s"),
        ("breach -> 100 % stable", f"{r['breach_to_stable_s']:.1f} s", "< 30 s"),
        ("  peer: Argo/Flagger interval", f"{PEER_INTERVAL_S:.0f} s", "(detection alone)"),
        (
            "  ratio to the peer interval",
            f"{r['peer']['breach_to_stable_vs_peer_interval']:.2f}",
            "",
        ),
        ("failed by the mechanics", str(r["failed_requests_by_mechanics"]), "0"),
        ("bad version's own failures", str(r["bad_version_own_failures"]), "(counted apart)"),
        ("requests during the rollouts", str(r["requests_during_rollouts"]), ""),
    ]
    lines = [f"{'measure':<34} {'value':>10}  target"]
    lines += [f"{a:<34} {b:>10}  {c}" for a, b, c in rows]
    lines.append(
        "phases (good rollout): " + ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", choices=("table", "json"), default="table")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run(log)
    if args.output == "json":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
