"""The re-check's labelled-pairs file (`cache.recheck.pairs_log`): append-only JSONL, bounded.

Each re-checked semantic hit becomes one training pair for the verifier. The file lives on a
size-limited pod volume, so it rotates the way logrotate or Python's RotatingFileHandler does with
one backup: at `max_bytes` the file becomes `<path>.1` (replacing the older one) and a new file
starts. Disk use stays under twice the bound, and the newest pairs are always kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import orjson

log = logging.getLogger("tandem.gateway.cache")


class PairsLog:
    """Writes rows; an unwritable file is reported once and never raises (the re-check goes on)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._size = 0
        self.failed = False

    def write(self, row: dict[str, Any]) -> None:
        if self.failed:
            return
        line = orjson.dumps(row) + b"\n"
        try:
            if self._file is None:
                self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(line)
            self._size += len(line)
        except OSError as exc:
            log.warning("cache.recheck.pairs_log %s: %s; no more pairs are logged", self.path, exc)
            self.failed = True
            self.close()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size  # a restarted pod appends

    def _rotate(self) -> None:
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
