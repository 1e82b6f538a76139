"""The feature store's config types: a use case's `features:` section and the stack's
`tandem:featureStore`, plus the facts both sides of the wire agree on (Feast's version and where
a feature repository lives).

Pure (pydantic only). A use case names a Feast *feature service* of one of the stack's feature
projects (`stacks/features/<project>/`, Feast's own Python definitions) and says where the
request carries the entity key; the gateway fetches those features for every request on the
use case's route (gateway/stages/features.py).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# Feast's own rule for project names (feast.repo_config: letters, digits, underscores, not
# starting with an underscore): the folder name under stacks/features/ is the project name.
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
FEATURES_DIR = "stacks/features"
OnMissing = Literal["fail", "skip"]
EntityFrom = Literal["header", "body"]


def project_name(value: str) -> str:
    if not PROJECT_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a Feast project name: letters, digits and '_', not starting "
            "with '_' (it is the folder name under stacks/features/)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntitySource(_Strict):
    """Where a request carries the entity key: a header, or a top-level field of the JSON body
    (OpenAI's `user` field is the usual one for chat)."""

    name: str = Field(description="the entity's join key in the feature service, e.g. customer_id")
    from_: EntityFrom = Field(alias="from", description="header | body")
    field: str = Field(min_length=1, description="the header name or the body field")

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )


class UseCaseFeatures(_Strict):
    """A use case's `features:`: which Feast feature service the gateway reads for each request.

    `on_missing` says what happens when the request carries no entity key or the online store has
    no features for it: `fail` answers 400 / 404 (an OpenAI-style error naming the field), `skip`
    forwards the request without features. Either way the outcome is counted
    (`tandem_gateway_feature_lookups_total`), and a feature store that cannot be read behaves like
    a missing entity (503 with `fail`), never a 500.
    """

    project: str = Field(description="the Feast project: a folder under stacks/features/")
    service: str = Field(min_length=1, description="a FeatureService defined in that project")
    entity: EntitySource
    on_missing: OnMissing = "fail"

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        return project_name(v)


class FeatureStoreConfig(BaseModel):
    """The stack's `tandem:featureStore`: Feast with a Redis online store and S3 registry and
    offline store (through IRSA), its feature server, materialization and push.

    Present means on; `projects` are the feature repositories (folders under stacks/features/)
    the stack applies and serves.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    projects: list[str] = Field(min_length=1)
    # its own Redis, never the gateway's (that one evicts under memory pressure): ElastiCache
    # (encrypted in transit and at rest) or, for non-production stacks, an in-cluster one
    redis: Literal["elasticache", "in-cluster"] = "elasticache"
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(6, ge=1)
    # `feast materialize-incremental` on this cron schedule (UTC); every feature view is
    # materialized, and its TTL must exceed the interval (the plan checks)
    materialize_schedule: str = "*/15 * * * *"

    @field_validator("projects")
    @classmethod
    def _projects(cls, v: list[str]) -> list[str]:
        for name in v:
            project_name(name)
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate projects in {v}")
        return v

    @field_validator("materialize_schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is not a 5-field cron schedule (e.g. '*/15 * * * *')")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> FeatureStoreConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


def schedule_interval_s(schedule: str) -> int:
    """The longest gap between two runs of a cron schedule, for the TTL check: `*/N` minutes or
    hours, a fixed minute every hour, or a fixed time every day; anything else counts as a day."""
    minute, hour, dom, month, dow = schedule.split()
    if (dom, month, dow) != ("*", "*", "*"):
        return 7 * 86400 if dow != "*" else 31 * 86400
    if hour == "*":
        if minute.startswith("*/") and minute[2:].isdigit():
            return int(minute[2:]) * 60
        if minute == "*":
            return 60
        if "," in minute:
            marks = sorted(int(m) for m in minute.split(","))
            gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
            return max([*gaps, 60 - marks[-1] + marks[0]]) * 60
        return 3600
    if hour.startswith("*/") and hour[2:].isdigit():
        return int(hour[2:]) * 3600
    return 86400


KeyType = Literal["string", "int64"]


class ViewRead(_Strict):
    """One feature view's part of a feature service: the features the service takes from it."""

    name: str
    features: list[str] = Field(min_length=1)


class FeatureRead(_Strict):
    """What the gateway reads for one route: the use case's `features:` resolved against the
    Feast definitions at plan time (which views and features the service has, the entity's join
    key and type) and written into the routes file, so the gateway needs no Feast at run time."""

    project: str
    service: str
    entity: EntitySource
    on_missing: OnMissing = "fail"
    key_type: KeyType = "string"
    views: list[ViewRead] = Field(min_length=1)

    @property
    def feature_names(self) -> list[str]:
        """The names the prompt and the model see (Feast's, without the view: a service's
        names are unique, the plan checks)."""
        return [f for v in self.views for f in v.features]
