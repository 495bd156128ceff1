"""Stopping never cuts a stream silently: ``mlxd stop``, a bare SIGTERM and Ctrl-C against a
real daemon (a subprocess on real MLX) in the middle of long streams.

At ``drain_timeout`` every sequence still running ends: a stream with one error event
and ``data: [DONE]``, a request not answered yet with 503 ``unavailable``. The process
exits well within the stop timeout every supervisor derives from ``drain_timeout``, the
log keeps an access line for each request and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mlxd.supervision.stopping import stop_timeout_s
from tests.cli.test_serve import isolated_env, mlxd, wait_healthy
from tests.conftest import eventually, free_port

pytestmark = [pytest.mark.mlx, pytest.mark.server]

DRAIN_S = 2.0
#: Far more tokens than the tiny model decodes in DRAIN_S (it does a few hundred a second).
LONG = 30000
ASK = [{"role": "user", "content": "Tell me a very long story."}]


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a context long enough for streams that outlast any drain."""
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "long", max_position_embeddings=LONG + 512)


@dataclass
class Setup:
    """An isolated home with a config for the long model, on a free port."""

    root: Path
    config: Path
    url: str
    env: dict[str, str]

    @property
    def log(self) -> Path:
        return self.root / "state" / "mlxd" / "log" / "mlxd.log"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8") if self.log.is_file() else ""


def setup_for(root: Path, model: Path, drain_timeout: float) -> Setup:
    port = free_port()
    config = root / "mlxd.toml"
    config.write_text(
        f'[server]\nport = {port}\ndrain_timeout = "{drain_timeout:g}s"\n'
        f'[defaults]\ntemperature = 0.0\n[models.long]\nmodel = "{model}"\ndefault = true\n'
    )
    return Setup(root, config, f"http://127.0.0.1:{port}", isolated_env(root))


@dataclass
class Client:
    """A client on a thread: what it received, and how it ended."""

    lines: list[str] = field(default_factory=list)
    error: BaseException | None = None
    status: int | None = None
    first: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self, work: Callable[[Client], None]) -> Client:
        def run() -> None:
            try:
                work(self)
            except BaseException as exc:
                self.error = exc
            finally:
                self.first.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(60)
        assert not self.thread.is_alive()


def raw_stream(url: str, path: str = "/v1/chat/completions") -> Callable[[Client], None]:
    """A plain HTTP client reading the SSE lines as they come."""
    body: dict[str, Any] = {"max_tokens": LONG, "stream": True}
    body.update({"messages": ASK} if "chat" in path else {"prompt": "Once upon a time"})

    def work(client: Client) -> None:
        with httpx.stream("POST", url + path, json=body, timeout=60) as response:
            client.status = response.status_code
            for line in response.iter_lines():
                if line:
                    client.lines.append(line)
                    client.first.set()

    return work


def sdk_stream(url: str) -> Callable[[Client], None]:
    """The OpenAI SDK streaming, as applications use it."""

    def work(client: Client) -> None:
        sdk = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        for chunk in sdk.chat.completions.create(
            model="long",
            messages=ASK,  # type: ignore[arg-type]
            max_tokens=LONG,
            stream=True,
        ):
            client.lines.append(chunk.model_dump_json())
            client.first.set()

    return work


def whole(url: str) -> Callable[[Client], None]:
    """A request that is not streamed: its answer comes at the end, or never."""

    def work(client: Client) -> None:
        # Time for the streams to start first (this one shows no progress to wait for).
        client.first.set()
        response = httpx.post(
            url + "/v1/completions", json={"prompt": "Once", "max_tokens": LONG}, timeout=60
        )
        client.status = response.status_code
        client.lines.append(response.text)

    return work


def ends_with_the_error_event(client: Client) -> dict[str, Any]:
    """The error of a raw stream that ended properly: one error event, then [DONE]."""
    assert client.error is None, client.error  # no "incomplete chunked read"
    assert client.status == 200
    assert client.lines[-1] == "data: [DONE]"
    assert client.lines.count("data: [DONE]") == 1
    error: dict[str, Any] = json.loads(client.lines[-2].removeprefix("data: "))["error"]
    assert len(client.lines) > 2  # it had streamed content before
    return error


def assert_shutting_down(error: dict[str, Any]) -> None:
    assert error["code"] == "unavailable"
    assert error["type"] == "server_error"
    assert error["message"] == "mlxd is shutting down"


def assert_clean_log(setup: Setup, streams: int, whole_requests: int) -> None:
    """Every request has its access line, and nothing but lines: no traceback."""
    text = setup.log_text()
    for bad in ("Traceback", "CancelledError", "graceful shutdown exceeded", "Exception in ASGI"):
        assert bad not in text, text
    cut = re.findall(r"POST /v1/\S+ 200 [\d.]+s openai \(stream ended with error unavailable\)", text)
    assert len(cut) == streams, text
    assert len(re.findall(r"POST /v1/completions 503 ", text)) == whole_requests, text
    assert f"ended {streams + whole_requests} running sequence(s) with an error" in text
    assert "stopped" in text.splitlines()[-1]


@pytest.fixture
def started(tmp_path: Path, long_model_dir: Path) -> Iterator[Setup]:
    """A detached daemon (``mlxd start``) draining for DRAIN_S; stopped afterwards."""
    setup = setup_for(tmp_path, long_model_dir, DRAIN_S)
    started = mlxd("start", "--config", str(setup.config), env=setup.env)
    assert started.returncode == 0, started.stderr
    try:
        yield setup
    finally:
        mlxd("stop", "--config", str(setup.config), env=setup.env, timeout=60)


def test_mlxd_stop_ends_long_streams_with_an_error_event_then_done(started: Setup) -> None:
    setup = started
    clients = [
        Client().start(raw_stream(setup.url)),
        Client().start(raw_stream(setup.url, "/v1/completions")),
        Client().start(sdk_stream(setup.url)),
        Client().start(whole(setup.url)),
    ]
    for client in clients:
        assert client.first.wait(60)
        assert client.error is None, client.error
    assert eventually(lambda: _active(setup.url) == len(clients), 30)  # the one not streamed too
    began = time.monotonic()
    stopped = mlxd("stop", "--config", str(setup.config), env=setup.env, timeout=60)
    took = time.monotonic() - began
    for client in clients:
        client.join()

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "mlxd stopped"
    # The drain, then a prompt exit: within what the CLI (and launchd, systemd) wait.
    assert DRAIN_S <= took < stop_timeout_s(DRAIN_S)
    chat, text, sdk, whole_request = clients
    for raw in (chat, text):
        assert_shutting_down(ends_with_the_error_event(raw))
    # The SDK raises the error event as an APIError: not a broken connection.
    assert isinstance(sdk.error, openai.APIError), sdk.error
    assert not isinstance(sdk.error, openai.APIConnectionError)
    assert sdk.error.body is not None
    assert_shutting_down(sdk.error.body)  # type: ignore[arg-type]
    assert 0 < len(sdk.lines) < LONG
    assert whole_request.status == 503
    assert_shutting_down(json.loads(whole_request.lines[0])["error"])
    assert_clean_log(setup, streams=3, whole_requests=1)
    assert mlxd("status", "--config", str(setup.config), env=setup.env).returncode == 3


def spawn_serve(setup: Setup) -> subprocess.Popen[str]:
    """``mlxd serve`` in the foreground, as from a terminal (Ctrl-C reaches it even when the
    tests run as a background job, which starts with SIGINT ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlxd", "serve", "--config", str(setup.config)],
        env=setup.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture
def serving(
    tmp_path: Path, long_model_dir: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Setup, Any]]:
    setup = setup_for(tmp_path, long_model_dir, getattr(request, "param", DRAIN_S))
    process = spawn_serve(setup)
    try:
        wait_healthy(setup.url, process)  # type: ignore[arg-type]
        yield setup, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def test_a_bare_sigterm_ends_streams_properly_and_exits_0(
    serving: tuple[Setup, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, process = serving
    clients = [Client().start(raw_stream(setup.url)), Client().start(whole(setup.url))]
    for client in clients:
        assert client.first.wait(60)
    assert eventually(lambda: _active(setup.url) == len(clients), 30)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # While it drains, `mlxd status` reads "stopping", not "not answering" (asked in this
    # process: a CLI subprocess could start after the drain).
    assert eventually(lambda: httpx.get(f"{setup.url}/health").status_code == 503, 5)
    for key, value in setup.env.items():
        monkeypatch.setenv(key, value)
    from mlxd.cli.status_report import collect
    from mlxd.cli.target import resolve

    draining = collect(resolve(setup.config, strict=False))
    assert (draining.stopping, draining.silent, draining.running) == (True, False, False)
    assert process.wait(30) == 0
    took = time.monotonic() - began
    for client in clients:
        client.join()
    assert DRAIN_S <= took < stop_timeout_s(DRAIN_S)
    assert_shutting_down(ends_with_the_error_event(clients[0]))
    assert clients[1].status == 503
    assert_clean_log(setup, streams=1, whole_requests=1)
    _, stderr = process.communicate()
    assert "Traceback" not in stderr


def draining(url: str) -> bool:
    """Whether new requests are refused (one token each, so a request that got in first
    does not hold the check up)."""
    return (
        httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=30).status_code
        == 503
    )


def _active(url: str) -> int:
    return int(httpx.get(url + "/mlxd/status", timeout=30).json()["active_sequences"])


def _drain_began(setup: Setup) -> bool:
    return "draining: finishing in-flight requests" in setup.log_text()


@pytest.mark.parametrize("serving", [120.0], indirect=True)
def test_a_second_ctrl_c_stops_at_once(serving: tuple[Setup, Any]) -> None:
    setup, process = serving  # a drain of two minutes, which nobody waits for
    client = Client().start(raw_stream(setup.url))
    assert client.first.wait(60)
    # MLX's CPU build (Linux) compiles kernels with g++ through libc's system(), which
    # ignores SIGINT process-wide while it runs, around the first generation: a Ctrl-C
    # in that moment is lost, as it would be in a terminal. Press it again, as a user would.
    # Whether a press got through is read in the log, not from a request that may be slow
    # to answer: pressing again after one got through would be the second Ctrl-C.
    deadline = time.monotonic() + 30
    while not _drain_began(setup):
        assert time.monotonic() < deadline
        process.send_signal(signal.SIGINT)
        eventually(lambda: _drain_began(setup), 5.0)
    # Draining: the stream runs on, new requests are refused.
    assert eventually(lambda: draining(setup.url), 15.0)
    assert process.poll() is None
    assert client.error is None
    seen = len(client.lines)
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert time.monotonic() - began < 20  # against a drain of 120 s
    client.join()
    assert len(client.lines) > seen  # it was still streaming until the second Ctrl-C
    assert_shutting_down(ends_with_the_error_event(client))
    text = setup.log_text()
    assert text.count("draining: finishing in-flight requests") == 1
    assert "Ctrl-C again: stopping now" in text
    assert "stopping at once: ended 1 running sequence(s) with an error" in text
    assert "Traceback" not in text


def test_the_stop_timeout_of_every_supervisor_comes_from_drain_timeout(tmp_path: Path) -> None:
    """The CLI's wait, launchd's ExitTimeOut and systemd's TimeoutStopSec are one number."""
    import plistlib

    from mlxd.cli.managers.base import build_spec
    from mlxd.cli.managers.launchd import render_plist
    from mlxd.cli.managers.systemd import render_unit

    for drain in (0.0, 2.0, 7.5, 30.0):
        spec = build_spec(tmp_path / "mlxd.toml", drain_timeout_s=drain)
        expected = stop_timeout_s(drain)
        assert expected >= drain + 10  # the daemon's own phases after the drain fit in it
        assert spec.stop_timeout_s == expected
        assert plistlib.loads(render_plist(spec).encode())["ExitTimeOut"] == expected
        assert f"\nTimeoutStopSec={expected}\n" in render_unit(spec)


IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_a_daemon_that_must_be_killed_is_reported_not_called_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that ends in SIGKILL raises (the CLI prints it and exits 1), never "stopped"."""
    from mlxd import supervision
    from mlxd.cli import lifecycle
    from mlxd.cli.errors import exit_code_for
    from mlxd.cli.target import resolve
    from mlxd.errors import ServiceManagerError

    for key, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "mlxd.toml"
    config.write_text(f'[server]\nport = {free_port()}\ndrain_timeout = "0s"\n')
    hung = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM, "mlxd", "serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hung.stdout is not None
        assert hung.stdout.readline() == "ready\n"
        # It recorded itself as the running daemon, as `mlxd serve` does once it listens.
        supervision.write_run_record("127.0.0.1", 9, config)
        record = supervision.run_record_file()
        record.write_text(json.dumps({**json.loads(record.read_text()), "pid": hung.pid}))
        target = resolve(config, strict=False)
        assert target.record is not None
        assert target.record.pid == hung.pid
        monkeypatch.setattr(lifecycle, "stop_timeout", lambda _: 0.5)
        with pytest.raises(ServiceManagerError) as killed:
            lifecycle.stop(target)
        assert hung.wait(5) == -signal.SIGKILL
    finally:
        if hung.poll() is None:
            hung.kill()
        hung.wait()
    assert f"(pid {hung.pid}) did not stop within 0.5s and was killed (SIGKILL)" in killed.value.message
    assert exit_code_for(killed.value) == 1
    assert not record.exists()  # the killed daemon's record is cleared
    assert os.environ["XDG_STATE_HOME"] in str(record)
