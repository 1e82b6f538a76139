"""A real Prometheus on loopback over a backfilled TSDB: for tests, the demo and the benchmark.

Backfill runs `promtool tsdb create-blocks-from openmetrics` once per 54-hour file (two at a time),
so each file becomes exactly one block. The server is started with min = max block duration so it
never spends the benchmark compacting the backfilled blocks, and with a long retention so a month
of history is not deleted on start.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vocabulary.net import free_port

INSTALL_HINT = "install Prometheus and promtool: apt-get install -y prometheus"


def require(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise RuntimeError(f"{binary} not found on PATH; {INSTALL_HINT}")
    return path


def backfill(files: Iterable[Path], data_dir: Path, workers: int = 2, remove: bool = True) -> None:
    """Backfill each file as it arrives (files may be a generator still writing the next)."""
    promtool = require("promtool")
    data_dir.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        proc = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q",
             "--max-block-duration=54h", str(path), str(data_dir)],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"promtool backfill of {path} failed: {proc.stderr[-2000:]}")
        if remove:
            path.unlink()

    with ThreadPoolExecutor(workers) as pool:
        pending: list = []
        for f in files:
            pending.append(pool.submit(one, f))
            while len(pending) > workers:  # bound the text waiting on disk
                pending.pop(0).result()
        for fut in pending:
            fut.result()


class LocalPrometheus:
    """`prometheus` bound to 127.0.0.1 on a free port, serving `data_dir`; stop() always."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        rule_files: Sequence[Path] = (),
        scrape: Sequence[str] = (),
        scrape_interval: str = "1m",
    ) -> None:
        """`scrape`: host:port targets whose /metrics it scrapes every `scrape_interval` (a
        live gateway in the tests), besides what is backfilled."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rule_files = list(rule_files)
        self.scrape = list(scrape)
        self.scrape_interval = scrape_interval
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"prometheus-{self.port}.log"

    def start(self, timeout: float = 60.0, detach: bool = False) -> LocalPrometheus:
        binary = require("prometheus")
        conf_dir = Path(tempfile.mkdtemp(prefix="tandem-prom-"))
        conf = conf_dir / "prometheus.yml"
        rules = "".join(f"  - {p}\n" for p in self.rule_files)
        targets = ", ".join(f'"{t}"' for t in self.scrape)
        scrape = (
            f"scrape_configs:\n  - job_name: scraped\n    static_configs:\n"
            f"      - targets: [{targets}]\n"
            if self.scrape
            else "scrape_configs: []\n"
        )
        conf.write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: 1m\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + scrape
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=3650d",
                "--storage.tsdb.min-block-duration=2h",
                "--storage.tsdb.max-block-duration=2h",
                "--query.max-samples=200000000",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
