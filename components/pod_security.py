"""The security settings every workload Tandem deploys runs with (the Kubernetes "restricted" Pod
Security Standard: non-root, no privilege escalation, read-only root filesystem, no
capabilities, the runtime's default seccomp profile). One place, so every component's pods
answer the same policy and a new component cannot forget a line of it."""

from __future__ import annotations

from typing import Any


def pod_security(uid: int, gid: int | None = None) -> dict[str, Any]:
    """A pod's securityContext running as `uid` (group `gid` when given; the image's otherwise)."""
    ctx: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": uid}
    if gid is not None:
        ctx["runAsGroup"] = gid
    return {**ctx, "fsGroup": gid if gid is not None else uid, "seccompProfile": _SECCOMP}


def container_security() -> dict[str, Any]:
    """A container's securityContext: no escalation, read-only root, every capability dropped."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


_SECCOMP = {"type": "RuntimeDefault"}
