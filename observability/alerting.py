"""Alertmanager configuration from the stack's `tandem:alerting` and `tandem:budget` sections.

Pure: the config is a dict the Observability component renders into the Secret Alertmanager
reads (`alertmanager.yaml`), with each receiver's credential filled in from its Pulumi secret at
deploy time, so no credential is ever in Helm values, a ConfigMap or the plan. Tested with
`amtool check-config` and `amtool config routes test` (Debian's prometheus-alertmanager).

Routing, top to bottom:
1. the platform budget alerts (TandemPlatformBudgetBurn, one per `budget.alertThresholds`) go to
   every `budget.notify` receiver;
2. the stack's `alerting.routes` in order (match on the alerts' `team` label and/or severity);
3. everything else to `alerting.defaultReceiver`.
"""

from __future__ import annotations

from typing import Any

import yaml

PLATFORM_BUDGET_ALERT = "TandemPlatformBudgetBurn"
# What a receiver's secret holds, per kind (docs/observability.md, "Alert receivers").
SECRET_FIELD = {
    "slack": "api_url",
    "webhook": "url",
    "pagerduty": "routing_key",
    "email": "auth_password",
}


def _receiver(r: Any, secret: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.name}
    if r.kind == "email":
        e = r.email
        cfg: dict[str, Any] = {
            "to": ", ".join(e.to),
            "from": e.from_address,
            "smarthost": e.smarthost,
            "require_tls": e.require_tls,
            "send_resolved": True,
        }
        if e.auth_username:
            cfg |= {"auth_username": e.auth_username, "auth_password": secret or ""}
        out["email_configs"] = [cfg]
    elif r.kind == "slack":
        out["slack_configs"] = [
            {
                "api_url": secret or "",
                "channel": r.slack.channel,
                "send_resolved": True,
                "title": '{{ .CommonLabels.alertname }} ({{ .CommonLabels.team | or "platform" }})',
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}: "
                "{{ .Annotations.description }}\n{{ end }}",
            }
        ]
    elif r.kind == "webhook":
        out["webhook_configs"] = [{"url": secret or "", "send_resolved": r.webhook.send_resolved}]
    else:  # pagerduty
        out["pagerduty_configs"] = [
            {"routing_key": secret or "", "send_resolved": r.pagerduty.send_resolved}
        ]
    return out


def _matchers(team: str | None = None, severity: str | None = None) -> list[str]:
    out = []
    if team is not None:
        out.append(f'team="{team}"')
    if severity is not None:
        out.append(f'severity="{severity}"')
    return out


def alertmanager_config(
    alerting: Any, budget: Any | None, secrets: dict[str, str]
) -> dict[str, Any]:
    """The Alertmanager config for a stack (`alerting`: vocabulary.config.AlertingConfig;
    `secrets`: receiver name -> its credential). A stack without receivers gets a single
    `null` receiver, so Alertmanager still starts (and `tandem plan` shows nothing is routed)."""
    if not alerting.receivers:
        return {
            "route": {"receiver": "null", "group_by": list(alerting.group_by)},
            "receivers": [{"name": "null"}],
        }
    routes: list[dict[str, Any]] = []
    notify = list(budget.notify) if budget is not None else []
    for i, name in enumerate(notify):
        routes.append(
            {
                "receiver": name,
                "matchers": [f'alertname="{PLATFORM_BUDGET_ALERT}"'],
                # every notify receiver gets it; after the last, the alert stops here
                "continue": i < len(notify) - 1,
            }
        )
    for route in alerting.routes:
        routes.append(
            {
                "receiver": route.receiver,
                "matchers": _matchers(route.team, route.severity),
                "continue": route.continue_routing,
            }
        )
    return {
        "route": {
            "receiver": alerting.default_receiver,
            "group_by": list(alerting.group_by),
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": alerting.repeat_interval,
            "routes": routes,
        },
        "receivers": [_receiver(r, secrets.get(r.name)) for r in alerting.receivers],
        # a critical alert silences the warnings of the same name and team (the budget alert at
        # 100 % silences its 50 % and 80 % twins)
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "team"],
            }
        ],
    }


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
