"""How a stream that already started ends when it cannot finish, through a real server on
the fake engine: one error event in the envelope, then ``data: [DONE]``, for every choice
at once; and what the access line and ``/metrics`` say about it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from mlxd.errors import UnavailableError
from tests.conftest import RunningDaemon, eventually, fake_engine, serving

pytestmark = [pytest.mark.server]

CONFIG = """
[server]
port = 0
stream_interval = 0
[defaults]
temperature = 0.0
[models.small]
model = "org/small"
default = true
"""
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000, "stream": True}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlxd.access"]


def stream_errors(daemon: RunningDaemon, code: str) -> float:
    with daemon.client() as http:
        text = http.get("/metrics").text
    found = re.search(
        rf'mlxd_stream_errors_total\{{code="{code}",route="/v1/chat/completions"\}} ([\d.]+)', text
    )
    return float(found.group(1)) if found else 0.0


def test_an_abort_ends_every_choice_with_one_error_event_then_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlxd.access")
    engine = fake_engine(CONFIG, tmp_path, token_delay=0.002, context_length=32768)
    with serving(tmp_path, CONFIG, engine) as daemon:
        lines = []
        with (
            daemon.client() as http,
            http.stream("POST", "/v1/chat/completions", json={**BODY, "n": 2}) as response,
        ):
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) == 8:
                    loop = daemon.daemon._loop  # type: ignore[attr-defined]
                    loop.call_soon_threadsafe(engine.abort, UnavailableError("mlxd is shutting down"))
        assert lines[-1] == "data: [DONE]"
        assert lines.count("data: [DONE]") == 1
        error = json.loads(lines[-2].removeprefix("data: "))["error"]
        assert (error["code"], error["type"], error["message"]) == (
            "unavailable",
            "server_error",
            "mlxd is shutting down",
        )
        assert sum('"error"' in line for line in lines) == 1
        assert eventually(lambda: stream_errors(daemon, "unavailable") == 1)
    (line,) = [x for x in access_lines(caplog) if x.startswith("POST /v1/chat/completions")]
    assert re.fullmatch(
        r"POST /v1/chat/completions 200 [\d.]+s openai \(stream ended with error unavailable\)", line
    )


def test_a_failed_choice_and_a_client_that_left_are_told_apart(
    fake_daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlxd.access")
    before = stream_errors(fake_daemon, "internal_error")
    fake = fake_daemon.engine
    fake.faults.error_after = 2
    try:
        with fake_daemon.client() as http:
            lines = [
                line
                for line in http.post("/v1/chat/completions", json={**BODY, "model": "tiny"}).text.split(
                    "\n\n"
                )
                if line
            ]
    finally:
        fake.faults.error_after = None
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["code"] == "internal_error"
    assert eventually(lambda: stream_errors(fake_daemon, "internal_error") == before + 1)
    with (
        fake_daemon.client() as http,
        http.stream("POST", "/v1/chat/completions", json={**BODY, "model": "tiny"}) as response,
    ):
        next(response.iter_lines())  # then hang up
    assert eventually(lambda: any("incomplete" in line for line in access_lines(caplog)))
    ended = [line for line in access_lines(caplog) if line.startswith("POST /v1/chat/completions 200")]
    assert re.search(r"200 [\d.]+s openai \(stream ended with error internal_error\)$", ended[0])
    assert re.search(r"200 [\d.]+s openai \(incomplete: the connection ended first\)$", ended[1])
    with fake_daemon.client() as http:
        assert http.get("/health").status_code == 200
