"""``mlxd serve`` as users run it: a real subprocess, the demo model, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from mlxd.runtime.demo_model import DEMO_VERSION
from tests.conftest import free_port, write_config

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """An environment whose config, state, data and cache dirs all live under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXD_")}
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_CACHE_HOME=str(root / "cache"),
        HF_HUB_CACHE=str(root / "hf"),
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


def mlxd(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlxd <args>`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mlxd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m mlxd <args>`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlxd", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlxd serve exited early: {process.communicate()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("mlxd serve never answered /health")


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    (tmp_path / "mlxd.toml").write_text('[server]\ndrain_timeout = "20s"\n[defaults]\nmax_tokens = 16\n')
    process = spawn("serve", "--demo", "--port", str(port), cwd=tmp_path, env=isolated_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_demo_serves_the_openai_api(demo_server: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = demo_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["demo"]
    # Greedy: the demo model's end-of-turn tokens can still be sampled at ./mlxd.toml's 0.7.
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 16  # [defaults] max_tokens from ./mlxd.toml
    models = client.models.list().data
    assert models[0].source == f"demo-{DEMO_VERSION}"  # the directory name, never an absolute path


def test_daemon_writes_its_own_log_file(
    demo_server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, _ = demo_server
    httpx.post(
        url + "/v1/completions", json={"model": "demo", "prompt": "zebra canary", "max_tokens": 2}, timeout=60
    )
    log = tmp_path / "state" / "mlxd" / "log" / "mlxd.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "loaded demo" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    text = log.read_text()
    assert "loaded demo" in text
    assert "zebra canary" not in text  # prompts stay out of the log


def test_sigterm_drains_in_flight_streams_then_exits_0(
    demo_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = demo_server
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 400,
        "stream": True,
        "temperature": 0,
    }
    events: list[str] = []
    first = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line:
                    events.append(line)
                    first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(30)
    process.send_signal(signal.SIGTERM)
    # While draining, new work is refused with 503 and a Retry-After.
    deadline = time.monotonic() + 5
    refused = None
    while time.monotonic() < deadline and refused is None:
        try:
            response = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}, timeout=5)
        except httpx.HTTPError:
            break
        if response.status_code == 503:
            refused = response
    reader.join(60)
    assert process.wait(60) == 0
    assert events[-1] == "data: [DONE]"
    finish = json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"]
    assert finish == "length"
    assert refused is not None
    assert refused.json()["error"]["code"] == "unavailable"
    assert "retry-after" in refused.headers


def test_invalid_config_exits_78_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlxd.toml").write_text("[server]\nprot = 8080\n")
    result = mlxd("serve", "--config", str(tmp_path / "mlxd.toml"), env=isolated_env(tmp_path), timeout=60)
    assert result.returncode == 78
    assert "server.prot" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_under_a_supervisor_exits_0(tmp_path: Path) -> None:
    """launchd/systemd would relaunch a failing daemon forever; supervised, it records and exits 0."""
    (tmp_path / "mlxd.toml").write_text("[server]\nport = 'eighty'\n")
    result = mlxd(
        "serve",
        "--config",
        str(tmp_path / "mlxd.toml"),
        env=isolated_env(tmp_path, MLXD_SUPERVISED="1"),
        timeout=60,
    )
    assert result.returncode == 0
    assert "server.port" in result.stderr
    status = mlxd(
        "status", "--json", "--config", str(tmp_path / "mlxd.toml"), env=isolated_env(tmp_path), timeout=60
    )
    assert status.returncode == 3
    assert "invalid config" in json.loads(status.stdout)["config"]["last_error"]


def test_crash_loop_breaker_gives_up_under_a_supervisor(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Five failed starts within two minutes: the fifth records the reason and exits 0."""
    import socket

    env = isolated_env(tmp_path, MLXD_SUPERVISED="1")
    state = Path(env["XDG_STATE_HOME"]) / "mlxd"
    from mlxd import supervision

    config = tmp_path / "mlxd.toml"
    # Four failures of another config file's daemon count for nothing here.
    for _ in range(4):
        supervision.record_start_failure("earlier failure", config=tmp_path / "other.toml", state_dir=state)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config.write_text(f'[server]\nport = {port}\n[models.t]\nmodel = "{tiny_model_dir}"\n')
        first = mlxd("serve", "--config", str(config), env=env, timeout=120)
    assert first.returncode == 1
    assert supervision.gave_up_reason(state_dir=state, config=config) is None
    for _ in range(3):
        supervision.record_start_failure("earlier failure", config=config, state_dir=state)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = mlxd("serve", "--config", str(config), env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"port {port} is in use" in str(supervision.gave_up_reason(state_dir=state, config=config))
    assert supervision.gave_up_reason(state_dir=state, config=tmp_path / "other.toml") is None
    # Without the earlier failures the same start is an ordinary failure (exit 1).
    supervision.clear_breaker(state_dir=state, config=config)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        again = mlxd("serve", "--config", str(config), env=env, timeout=120)
    assert again.returncode == 1
    assert supervision.gave_up_reason(state_dir=state, config=config) is None


def test_a_port_in_use_is_one_line_on_stderr_and_in_the_log(tmp_path: Path) -> None:
    """No terminal (as under `mlxd start` or launchd): the reason still reaches both."""
    import os
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "mlxd.toml").write_text(f"[server]\nport = {port}\n")
        result = mlxd("serve", "--config", str(tmp_path / "mlxd.toml"), env=isolated_env(tmp_path))
    assert result.returncode == 1
    expected = f"port {port} is in use by pid {os.getpid()}: set [server] port or stop it"
    assert result.stderr.splitlines() == [f"error: {expected}"]
    log = (tmp_path / "state" / "mlxd" / "log" / "mlxd.log").read_text()
    assert expected in log
    assert len(log.splitlines()) == 1


def test_an_mlx_runtime_that_cannot_load_ends_serve_with_one_line_and_exit_1(tmp_path: Path) -> None:
    """A broken install (here an mlx-lm whose import fails, first on PYTHONPATH): the worker
    cannot start, so the daemon must not stay up with requests that would never finish."""
    broken = tmp_path / "broken"
    (broken / "mlx_lm").mkdir(parents=True)
    (broken / "mlx_lm" / "__init__.py").write_text('raise ImportError("stand-in: this mlx-lm is broken")\n')
    (tmp_path / "mlxd.toml").write_text(f"[server]\nport = {free_port()}\n")
    path = os.pathsep.join(p for p in (str(broken), os.environ.get("PYTHONPATH")) if p)
    # The timeout is the bound: a daemon left serving without its worker would run into it.
    result = mlxd(
        "serve", "--config", str(tmp_path / "mlxd.toml"), env=isolated_env(tmp_path, PYTHONPATH=path)
    )
    assert result.returncode == 1
    expected = "the MLX runtime failed to load: ImportError: stand-in: this mlx-lm is broken"
    error, hint = result.stderr.splitlines()
    assert error == f"error: {expected}"
    assert hint.startswith("hint: reinstall MLX and mlx-lm: `")
    assert "-m pip install -U " in hint
    log = (tmp_path / "state" / "mlxd" / "log" / "mlxd.log").read_text()
    (line,) = [line for line in log.splitlines() if expected in line]
    assert f"could not start: {expected} (hint: reinstall MLX" in line
    assert "Traceback" not in log


def test_an_invalid_config_is_in_the_log_too(tmp_path: Path) -> None:
    (tmp_path / "mlxd.toml").write_text("[runtime]\nmax_queue = 1.0\n")
    result = mlxd("serve", "--config", str(tmp_path / "mlxd.toml"), env=isolated_env(tmp_path))
    assert result.returncode == 78
    assert "runtime.max_queue (line 2)" in result.stderr
    log = (tmp_path / "state" / "mlxd" / "log" / "mlxd.log").read_text()
    assert "could not start: invalid config" in log
    assert "runtime.max_queue (line 2)" in log
    assert "mlxd config check" in log  # the hint


def test_non_loopback_host_without_api_key_is_refused(tmp_path: Path) -> None:
    result = mlxd(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 78
    assert "api_key" in result.stderr


@pytest.fixture
def configured_server(
    tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    config = tmp_path / "mlxd.toml"
    config.write_text(f'[server]\nport = {port}\n[models.tiny]\nmodel = "{tiny_model_dir}"\n')
    process = spawn("serve", "--config", str(config), env=isolated_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, process, config
    finally:
        process.terminate()
        process.communicate(timeout=60)


def _config_status(url: str) -> dict[str, object]:
    return httpx.get(url + "/mlxd/status").json()["config"]  # type: ignore[no-any-return]


def test_sighup_reloads(configured_server: tuple[str, subprocess.Popen[str], Path]) -> None:
    url, process, _ = configured_server
    before = _config_status(url)["last_reload_at"]
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _config_status(url)["last_reload_at"] == before:
        time.sleep(0.05)
    assert _config_status(url)["last_reload_at"] != before
    assert httpx.get(url + "/health").status_code == 200


def test_mlxd_reload_command(
    configured_server: tuple[str, subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    url, _, config = configured_server
    env = isolated_env(tmp_path)
    text = config.read_text()

    def reload() -> subprocess.CompletedProcess[str]:
        return mlxd("reload", "--config", str(config), env=env, timeout=60)

    write_config(config, text + "[defaults]\nmax_tokens = 3\n")  # as editors save: never half-read
    applied = reload()
    assert applied.returncode == 0, applied.stderr
    write_config(config, text + "[defaults]\nmax_tokens = 'three'\n")
    rejected = reload()
    assert rejected.returncode == 78
    assert "defaults.max_tokens" in rejected.stderr
    assert "Traceback" not in rejected.stderr
    # The old (valid) generation keeps serving.
    reply = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x"}, timeout=60).json()
    assert reply["usage"]["completion_tokens"] == 3


def test_log_prompts_puts_prompts_and_outputs_in_the_log(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    config = tmp_path / "mlxd.toml"
    config.write_text(
        f'[server]\nport = {port}\nlog_prompts = true\n[models.t]\nmodel = "{tiny_model_dir}"\n'
    )
    process = spawn("serve", "--config", str(config), env=isolated_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        reply = httpx.post(
            url + "/v1/completions",
            json={"model": "t", "prompt": "zebra canary", "max_tokens": 3},
            timeout=60,
        )
        text = reply.json()["choices"][0]["text"]
    finally:
        process.terminate()
        process.communicate(timeout=60)
    log = (tmp_path / "state" / "mlxd" / "log" / "mlxd.log").read_text()
    assert "zebra canary" in log
    assert repr([text]) in log
