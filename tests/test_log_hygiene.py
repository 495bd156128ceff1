"""The daemon's log cannot be forged from a request, nor flooded out of its history.

A real ``mlxd serve`` writes its real log file; a request whose path carries a line
break and a fake log line must leave exactly one line, with the break escaped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlxd.logs import RepeatLimiter, setup_logging
from tests.conftest import free_port

FORGED = "/v1/models/x%0a2026-01-01%2000:00:00,000%20INFO%20%20%20%20mlxd:%20FORGED%0d%e2%80%a8%c2%85end"


@pytest.fixture(params=["text", "json"])
def daemon_log(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    port = free_port()
    (tmp_path / "mlxd.toml").write_text(f'[server]\nport = {port}\nlog_format = "{request.param}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXD_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path / "home"))
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxd", "serve", "--config", str(tmp_path / "mlxd.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "mlxd serve exited"
            assert time.monotonic() < deadline, "mlxd serve did not come up"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url, tmp_path / "state" / "mlxd" / "log" / "mlxd.log"
    finally:
        process.terminate()
        process.wait(60)


@pytest.mark.server
def test_a_request_cannot_forge_a_log_line(daemon_log: tuple[str, Path]) -> None:
    url, log = daemon_log
    reply = httpx.get(url + FORGED, timeout=10)
    assert reply.status_code == 404
    deadline = time.monotonic() + 10
    while "FORGED" not in log.read_text(encoding="utf-8") and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text(encoding="utf-8").splitlines()
    [line] = [line for line in lines if "FORGED" in line]
    assert not any(line.startswith("2026-01-01") for line in lines)
    if line.startswith("{"):
        message = json.loads(line)["message"]
        assert "\n" not in message
        assert "\\n2026-01-01 00:00:00,000 INFO    mlxd: FORGED\\r\\u2028\\u0085end 404" in message
    else:
        assert (
            "GET /v1/models/x\\n2026-01-01 00:00:00,000 INFO    mlxd: FORGED\\r\\u2028\\u0085end 404" in line
        )
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_a_flood_of_one_line_is_summed_up(tmp_path: Path) -> None:
    """Through the real handlers and file: 20 copies a second, then one line for the rest."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        path = setup_logging("info", "text", tmp_path, console=False)
        assert path is not None
        flood = logging.getLogger("asyncio")
        for _ in range(20_000):
            flood.error("socket.accept() out of system resource")
        time.sleep(1.05)  # the window ends: the next line brings the summary out first
        logging.getLogger("mlxd").info("a different line")
        logging.getLogger("mlxd.access").info("GET /health 200 0.001s")
        for handler in root.handlers:
            handler.flush()
        lines = path.read_text().splitlines()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
    copies = [line for line in lines if line.endswith("socket.accept() out of system resource")]
    summaries = [line for line in lines if "[repeated " in line]
    assert 20 <= len(copies) <= 200  # 20 per second it took
    assert summaries
    assert len(copies) + sum(int(s.split("[repeated ")[1].split()[0]) for s in summaries) == 20_000
    assert "[repeated " in lines[-3]
    assert lines[-2].endswith("mlxd: a different line")
    assert lines[-1].endswith("GET /health 200 0.001s")


def test_the_limiter_counts_per_line_and_window() -> None:
    now = [0.0]
    emitted: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            emitted.append(record.getMessage())

    handler = Collect()
    handler.addFilter(RepeatLimiter(handler, limit=3, window_s=1.0, clock=lambda: now[0]))
    log = logging.getLogger("test.limiter")
    log.propagate = False
    log.addHandler(handler)
    try:
        for _ in range(10):
            log.warning("same")
        log.warning("other")  # a different line is never held back
        assert emitted == ["same", "same", "same", "other"]
        now[0] = 1.5  # the window ended: the summary goes out with the next line
        log.warning("later")
        assert emitted[4:] == ["same [repeated 7 more times within 1s]", "later"]
        log.warning("same")  # a new window for it
        assert emitted[-1] == "same"
        for _ in range(5):
            log.warning("same")
        limiter = next(f for f in handler.filters if isinstance(f, RepeatLimiter))
        limiter.flush()  # at exit, what was held back is said
        assert emitted[-3:] == ["same", "same", "same [repeated 3 more times within 1s]"]
        limiter.flush()
        assert emitted[-1] == "same [repeated 3 more times within 1s]"  # said once
    finally:
        log.removeHandler(handler)
