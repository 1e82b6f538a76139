"""`tandem finops demo` brings up a Prometheus with a simulated fleet; the README's report runs on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TANDEM = [sys.executable, "-c", "import sys; from tandem.cli import main; sys.exit(main())"]


def tandem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TANDEM, *args], capture_output=True, text=True, timeout=300)


def test_demo_then_html_report_then_stop(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    try:
        proc = tandem("finops", "demo", "--days", "2", "--step", "300", "--dir", str(demo_dir))
        assert proc.returncode == 0, proc.stderr
        url = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout).group(1)
        assert "tandem finops demo --stop" in proc.stdout
        with urllib.request.urlopen(url + "/-/ready", timeout=5) as r:
            assert r.status == 200

        out = tmp_path / "report.html"
        rep = tandem(
            "finops",
            "report",
            "--prometheus",
            url,
            "--range",
            "2d",
            "--format",
            "html",
            "-o",
            str(out),
        )
        assert rep.returncode == 0, rep.stderr
        html = out.read_text()
        assert "<svg" in html and "research" in html and "consolidation" in html
    finally:
        stop = tandem("finops", "demo", "--stop", "--dir", str(demo_dir))
    assert stop.returncode == 0
    pid = int(re.search(r"pid (\d+)", stop.stdout).group(1))
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            import time

            time.sleep(0.2)
