"""Reading the daemon's log: last lines, lines since an offset, following across rotation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlxd.cli import logfiles


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "mlxd.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert logfiles.tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert logfiles.tail(log, 0) == []
    assert logfiles.tail(tmp_path / "missing.log", 5) == []


def test_tail_since_an_offset_only_shows_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "mlxd.log"
    log.write_text("old 1\nold 2\n")
    offset = logfiles.size(log)
    with log.open("a") as handle:
        handle.write("new 1\nnew 2\n")
    assert logfiles.tail(log, 20, since=offset) == ["new 1", "new 2"]
    assert logfiles.tail(log, 20, since=logfiles.size(log)) == []
    log.write_text("rotated\n")  # smaller than the offset: all of it is new
    assert logfiles.tail(log, 20, since=offset) == ["rotated"]


def test_follow_emits_appended_lines_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mlxd.log"
    log.write_text("before follow\n")
    seen: list[str] = []
    following = threading.Event()
    deadline = time.monotonic() + 10

    def until(condition: Callable[[], bool]) -> None:
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def writer() -> None:
        following.wait(10)  # follow starts at the end: what came before is not news
        with log.open("a") as handle:
            handle.write("one\ntw")
            handle.flush()
            until(lambda: seen == ["one"])  # the half line was read and held back
            time.sleep(0.05)
            handle.write("o\n")
        until(lambda: seen == ["one", "two"])
        log.rename(tmp_path / "mlxd.log.1")  # the daemon rotates by renaming
        log.write_text("three\n")

    thread = threading.Thread(target=writer)
    thread.start()

    def keep_going() -> bool:
        following.set()
        return seen[-1:] != ["three"] and time.monotonic() < deadline

    logfiles.follow(log, seen.append, interval_s=0.02, keep_going=keep_going)
    thread.join()
    assert seen == ["one", "two", "three"]
