"""The asynchronous pipelines' config: the routes file's `batch:` section and its names.

One schema (floor 1, pydantic only) read by everyone who handles the section: the gateway's routes
file (`gateway/config.py` gives it the top-level key `batch:`), the Batch API and the workers
(`pipelines/`), and the `BatchWorkers` component, which writes it into the routes ConfigMap from
the stack's `tandem:batch` section (`vocabulary.config.BatchConfig`). The Redis key and stream
names live here too, so the workers and the KEDA ScaledObject that scales them on the same stream
cannot disagree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

COMPLETION_WINDOWS = {"24h": 24 * 3600}  # what OpenAI's Batch API accepts today
# Where every record lives: `<prefix>:<name>`. The two streams the workers read, and the one
# consumer group they share (the ScaledObject's triggers name the same three).
LINES_STREAM = "lines"  # one entry per batch line
JOBS_STREAM = "jobs"  # control (prepare, finalize) and async single requests, read first
CONSUMER_GROUP = "workers"
DEFAULT_PREFIX = "tandem:batch"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileStore(_Strict):
    """Where uploaded and generated files live: an S3 bucket (in tests a moto server)."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("files/", description="key prefix inside the bucket")
    region: str = "us-east-1"
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (moto, MinIO); unset: AWS S3 of `region`"
    )
    retention_days: int | None = Field(
        None, ge=1, description="files expire after this (the bucket's lifecycle rule); unset: kept"
    )


class YieldToOnline(_Strict):
    """The priority rule: batch lines use the capacity online traffic leaves free. Each worker
    caps its lines in flight; the cap shrinks while any route's online p95 (time to first token
    for streams, to the answer otherwise; measured by the gateway) is above `at_fraction` of the
    route's SLO, and grows back while every route is below it."""

    slo_p95_ms: dict[str, float] = Field(
        default_factory=dict, description="route alias -> the online p95 it promises, ms"
    )
    at_fraction: float = Field(0.8, gt=0, le=1, description="start yielding at this share")
    window_s: float = Field(3.0, gt=0, le=60, description="the gateway's p95 window")
    interval_s: float = Field(0.5, gt=0, le=10, description="how often the cap is adjusted")


class Workers(_Strict):
    concurrency: int = Field(32, ge=1, le=1024, description="lines in flight per worker, at most")
    min_concurrency: int = Field(
        1, ge=1, description="lines in flight per worker however busy online traffic is"
    )
    jobs_concurrency: int = Field(8, ge=1, le=1024, description="async jobs in flight per worker")
    claim_idle_s: float = Field(
        60.0,
        gt=0,
        description="a line delivered to a worker that stopped answering this long "
        "is given to another",
    )
    yield_to_online: YieldToOnline = YieldToOnline()

    @model_validator(mode="after")
    def _bounds(self) -> Workers:
        if self.min_concurrency > self.concurrency:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) must be <= concurrency "
                f"({self.concurrency})"
            )
        return self


class BatchSection(_Strict):
    """The routes file's `batch:`: the Batch API, async jobs and their workers. Needs the routes
    file's `redis:` too (the queue, the records and the budgets the lines are charged to)."""

    files: FileStore
    prefix: str = Field(DEFAULT_PREFIX, min_length=1, description="Redis key prefix")
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="a line that failed (or killed a worker) this many times "
        "goes to the error file",
    )
    max_file_bytes: int = Field(100 * 2**20, ge=1024, description="largest upload")
    max_lines: int = Field(50_000, ge=1, description="most lines in one batch (queue path)")
    job_ttl_s: float = Field(86400.0, gt=0, description="async job results kept this long")
    webhook_secret_env: str | None = Field(
        None, description="env var holding the webhook signing secret (whsec_...)"
    )
    webhook_attempts: int = Field(5, ge=1, le=20)
    workers: Workers = Workers()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))
