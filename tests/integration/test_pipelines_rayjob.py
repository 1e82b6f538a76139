"""The big-job path of `tandem batch submit`: a Ray Data job on a real local Ray, sending a small
dataset through a real gateway (with the team's key) to an upstream on loopback. Every input line
ends in exactly one record; a line the upstream always refuses ends as that line's error record
after its retries, and the rest of the dataset is unaffected."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.app import GatewayService
from gateway.config import hash_key, parse_config
from serving import local
from tests.support.pipelines import KEY, batch_lines
from tests.support.upstream import ServerThread, Upstream

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LINES = 200
POISON = {17}


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, Upstream]]:
    upstream = Upstream("up", poison="POISON")
    up = ServerThread(upstream.app).start()
    cfg = {
        "server": {"host": "127.0.0.1", "port": 0, "reload_interval_s": 0},
        "backends": {"up": {"url": up.url + "/v1"}},
        "routes": {"chat": {"backends": [{"backend": "up"}], "retries": {"attempts": 0}}},
        "keys": [{"id": "batch-key", "team": "batchers", "sha256": hash_key(KEY)}],
    }
    gw = ServerThread(GatewayService(parse_config(cfg)).app).start()
    try:
        yield gw.url, upstream
    finally:
        gw.stop()
        up.stop()


def test_a_ray_data_job_records_every_line_once(gateway, tmp_path: Path) -> None:
    url, upstream = gateway
    data = tmp_path / "corpus.jsonl"
    data.write_bytes(batch_lines(LINES, poison=POISON))
    out = tmp_path / "records"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "batch",
            "submit",
            str(data),
            "--via",
            "rayjob",
            "--local",
            "--output-uri",
            str(out),
            "--gateway",
            url,
            "--actors",
            "2",
            "--threads",
            "4",
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=local.ray_env({"TANDEM_API_KEY": KEY, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"{LINES} records written" in proc.stdout
    records = [
        orjson.loads(x)
        for f in sorted(out.glob("*.jsonl"))
        for x in f.read_bytes().split(b"\n")
        if x
    ]  # noqa: E501
    ids = [r["custom_id"] for r in records]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(LINES))  # each exactly once
    by_id = {r["custom_id"]: r for r in records}
    refused = by_id["req-17"]["response"]
    assert refused["status_code"] == 502 and refused["body"]["error"]  # after 3 tries, recorded
    ok = [r for r in records if r["response"]["status_code"] == 200]
    assert len(ok) == LINES - len(POISON)
    assert ok[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert upstream.requests == LINES - len(POISON) + 3 * len(POISON)
