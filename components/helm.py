"""Install a pinned Helm chart as a `helm.v3.Release`.

Every chart Tandem installs goes through here so the version always comes from vocabulary/pins.py
and OCI and classic repositories are handled the same way. A Release (not `helm.v4.Chart`) is an
ordinary resource: its values are visible to tests and to the policy pack.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from vocabulary.pins import Chart


def pinned_release(
    resource_name: str,
    chart: Chart,
    *,
    namespace: str,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    create_namespace: bool = False,
    release_name: str | None = None,
) -> k8s.helm.v3.Release:
    if chart.repo.startswith("oci://"):
        location: dict[str, Any] = {"chart": f"{chart.repo}/{chart.name}"}
    else:
        location = {"chart": chart.name, "repository_opts": {"repo": chart.repo}}
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name or chart.name,
        version=chart.version,
        namespace=namespace,
        create_namespace=create_namespace,
        values=values,
        atomic=True,
        cleanup_on_fail=True,
        opts=opts,
        **location,
    )
