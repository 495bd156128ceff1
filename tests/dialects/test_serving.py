"""How the dialects are served: metrics and the access log by dialect, the second
listener for apps hard-wired to Ollama's port, and the bounded Responses store.

A real daemon on the fake engine: what is counted, listened on and stored is the HTTP
layer's doing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.conftest import (
    LogRecords,
    RunningDaemon,
    fake_engine,
    free_port,
    serving,
    start_daemon,
    write_config,
)

pytestmark = [pytest.mark.server]

HI = [{"role": "user", "content": "hi"}]


def test_metrics_and_the_access_log_name_the_dialect(fake_daemon: RunningDaemon, records: LogRecords) -> None:
    calls = [
        ("/v1/chat/completions", {"model": "tiny", "messages": HI, "max_tokens": 2}, "openai"),
        ("/v1/responses", {"model": "tiny", "input": "hi", "max_output_tokens": 2}, "openai"),
        ("/v1/messages", {"model": "tiny", "messages": HI, "max_tokens": 2}, "anthropic"),
        ("/v1/messages/count_tokens", {"model": "tiny", "messages": HI}, "anthropic"),
        ("/api/chat", {"model": "tiny", "messages": HI, "stream": False}, "ollama"),
        ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}, "ollama"),
    ]
    with fake_daemon.client() as http:
        for path, body, _ in calls:
            assert http.post(path, json=body).status_code == 200
        assert http.post("/api/chat", json={"model": "nope", "messages": HI}).status_code == 404
        metrics = http.get("/metrics").text
    for path, _, dialect in calls:
        assert f'mlxd_requests_total{{dialect="{dialect}",route="{path}",status="200"}}' in metrics
    assert 'mlxd_requests_total{dialect="ollama",route="/api/chat",status="404"}' in metrics
    lines = [r.getMessage() for r in records.records if r.name == "mlxd.access"]
    for path, _, dialect in calls:
        assert any(line.startswith(f"POST {path} 200 ") and line.endswith(f" {dialect}") for line in lines)


def test_a_second_listener_serves_the_same_app(tmp_path: Path) -> None:
    port = free_port()
    config = f"""
[server]
port = 0
ollama_port = {port}
responses_store_size = 2
[models.tiny]
model = "org/tiny"
"""
    engine = fake_engine(config, tmp_path, token_delay=0.001)
    with serving(tmp_path, config, engine) as running:
        client = ollama.Client(host=f"http://127.0.0.1:{port}")
        assert [m.model for m in client.list().models] == ["tiny"]
        reply = client.chat(model="tiny", messages=HI, options={"num_predict": 3})
        assert reply.eval_count == 3
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.get("/").text == "Ollama is running"
            refused = http.get("/api/tags", headers={"host": "evil.example"})
            assert refused.status_code == 403  # the same guards
            assert set(refused.json()) == {"error"}
            # The whole app, not only Ollama's routes.
            assert (
                http.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 1}).status_code == 200
            )
        # The bounded Responses store forgets the least recently used.
        oai = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        first, second, third = (oai.responses.create(input="hi", max_output_tokens=1) for _ in range(3))
        with pytest.raises(openai.NotFoundError):
            oai.responses.retrieve(first.id)
        assert oai.responses.retrieve(second.id).id == second.id
        assert oai.responses.retrieve(third.id).id == third.id


def test_a_taken_ollama_port_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = f"""
[server]
port = 0
ollama_port = {port}
[models.tiny]
model = "org/tiny"
"""
        engine = fake_engine(config, tmp_path)
        with pytest.raises(SystemExit):
            start_daemon(write_config(tmp_path / "mlxd.toml", config), engine=engine)
