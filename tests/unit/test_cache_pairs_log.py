"""The re-check's labelled-pairs file: bounded by rotation, appended across restarts, never fatal."""

from __future__ import annotations

import json
import logging

from gateway.cache.pairs_log import PairsLog


def rows(path) -> list[int]:
    return (
        [json.loads(line)["n"] for line in path.read_text().splitlines()] if path.exists() else []
    )


def test_rotates_to_one_backup_and_keeps_the_newest_pairs(tmp_path) -> None:
    path = tmp_path / "labels" / "pairs.jsonl"
    log = PairsLog(str(path), max_bytes=100)
    for n in range(30):
        log.write({"n": n, "text_a": "q"})  # 23 bytes a line: 4 lines a file
    log.close()
    backup = path.with_name("pairs.jsonl.1")
    assert path.stat().st_size <= 100 and backup.stat().st_size <= 100
    assert sorted(p.name for p in path.parent.iterdir()) == ["pairs.jsonl", "pairs.jsonl.1"]
    assert rows(backup) + rows(path) == list(range(24, 30))  # the newest, in order


def test_a_restarted_writer_appends_and_counts_what_is_there(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    first = PairsLog(str(path), max_bytes=100)
    for n in range(3):
        first.write({"n": n, "text_a": "q"})
    first.close()
    second = PairsLog(str(path), max_bytes=100)
    for n in range(3, 5):
        second.write({"n": n, "text_a": "q"})
    second.close()
    # 4 lines fit in 100 bytes: the fifth rotated the file even though this writer wrote only 2
    assert rows(path.with_name("pairs.jsonl.1")) == [0, 1, 2, 3] and rows(path) == [4]


def test_an_unwritable_file_is_reported_once(tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = PairsLog(str(blocker / "pairs.jsonl"), max_bytes=100)
    with caplog.at_level(logging.WARNING, logger="tandem.gateway.cache"):
        for n in range(3):
            log.write({"n": n})
    assert log.failed and len(caplog.records) == 1
    assert "no more pairs are logged" in caplog.records[0].getMessage()
