"""Drift: signals sampled at the gateway, detectors calibrated to a false-alarm rate, the drift
service that tests each model version against its pinned reference and acts (docs/drift.md).

- signals.py    the gateway's side: the sampling decision, the bounded signal log (no prompt
                text), the feedback book. Standard library only: it runs on the request path.
- detectors.py  MMD on embeddings, KS / PSI on numbers, a rate test on categories; thresholds
                calibrated on the reference to a target false-alarm rate (numpy).
- monitor.py    windows per use case and version, references, verdicts, actions, metrics.
- service.py    the drift service process: polls the gateways' signal logs and the rollout
                controller (HTTP), serves /metrics and /status, rolls back or alerts.
- report.py     `tandem drift report`: text, JSON, HTML with an inline SVG plot.

Floor: a domain foundation (beside observability, embedding, features). The gateway imports
`drift.signals` to sample; nothing here imports the gateway or lifecycle: the service reaches the
rollout controller over its HTTP API (`POST /rollouts/<use case>/rollback`).
"""
