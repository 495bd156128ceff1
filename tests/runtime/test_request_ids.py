"""One request id end to end: ``X-Request-Id`` is on every log line about the request, the
lines the MLX worker thread writes included. ``mlxd serve`` as a subprocess, its own log
file read back (JSON lines), real MLX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_serve import isolated_env, spawn, wait_healthy
from tests.conftest import free_port

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def test_every_line_about_a_request_carries_its_id_on_any_thread(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Files that pass validation but that mlx-lm cannot load: one layer more than the weights.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    settings = json.loads((broken / "config.json").read_text())
    settings["num_hidden_layers"] += 1
    (broken / "config.json").write_text(json.dumps(settings))
    port = free_port()
    config = tmp_path / "mlxd.toml"
    config.write_text(
        f'[server]\nport = {port}\nlog_format = "json"\nlog_level = "debug"\n'
        f'[models.tiny]\nmodel = "{tiny_model_dir}"\n[models.broken]\nmodel = "{broken}"\n'
    )
    process = spawn("serve", "--config", str(config), env=isolated_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        for model, request_id, status in (("tiny", "trace-tiny-1", 200), ("broken", "trace-broken-2", 503)):
            reply = httpx.post(
                url + "/v1/completions",
                json={"model": model, "prompt": "hello there", "max_tokens": 3},
                headers={"x-request-id": request_id},
                timeout=60,
            )
            assert reply.status_code == status
    finally:
        process.terminate()
        process.communicate(timeout=60)
    lines = [
        json.loads(line)
        for line in (tmp_path / "state" / "mlxd" / "log" / "mlxd.log").read_text().splitlines()
    ]

    def about(request_id: str) -> list[str]:
        return [entry["message"] for entry in lines if entry.get("request_id") == request_id]

    tiny, broken_lines = about("trace-tiny-1"), about("trace-broken-2")
    # Written on the MLX worker thread: the load, and the sequence starting.
    assert any(m.startswith("reading the weights of") for m in tiny), tiny
    assert any(" ready in " in m for m in tiny), tiny
    assert any(m.startswith("starting 1 sequence(s)") for m in tiny), tiny
    # Written on the event loop: residency and the access line.
    assert any(m.startswith("loaded tiny") for m in tiny), tiny
    assert any(m.startswith("POST /v1/completions 200") for m in tiny), tiny
    assert any(m.startswith("reading the weights of") for m in broken_lines), broken_lines  # the worker
    assert any(m.startswith("could not load broken") for m in broken_lines), broken_lines  # the loop
    # No line about either request went out without its id.
    untagged: list[Any] = [
        e
        for e in lines
        if not e.get("request_id")
        and any(
            k in e["message"]
            for k in ("reading the weights", "starting 1 sequence", "could not load", "POST /v1")
        )
    ]
    assert untagged == []
