"""The `review:` section of a use-case file: the answers to the six-criteria AI-initiative review.

Only the schema lives here (floor 1, pydantic only), so the use-case model, the UseCase component
that publishes the answers and the policy pack that judges them (`policies/review_gate.py`) share
one definition. How it reaches the engine: the UseCase component registers a ConfigMap labelled
`tandem.dev/component: usecase-manifest` and `tandem.dev/use-case: <name>` whose data
`review.json` is `manifest_data(review)`; the `usecase-review-gate` stack policy reads it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PLAN_HORIZON_MONTHS = 18  # a maintenance plan covers at least this long
MANIFEST_COMPONENT = "usecase-manifest"  # value of tandem.dev/component on the ConfigMap
MANIFEST_KEY = "review.json"  # data key holding the review section as JSON


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Kpi(_Section):
    """Measurability: what moves, from where, to where, by when."""

    name: str | None = None
    baseline: str | float | None = Field(None, description="today's value, with unit")
    target: str | float | None = None
    target_date: dt.date | None = None


class DataAudit(_Section):
    """Data quality: the audit of the data the use case depends on."""

    completed: bool = False
    date: dt.date | None = None
    link: str | None = None


class Maintenance(_Section):
    """Maintainability: who owns it and how it will be kept alive."""

    owner: str | None = None
    plan: str | None = Field(None, description="link to, or summary of, the maintenance plan")
    horizon_months: int = PLAN_HORIZON_MONTHS


class ReviewGate(_Section):
    """The `review:` section of a use-case file (all optional: `evaluate` says what is missing)."""

    date: dt.date | None = Field(None, description="review date; KPI target dates count from it")
    durable_advantage: str | None = Field(
        None, description="strategic alignment: the named advantage"
    )
    consumers: list[str] = Field(default_factory=list, description="use cases or teams reusing it")
    kpi: Kpi = Field(default_factory=Kpi)
    cto_assessment: str | None = Field(
        None, description="feasibility: link to the CTO's assessment"
    )
    data_audit: DataAudit = Field(default_factory=DataAudit)
    maintenance: Maintenance = Field(default_factory=Maintenance)


def manifest_data(review: ReviewGate | dict[str, Any] | None) -> dict[str, str]:
    """ConfigMap `data` for the use-case manifest the UseCase component registers."""
    if review is None:
        return {MANIFEST_KEY: "null"}
    r = review if isinstance(review, ReviewGate) else ReviewGate.model_validate(review)
    return {MANIFEST_KEY: json.dumps(r.model_dump(mode="json"), sort_keys=True)}
