"""Start the gateway from a config dict in a server thread (shared by the gateway and cache tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.config import parse_config
from tests.support.upstream import ServerThread


class RunningGateway:
    def __init__(self, config: dict, config_path: Path | None = None, **kwargs: Any) -> None:
        self.gateway = Gateway(parse_config(config), config_path, **kwargs)
        self.server = ServerThread(self.gateway.app)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> RunningGateway:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> RunningGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        total = 0.0
        for family in self.gateway.metrics.registry.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total
