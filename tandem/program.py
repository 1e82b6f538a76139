"""The Pulumi program: validate the stack's config, then build the platform.

`__main__.py` calls `main()` under the real engine; `tandem plan` and the tests call it under
the mock engine. Config is validated before the first resource is created, so a bad stack
registers nothing.
"""

from __future__ import annotations

import pulumi

from components.platform import Platform, PlatformArgs
from tandem.config import ConfigError, PlatformConfig, from_pulumi


def build(config: PlatformConfig) -> Platform:
    platform = Platform("tandem", PlatformArgs(config))
    pulumi.export("clusterName", platform.cluster.name)
    pulumi.export("gpuPools", {name: p.contract.to_dict() for name, p in platform.pools.items()})
    return platform


def main() -> Platform:
    try:
        config = from_pulumi()
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    return build(config)
