"""The Ray Data job for datasets too large for the queue (embedding a corpus, scoring a table).

Same input and output formats as the Batch API (pipelines/formats.py): JSONL request lines in,
`{id, custom_id, response, error}` records out, but read and written as a Ray dataset (local
files or S3, sharded across the cluster) instead of one file through Redis. Each row is sent to
the gateway with the team's key, so routes, budgets, the cache, fallbacks and breakers apply; a
429 or 5xx is retried with backoff up to `max_attempts`, then recorded as that line's error.

Runs as a RayJob's entrypoint (`python -m pipelines.raydata ...`, manifest from
pipelines/rayjob.py) or on a local Ray (`tandem batch submit --via rayjob --local`). Imports Ray:
nothing below the entry points imports this module.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from pipelines.formats import error_record, response_record

KEY_ENV = "TANDEM_API_KEY"


def _n(text: str) -> int:
    """A record number from the line's custom_id: the same on every retry of its block."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


def call_line(
    url: str, api_key: str | None, endpoint: str, line: str, max_attempts: int, job: str
) -> dict[str, Any]:
    """One input line's record."""
    try:
        req_line = orjson.loads(line)
        custom_id = str(req_line["custom_id"])
        body = orjson.dumps(req_line["body"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return error_record(job, _n(line), "", "invalid_json_line", "Not a batch request line.")
    n = _n(custom_id)
    status, answer = 0, {}
    for attempt in range(max_attempts):
        req = urllib.request.Request(url + endpoint.removeprefix("/v1"), data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        if api_key:
            req.add_header("Authorization", f"Bearer {api_key}")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, answer = resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                answer = orjson.loads(exc.read())
            except orjson.JSONDecodeError:
                answer = {"error": {"message": f"HTTP {exc.code}", "code": f"http_{exc.code}"}}
        except (urllib.error.URLError, OSError) as exc:
            status, answer = 0, {"error": {"message": str(exc), "code": "unreachable"}}
        if status == 200 or (status not in (0, 429) and status < 500):
            break
        if attempt < max_attempts - 1:
            time.sleep(min(30.0, 0.5 * 2**attempt))
    if status == 0:
        return error_record(job, n, custom_id, "unreachable", answer["error"]["message"])
    return response_record(job, n, custom_id, status, answer)


class Caller:
    """A Ray Data actor: sends a batch of rows to the gateway, `threads` at a time."""

    def __init__(self, gateway: str, endpoint: str, threads: int, max_attempts: int, job: str):
        self.url = gateway.rstrip("/") + ("" if gateway.rstrip("/").endswith("/v1") else "/v1")
        self.endpoint = endpoint
        self.key = os.environ.get(KEY_ENV)
        self.pool = ThreadPoolExecutor(threads)
        self.max_attempts = max_attempts
        self.job = job

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = self.pool.map(
            lambda line: call_line(
                self.url, self.key, self.endpoint, str(line), self.max_attempts, self.job
            ),
            batch["text"],
        )
        return {"record": [orjson.dumps(r).decode() for r in records]}


def run(
    input_uri: str,
    output_uri: str,
    gateway: str,
    endpoint: str,
    *,
    actors: int = 2,
    threads: int = 8,
    batch_size: int = 32,
    max_attempts: int = 3,
    job: str = "batch_rayjob",
) -> int:
    """Run the dataset through the gateway; the records are written as JSONL files under
    `output_uri` (one per block). Returns the number of records."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    ds = ray.data.read_text(input_uri)
    ds = ds.filter(lambda row: bool(row["text"].strip()))
    out = ds.map_batches(
        Caller,
        fn_constructor_args=(gateway, endpoint, threads, max_attempts, job),
        batch_size=batch_size,
        concurrency=actors,
        # the actors wait on HTTP (threads), they do not compute: a quarter CPU each leaves the
        # read and write tasks room (a whole CPU each deadlocks a 2-CPU machine)
        num_cpus=0.25,
    )
    sink = _jsonl_sink(output_uri)
    out.write_datasink(sink)
    return sink.rows  # counted by the write: `out.count()` would call the gateway again


def _jsonl_sink(path: str) -> Any:
    """Each row's `record` as one line of a `.jsonl` file (one file per block)."""
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonlRecords(BlockBasedFileDatasink):
        rows = 0

        def write_block_to_file(self, block: Any, file: Any) -> None:
            for row in block.iter_rows(public_row_format=False):
                file.write(row["record"].encode() + b"\n")

        def on_write_complete(self, write_result: Any) -> None:  # on the driver
            self.rows = write_result.num_rows
            super().on_write_complete(write_result)

    return JsonlRecords(path, file_format="jsonl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.raydata", description=__doc__)
    p.add_argument("--input", required=True, help="JSONL request lines: a path or s3:// URI")
    p.add_argument("--output", required=True, help="folder (path or s3:// URI) for the records")
    p.add_argument("--gateway", required=True, help="the gateway's base URL")
    p.add_argument("--endpoint", default="/v1/chat/completions")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--job", default="batch_rayjob", help="the id the record ids are built from")
    a = p.parse_args(argv)
    n = run(
        a.input, a.output, a.gateway, a.endpoint, actors=a.actors, threads=a.threads,
        max_attempts=a.max_attempts, job=a.job,
    )  # fmt: skip
    print(f"{n} records written to {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
