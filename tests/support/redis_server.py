"""A throwaway real redis-server on a free loopback port, for tests that share counters or caches."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from vocabulary.net import free_port


@contextmanager
def redis_server(purpose: str = "these tests", extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Yields its URL; fails (never skips) when redis-server is not installed. `extra_args` come
    last on the command line, so they override the defaults."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(f"redis-server is required for {purpose}: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            *(exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start within 10 s")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
