"""What clients see when the engine fails or is full, and residency through HTTP: a real
daemon on the fake engine, whose faults are scripted and whose residency is the real one.

Every case ends with the daemon serving again.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mlxd.errors import CapacityError, UnavailableError
from tests.conftest import RunningDaemon, eventually, fake_engine, serving, write_config
from tests.fakes import FakeEngine

pytestmark = [pytest.mark.server]

MB = 2**20
SIZES = {"org/small": 100 * MB, "org/other": 100 * MB, "org/big": 700 * MB}
HI = [{"role": "user", "content": "hi"}]


def config(max_loaded: int = 2, budget: str = "1GB", extra: str = "") -> str:
    return f"""
[server]
port = 0
stream_interval = 0

[runtime]
max_loaded_models = {max_loaded}
memory_budget = "{budget}"
keep_alive = "forever"

[defaults]
temperature = 0.0
max_tokens = 8

[models.small]
model = "org/small"
default = true

[models.other]
model = "org/other"
{extra}
[models.big]
model = "org/big"
"""


@contextlib.contextmanager
def faked(root: Path, text: str, token_delay: float = 0.0) -> Iterator[RunningDaemon]:
    engine = fake_engine(text, root, sizes=SIZES, token_delay=token_delay)
    with serving(root, text, engine) as running:
        yield running


def still_serving(daemon: RunningDaemon) -> None:
    with daemon.client() as http:
        assert http.get("/health").status_code == 200
        reply = http.post("/v1/chat/completions", json={"model": "small", "messages": HI})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 8


def resident(daemon: RunningDaemon) -> list[str]:
    return sorted(m["alias"] for m in daemon.status()["models"])  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with faked(tmp_path_factory.mktemp("faults"), config()) as running:
        yield running


@pytest.fixture
def fake(shared: RunningDaemon) -> Iterator[FakeEngine]:
    """The shared daemon's engine, its faults cleared after the test."""
    engine: FakeEngine = shared.engine
    yield engine
    engine.faults.error_after = None
    engine.faults.refuse = None
    engine.faults.dead = False


def sse_lines(daemon: RunningDaemon, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", daemon.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_an_error_after_the_first_chunk_ends_the_stream_with_one_error_event(
    shared: RunningDaemon, fake: FakeEngine
) -> None:
    fake.faults.error_after = 1
    lines = sse_lines(shared, {"model": "small", "messages": HI, "stream": True})
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[:-2]]
    assert [c for c in contents if c]  # the first token went out
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == "internal_error"
    assert "scripted failure" in error["message"]
    assert lines[-1] == "data: [DONE]"  # then the stream ends properly
    assert lines.count("data: [DONE]") == 1
    fake.faults.error_after = None
    still_serving(shared)


def test_an_error_in_a_non_streaming_request_is_a_500_in_the_envelope(
    shared: RunningDaemon, fake: FakeEngine
) -> None:
    fake.faults.error_after = 3
    client = openai.OpenAI(base_url=shared.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="small", messages=HI)  # type: ignore[arg-type]
    assert failed.value.status_code == 500
    assert "scripted failure" in str(failed.value)
    fake.faults.error_after = None
    still_serving(shared)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CapacityError("too many requests", retry_after=3), 429, "queue_full"),
        (UnavailableError("loading", code="model_loading", retry_after=3), 503, "model_loading"),
    ],
    ids=["capacity", "loading"],
)
def test_a_full_or_loading_engine_says_when_to_retry(
    shared: RunningDaemon, fake: FakeEngine, error: Exception, status: int, code: str
) -> None:
    fake.faults.refuse = error  # type: ignore[assignment]
    with shared.client() as http:
        refused = http.post("/v1/chat/completions", json={"messages": HI})
    assert refused.status_code == status
    assert refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["code"] == code
    fake.faults.refuse = None
    still_serving(shared)


def test_a_dead_worker_makes_health_unhealthy_until_it_is_back(
    shared: RunningDaemon, fake: FakeEngine
) -> None:
    fake.faults.dead = True
    with shared.client() as http:
        health = http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert shared.status()["worker"] == "down"
        assert "mlxd_worker_up 0.0" in http.get("/metrics").text
    fake.faults.dead = False
    still_serving(shared)


def test_when_every_loaded_model_is_busy_a_new_one_gets_503_model_loading(tmp_path: Path) -> None:
    with faked(tmp_path, config(max_loaded=1), token_delay=0.01) as daemon:
        lines: list[str] = []
        # Two seconds of stream: time enough on a loaded machine to ask for the other model.
        body = {"model": "small", "messages": HI, "max_tokens": 200, "stream": True}
        reader = threading.Thread(target=lambda: lines.extend(sse_lines(daemon, body)))
        reader.start()
        assert eventually(lambda: daemon.status()["active_sequences"] == 1)
        with daemon.client() as http:
            refused = http.post("/v1/chat/completions", json={"model": "other", "messages": HI})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_loading"
        assert int(refused.headers["retry-after"]) >= 1
        reader.join(30)
        assert lines[-1] == "data: [DONE]"  # the busy model was never touched
        with daemon.client() as http:  # idle now: it makes room
            assert (
                http.post("/v1/chat/completions", json={"model": "other", "messages": HI}).status_code == 200
            )
        assert resident(daemon) == ["other"]


def test_the_memory_budget_evicts_the_least_recently_used_model(tmp_path: Path) -> None:
    with faked(tmp_path, config(max_loaded=3, budget="850MiB")) as daemon, daemon.client() as http:
        for alias in ("small", "other"):
            assert http.post("/v1/chat/completions", json={"model": alias, "messages": HI}).status_code == 200
        assert resident(daemon) == ["other", "small"]
        assert http.post("/v1/chat/completions", json={"model": "big", "messages": HI}).status_code == 200
        assert resident(daemon) == ["big", "other"]  # 900 MiB of 850: the least recently used went
        memory = {m["alias"]: m["memory_bytes"] for m in daemon.status()["models"]}  # type: ignore[union-attr]
        assert memory == {"big": 700 * MB, "other": 100 * MB}


def test_preload_loads_at_start(tmp_path: Path) -> None:
    with faked(tmp_path, config(extra="preload = true\n")) as daemon:
        assert eventually(lambda: resident(daemon) == ["other"])
        assert daemon.status()["models"][0]["state"] == "loaded"  # type: ignore[index]
        assert daemon.status()["loads"] == 1


def test_a_removed_alias_finishes_its_request_then_leaves(tmp_path: Path) -> None:
    with faked(tmp_path, config(), token_delay=0.005) as daemon:
        lines: list[str] = []
        body = {"model": "other", "messages": HI, "max_tokens": 600, "stream": True}
        reader = threading.Thread(target=lambda: lines.extend(sse_lines(daemon, body)))
        reader.start()
        assert eventually(lambda: "other" in resident(daemon))
        text = config().replace('[models.other]\nmodel = "org/other"\n', "")
        write_config(daemon.config_path, text)
        with daemon.client() as http:  # now, not when the watcher wakes: the stream is still on
            assert http.post("/mlxd/reload").json() == {"generation": 2}
        assert "other" in resident(daemon)  # still streaming
        reader.join(30)
        assert lines[-1] == "data: [DONE]"
        assert len(lines) == 600 + 3  # role, 600 tokens, finish, [DONE]
        assert eventually(lambda: "other" not in resident(daemon))
        with daemon.client() as http:
            assert (
                http.post("/v1/chat/completions", json={"model": "other", "messages": HI}).status_code == 404
            )


def test_load_and_unload_on_demand(tmp_path: Path) -> None:
    with faked(tmp_path, config(), token_delay=0.01) as daemon, daemon.client() as http:
        assert http.post("/mlxd/models/other/load").json() == {"alias": "other", "loaded": True}
        assert resident(daemon) == ["other"]
        lines: list[str] = []
        body = {"model": "other", "messages": HI, "max_tokens": 200, "stream": True}
        reader = threading.Thread(target=lambda: lines.extend(sse_lines(daemon, body)))
        reader.start()
        assert eventually(lambda: daemon.status()["active_sequences"] == 1)
        busy = http.post("/mlxd/models/other/unload")
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "unavailable"
        reader.join(30)
        assert http.post("/mlxd/models/other/unload").json() == {"alias": "other", "unloaded": True}
        assert resident(daemon) == []
        assert http.post("/mlxd/models/nope/load").status_code == 404
