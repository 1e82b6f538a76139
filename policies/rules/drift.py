"""Drift rules: the drift monitor's Services stay inside the cluster.

The drift service's `/status` and the gateway pods' `/drift/signals` (reached through the drift
monitor's headless Service) carry prompt embeddings, which can be inverted into approximate
prompt text, and the drift service can roll canaries back: published outside the cluster, either
is a leak or a lever.
"""

from __future__ import annotations

from collections.abc import Iterator

from policies.framework import ResourceView, get, k8s_labels, resource_rule
from policies.rules import common as c
from policies.settings import PolicySettings
from vocabulary import labels

DRIFT_COMPONENT = "drift-monitor"


@resource_rule(
    "drift-services-internal",
    "The drift monitor's Services (its API and the headless Service over the gateway pods' "
    "signal logs) are reached inside the cluster only.",
    "critical",
    "Keep type ClusterIP (or headless); read the report with kubectl port-forward and "
    "`tandem drift report`. The signal logs carry prompt embeddings and the service can roll "
    "canaries back.",
    (c.SERVICE,),
    tags=("security", "drift", "network"),
)
def drift_services_internal(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    if get(k8s_labels(res), labels.LABEL_COMPONENT) != DRIFT_COMPONENT:
        return
    kind = get(res.props, "spec", "type", default="ClusterIP")
    if kind not in ("ClusterIP", None):
        yield f"Service '{res.name}' is {kind}: the drift monitor's Services must stay internal"


RULES = [drift_services_internal]
