"""The drift alerts, as a Prometheus rule file (the DriftMonitor component's PrometheusRule).

- `TandemDriftDetected`: a signal of a use case's model version drifts from the pinned reference
  (`tandem_drift_detected == 1`; the threshold behind it is already calibrated to the use case's
  false-alarm target, so the alert needs no hold of its own beyond `for_`). Labels: team,
  use_case, model_version, signal: Alertmanager routes it to the team's receiver; the
  annotations say how far (the score) and since when.
- `TandemDriftNoReference`: a use case sends samples but has had no pinned reference for an hour:
  nothing is being tested.
- `TandemDriftServiceDown`: the drift service's metrics are gone: nothing is being tested.

`unit_tests` is the promtool test document (tests/unit/test_drift_rules.py runs
`promtool test rules` on it): each alert fires on its input and stays quiet otherwise.
"""

from __future__ import annotations

from typing import Any

import yaml

DETECTED = "TandemDriftDetected"
NO_REFERENCE = "TandemDriftNoReference"
DOWN = "TandemDriftServiceDown"
JOB = "tandem-drift"  # the job label of the drift service's metrics (its Service)


def alert_rules(for_: str = "1m", job: str = JOB) -> list[dict[str, Any]]:
    by = "team, use_case, model_version, signal"
    detected: dict[str, Any] = {
        "alert": DETECTED,
        "expr": f"max by ({by}) (tandem_drift_detected) == 1",
        "labels": {"severity": "warning", "source": "tandem-drift"},
        "annotations": {
            "summary": "{{ $labels.use_case }} version {{ $labels.model_version }}: "
            "{{ $labels.signal }} drifts from the pinned reference",
            "description": 'Score {{ with printf `max(tandem_drift_score{use_case="%s",'
            'model_version="%s",signal="%s"})` $labels.use_case $labels.model_version '
            '$labels.signal | query }}{{ . | first | value | printf "%.2f" }}{{ end }} of the '
            "calibrated line. A canary or recently promoted version is rolled back by the drift "
            "service; a champion needs a person: `tandem drift report {{ $labels.use_case }} "
            "--output html` (docs/drift.md, when the alert fires).",
        },
    }
    if for_ != "0m":
        detected["for"] = for_
    return [
        detected,
        {
            "alert": NO_REFERENCE,
            "expr": "(sum by (team, use_case) (increase(tandem_drift_samples_total[1h])) > 0) "
            "unless on (team, use_case) "
            "(count by (team, use_case) (tandem_drift_reference_pinned_timestamp_seconds))",
            "for": "1h",
            "labels": {"severity": "info", "source": "tandem-drift"},
            "annotations": {
                "summary": "{{ $labels.use_case }} has drift samples but no reference",
                "description": "Nothing is tested until a reference is pinned: "
                "`tandem drift pin {{ $labels.use_case }}` (docs/drift.md).",
            },
        },
        {
            "alert": DOWN,
            "expr": f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})',
            "for": "10m",
            "labels": {"severity": "warning", "source": "tandem-drift"},
            "annotations": {
                "summary": "the drift service is down: no model is tested for drift",
                "description": "Its Deployment (components/drift.py) and `kubectl logs`.",
            },
        },
    ]


def rule_groups(for_: str = "1m", job: str = JOB) -> list[dict[str, Any]]:
    return [{"name": "tandem.drift", "rules": alert_rules(for_, job)}]


def rule_file(for_: str = "1m", job: str = JOB, annotations: bool = True) -> str:
    groups = rule_groups(for_, job)
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in groups
        ]
    return yaml.safe_dump({"groups": groups}, sort_keys=False, width=10_000)


def unit_tests(rule_file_name: str, for_: str = "1m", job: str = JOB) -> dict[str, Any]:
    """promtool tests: drift fires (after `for_`) with the routing labels; a clean signal, a
    pinned reference and a live service stay quiet."""
    lab = 'team="search",use_case="support",model_version="3"'
    return {
        "rule_files": [rule_file_name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'tandem_drift_detected{{{lab},signal="embedding"}}',
                        "values": "0 0 1 1 1 1",
                    },
                    {
                        "series": f'tandem_drift_detected{{{lab},signal="prompt_length"}}',
                        "values": "0 0 0 0 0 0",
                    },
                    {"series": f'up{{job="{job}"}}', "values": "1x100"},
                    {"series": f"tandem_drift_samples_total{{{lab}}}", "values": "0+10x200"},
                    {
                        "series": f"tandem_drift_reference_pinned_timestamp_seconds{{{lab},"
                        'source="auto"}',
                        "values": "100x200",
                    },
                ],  # fmt: skip
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": DETECTED, "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": DETECTED,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "source": "tandem-drift",
                                    "team": "search",
                                    "use_case": "support",
                                    "model_version": "3",
                                    "signal": "embedding",
                                }
                            }
                        ],
                    },
                    {"eval_time": "150m", "alertname": NO_REFERENCE, "exp_alerts": []},
                    {"eval_time": "90m", "alertname": DOWN, "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"tandem_drift_samples_total{{{lab}}}", "values": "0+10x200"},
                    {"series": f'up{{job="{job}"}}', "values": "1x10 0x100"},
                ],  # fmt: skip
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": NO_REFERENCE, "exp_alerts": []},
                    {
                        "eval_time": "150m",
                        "alertname": NO_REFERENCE,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "info",
                                    "source": "tandem-drift",
                                    "team": "search",
                                    "use_case": "support",
                                }
                            }
                        ],
                    },
                    {"eval_time": "15m", "alertname": DOWN, "exp_alerts": []},
                    {
                        "eval_time": "30m",
                        "alertname": DOWN,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "source": "tandem-drift",
                                    "job": job,
                                }
                            }
                        ],
                    },
                ],
            },
        ],
    }
