"""The CrossGuard entry point: `pulumi preview --policy-pack policies`.

The Pulumi CLI starts this file as the analyzer plugin with the stack's config in the environment
(`PULUMI_CONFIG`, `PULUMI_STACK`), so enforcement levels and waivers come from the same
`tandem:policies` / `tandem:environment` keys the offline harness reads. Importing this module
only builds `POLICIES` (cheap, no server); `main()` constructs the `PolicyPack`, which starts a
gRPC server and never returns, so it runs only when executed as the program.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The analyzer runs with policies/ as the working directory: make the repo importable.
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from policies.pack import PACK_NAME, build_policies  # noqa: E402
from policies.settings import PolicySettings  # noqa: E402


def engine_settings() -> PolicySettings:
    """Settings from the stack config the engine hands the plugin (empty offline: dev defaults)."""
    from pulumi.runtime import get_config_env

    return PolicySettings.from_stack_config(get_config_env(), os.environ.get("PULUMI_STACK", "dev"))


POLICIES = build_policies(engine_settings())


def main() -> None:
    from pulumi_policy import EnforcementLevel, Policy, PolicyPack

    PolicyPack(
        name=PACK_NAME,
        policies=list[Policy](POLICIES),
        enforcement_level=EnforcementLevel.ADVISORY,
        description="GPU-, Kubernetes- and AI-aware guardrails for Tandem stacks (docs/policies.md).",
    )


if __name__ == "__main__":
    main()
