"""Model lifecycle: the registry client, rollout plans, the rollout controller and its analysis.

Runtime code, no pulumi (components/lifecycle/ deploys it). The controller moves a use case's
gateway traffic between the stable and canary Serve applications through the gateway's live
split in Redis, asks Prometheus every interval whether the canary is healthy, and promotes
(registry alias, canary becomes stable, old version drained and removed) or rolls back.
docs/lifecycle.md explains the flow for product teams and platform engineers.
"""
