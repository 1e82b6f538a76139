"""A use case's `monitoring:` section: which drift signals the gateway samples, how often, what
the drift service tests them against and whom it tells (docs/drift.md).

Floor 1, pydantic only: the use-case file, the gateway's routes (gateway/spec.py writes each
monitored route's `monitoring:` block), the drift service (drift/) and the DriftMonitor component
read these types.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What the gateway can sample per answer (drift/signals.py); `feedback` comes from /v1/feedback.
Signal = Literal[
    "embedding",
    "prompt_length",
    "response_length",
    "finish_reason",
    "refusal",
    "latency",
    "feedback",
]
SIGNALS: tuple[str, ...] = Signal.__args__  # type: ignore[attr-defined]
# latency moves with load as much as with the model: opt in
DEFAULT_SIGNALS: tuple[str, ...] = tuple(s for s in SIGNALS if s != "latency")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Receivers(_Strict):
    """Where a champion's drift goes (a canary's is rolled back and also announced here)."""

    webhook: str | None = Field(
        None, description="POSTed the alert with its evidence (JSON): the team's receiver"
    )
    ticket_webhook: str | None = Field(
        None, description="POSTed a retraining ticket when a long-standing champion drifts"
    )

    @model_validator(mode="after")
    def _urls(self) -> Receivers:
        for name in ("webhook", "ticket_webhook"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: {url!r} is not an http(s) URL")
        return self


class RouteMonitoring(_Strict):
    """What the gateway samples on one route (written into the routes file from the use case)."""

    sample_rate: float = Field(0.1, gt=0, le=1, description="share of answers sampled")
    signals: list[Signal] = Field(default_factory=lambda: list(DEFAULT_SIGNALS))  # type: ignore[arg-type]
    features: list[str] = Field(
        default_factory=list, description="tabular features sampled from the request's features"
    )


class Monitoring(RouteMonitoring):
    """A use case's `monitoring:` section."""

    window_events: int = Field(
        300, ge=50, le=5000, description="samples per test window (per version and signal)"
    )
    reference_events: int = Field(
        1000,
        ge=200,
        le=100_000,
        description="samples a reference needs before it is pinned (per signal)",
    )
    false_alarms_per_30d: float = Field(
        1.0, gt=0, le=30, description="target false alarms in 30 days of unchanged traffic"
    )
    recent_s: float = Field(
        86_400,
        ge=0,
        description="a version promoted less than this ago is rolled back on drift, not alerted",
    )
    receivers: Receivers = Receivers()

    @model_validator(mode="after")
    def _window(self) -> Monitoring:
        if self.reference_events < 2 * self.window_events:
            raise ValueError(
                f"reference_events ({self.reference_events}) must be at least twice "
                f"window_events ({self.window_events}): the threshold is calibrated on windows "
                "drawn from the reference"
            )
        if len(set(self.signals)) != len(self.signals):
            raise ValueError(f"signals: {self.signals} lists a signal twice")
        return self

    def route(self) -> RouteMonitoring:
        return RouteMonitoring(
            sample_rate=self.sample_rate, signals=list(self.signals), features=list(self.features)
        )
