"""Live reload against a real daemon: a real file, edited the way editors save, real watchfiles."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningDaemon, eventually, start_daemon, stop_daemon, write_config
from tests.runtime.helpers import on_worker

pytestmark = [pytest.mark.mlx, pytest.mark.server]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlxd.runtime.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "other", seed=42)


def config_text(model: Path, max_tokens: int = 8, extra: str = "") -> str:
    return f"""
[server]
port = 0

[runtime]
keep_alive = "forever"

[defaults]
temperature = 0.0

[models.a]
model = "{model}"
default = true

[models.a.defaults]
max_tokens = {max_tokens}
{extra}
"""


@pytest.fixture
def live(tiny_model_dir: Path, tmp_path: Path) -> Iterator[RunningDaemon]:
    path = write_config(tmp_path / "mlxd.toml", config_text(tiny_model_dir))
    running, thread = start_daemon(path)
    yield running
    stop_daemon(running, thread)


def chat(daemon: RunningDaemon, **body: Any) -> httpx.Response:
    with daemon.client() as http:
        return http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **body}
        )


def tokens(daemon: RunningDaemon, **body: Any) -> int:
    return int(chat(daemon, **body).json()["usage"]["completion_tokens"])


def test_defaults_edit_applies_within_two_seconds(live: RunningDaemon, tiny_model_dir: Path) -> None:
    assert tokens(live) == 8
    written = datetime.now(UTC)
    write_config(live.config_path, config_text(tiny_model_dir, max_tokens=5))
    assert eventually(lambda: live.status()["config"]["generation"] == 2, 15.0)  # type: ignore[index]
    # Timed by the daemon's own clock (when the reload read the file), not by requests
    # polling it on a loaded machine.
    reloaded = datetime.fromisoformat(live.status()["config"]["last_reload_at"])  # type: ignore[index]
    assert (reloaded - written).total_seconds() < 2.0
    assert tokens(live) == 5


def test_aliases_appear_and_disappear(live: RunningDaemon, tiny_model_dir: Path) -> None:
    extra = f'\n[models.b]\nmodel = "{tiny_model_dir}"\naliases = ["bee"]\n'
    write_config(live.config_path, config_text(tiny_model_dir, extra=extra))

    def listed() -> set[str]:
        with live.client() as http:
            return {m["id"] for m in http.get("/v1/models").json()["data"]}

    assert eventually(lambda: {"b", "bee"} <= listed(), 15.0)
    assert chat(live, model="bee", max_tokens=2).status_code == 200
    write_config(live.config_path, config_text(tiny_model_dir))
    assert eventually(lambda: "b" not in listed(), 15.0)
    response = chat(live, model="b")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("[server\nport = 1", "line"),
        (
            "[server]\nport = 0\n[models.a]\nmodel = 'x/y'\nmax_tokens_limit = 'lots'\n",
            "models.a.max_tokens_limit",
        ),
        ("[server]\nport = 0\n[runtime]\nkeep_alive = 'soon'\n", "runtime.keep_alive"),
        ("[server]\nport = 0\n[models.a]\nmodel = 'x/y'\nadapter = 'missing-dir'\n", "models.a.adapter"),
    ],
    ids=["toml-syntax", "wrong-type", "bad-duration", "missing-adapter"],
)
def test_invalid_edit_keeps_the_old_config_and_reports(
    live: RunningDaemon, tiny_model_dir: Path, bad: str, needle: str
) -> None:
    write_config(live.config_path, bad)
    assert eventually(lambda: live.status()["config"]["last_error"] is not None, 15.0)  # type: ignore[index]
    status = live.status()
    assert needle in status["config"]["last_error"]  # type: ignore[index]
    assert status["config"]["generation"] == 1  # type: ignore[index]
    assert tokens(live) == 8  # still the old config
    with live.client() as http:
        rejected = http.post("/mlxd/reload")
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "invalid_config"
    write_config(live.config_path, config_text(tiny_model_dir, max_tokens=6))
    assert eventually(lambda: live.status()["config"]["last_error"] is None, 15.0)  # type: ignore[index]
    assert eventually(lambda: tokens(live) == 6, 15.0)


def _stream(daemon: RunningDaemon, body: dict[str, Any], out: list[str]) -> None:
    with httpx.stream("POST", daemon.url + "/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line:
                out.append(line)


def _content(events: list[str]) -> str:
    text = ""
    for event in events:
        payload = event.removeprefix("data: ")
        if payload != "[DONE]":
            chunk = json.loads(payload)
            if chunk["choices"]:
                text += chunk["choices"][0]["delta"].get("content") or ""
    return text


def test_model_swap_lets_the_in_flight_stream_finish(
    live: RunningDaemon, tiny_model_dir: Path, other_model_dir: Path
) -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "swap"}], "max_tokens": 300}
    expected_old = chat(live, **body).json()["choices"][0]["message"]["content"]
    events: list[str] = []
    reader = threading.Thread(target=_stream, args=(live, {**body, "stream": True}, events))
    reader.start()
    assert eventually(lambda: len(events) > 2, 10)
    write_config(live.config_path, config_text(other_model_dir))
    assert eventually(lambda: live.status()["config"]["generation"] == 2, 15.0)  # type: ignore[index]
    reader.join(120)
    assert events[-1] == "data: [DONE]"
    assert _content(events) == expected_old  # finished on the weights it started with
    swapped = chat(live, **body).json()["choices"][0]["message"]["content"]
    assert swapped != expected_old
    assert eventually(lambda: all(m["source"] == "other" for m in live.status()["models"]), 15.0)  # type: ignore[union-attr]


def test_twenty_edits_during_four_streams_drop_nothing(live: RunningDaemon, tiny_model_dir: Path) -> None:
    body = {
        "model": "a",
        "messages": [{"role": "user", "content": "busy"}],
        "max_tokens": 200,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    outputs: list[list[str]] = [[] for _ in range(4)]
    readers = [threading.Thread(target=_stream, args=(live, body, out)) for out in outputs]
    for reader in readers:
        reader.start()
    for i in range(20):
        write_config(live.config_path, config_text(tiny_model_dir, max_tokens=8 + i % 3))
        time.sleep(0.05)
    for reader in readers:
        reader.join(120)
    for out in outputs:
        assert out[-1] == "data: [DONE]"
        usage = json.loads(out[-2].removeprefix("data: "))["usage"]
        assert usage["completion_tokens"] == 200
    assert live.status()["config"]["last_error"] is None  # type: ignore[index]


def runtime_text(model: Path, *, batch: int, cache: str, prefill: int) -> str:
    return f"""
[server]
port = 0
stream_interval = 0

[runtime]
keep_alive = "forever"
max_batch_size = {batch}
prompt_cache_bytes = "{cache}"
prefill_step_size = {prefill}

[defaults]
temperature = 0.0

[models.a]
model = "{model}"
default = true
"""


def burst(daemon: RunningDaemon, count: int, tag: str) -> None:
    """``count`` requests at once, each with its own long prompt (kept in the prompt cache)."""

    async def run() -> None:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=120) as http:
            bodies = [
                {"prompt": f"{tag} {i} " + "words to remember " * 40, "max_tokens": 24} for i in range(count)
            ]
            replies = await asyncio.gather(*[http.post("/v1/completions", json=body) for body in bodies])
        assert [r.status_code for r in replies] == [200] * count

    asyncio.run(run())


def cache_state(daemon: RunningDaemon) -> tuple[int, int]:
    """(prompt-cache bytes, entries) over the loaded models, read on the worker thread."""
    return on_worker(
        daemon,
        lambda worker: (
            sum(r.prompt_cache.bytes for r in worker.runners.values()),
            sum(len(r.prompt_cache) for r in worker.runners.values()),
        ),
    )


def prefill_steps(daemon: RunningDaemon) -> list[int]:
    """The prefill step each loaded model's batch runs with, read on the worker thread."""
    return on_worker(
        daemon, lambda worker: [r.batch.generator.prefill_step_size for r in worker.runners.values()]
    )


def test_runtime_settings_reach_the_worker_on_an_edit(tiny_model_dir: Path, tmp_path: Path) -> None:
    """max_batch_size, prompt_cache_bytes and prefill_step_size apply without a restart."""
    path = write_config(
        tmp_path / "mlxd.toml", runtime_text(tiny_model_dir, batch=2, cache="64MB", prefill=64)
    )
    live, thread = start_daemon(path)
    try:
        burst(live, 6, "first")
        assert live.status()["largest_batch"] == 2  # six at once, two per step
        assert prefill_steps(live) == [64]
        cached, entries = cache_state(live)
        assert entries >= 3
        smaller = cached // 3
        write_config(path, runtime_text(tiny_model_dir, batch=6, cache=str(smaller), prefill=128))
        assert eventually(lambda: live.status()["config"]["generation"] == 2, 15.0)  # type: ignore[index]
        # The new settings reached the worker (generation 2 is counted before it is sent)...
        assert eventually(lambda: prefill_steps(live) == [128], 15.0)
        # ... and shrank the prompt cache at once (evicting).
        shrunk, kept = cache_state(live)
        assert shrunk <= smaller
        assert kept < entries
        burst(live, 6, "second")
        assert 2 < int(live.status()["largest_batch"]) <= 6  # type: ignore[call-overload]
        assert cache_state(live)[0] <= smaller
    finally:
        stop_daemon(live, thread)
