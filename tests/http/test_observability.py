"""Metrics, request ids and log lines, against a real daemon on the fake engine (what is
counted and echoed is the HTTP layer's doing; ``tests/runtime/test_request_ids.py`` reads
the log lines the MLX worker writes)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from mlxd.logs import REQUEST_ID, JsonFormatter, RequestIdFilter
from tests.conftest import RunningDaemon

pytestmark = [pytest.mark.server]


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exported")


def test_metrics_count_requests_tokens_and_latency(fake_daemon: RunningDaemon) -> None:
    with fake_daemon.client() as http:
        before = http.get("/metrics").text
        base_tokens = (
            _metric(before, "mlxd_generated_tokens_total", alias="tiny") if 'alias="tiny"' in before else 0.0
        )
        ok = http.post("/v1/completions", json={"model": "tiny", "prompt": "count me", "max_tokens": 5})
        assert ok.status_code == 200
        stream = http.post(
            "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 3, "stream": True}
        )
        assert stream.status_code == 200
        bad = http.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        assert bad.status_code == 404
        response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _metric(text, "mlxd_requests_total", route="/v1/completions", status="404") >= 1
    assert _metric(text, "mlxd_requests_total", route="/v1/completions", status="200") >= 2
    assert _metric(text, "mlxd_generated_tokens_total", alias="tiny") == base_tokens + 8
    assert _metric(text, "mlxd_time_to_first_token_seconds_count", alias="tiny") >= 2
    assert _metric(text, "mlxd_request_duration_seconds_count", route="/v1/completions") >= 3
    assert _metric(text, "mlxd_config_generation") >= 1
    assert _metric(text, "mlxd_worker_up") == 1
    assert _metric(text, "mlxd_loaded_models") >= 1
    assert "mlxd_model_memory_bytes" in text
    # Unknown paths are grouped so a scanner cannot blow up the label space.
    with fake_daemon.client() as http:
        http.get("/random/path/1")
        http.get("/random/path/2")
        text = http.get("/metrics").text
    assert "/random" not in text
    assert _metric(text, "mlxd_requests_total", route="other", status="404") >= 2


def test_request_id_is_echoed_or_generated(fake_daemon: RunningDaemon) -> None:
    with fake_daemon.client() as http:
        mine = http.get("/v1/models", headers={"x-request-id": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        generated = http.get("/v1/models")
        assert len(generated.headers["x-request-id"]) == 32
        assert http.get("/v1/models").headers["x-request-id"] != generated.headers["x-request-id"]
        hostile = http.get("/v1/models", headers={"x-request-id": "a\tb" + "x" * 100})
        assert hostile.headers["x-request-id"] != "a\tb" + "x" * 100
        refused = http.get("/v1/models", headers={"host": "evil.example", "x-request-id": "r-1"})
        assert refused.status_code == 403
        assert refused.headers["x-request-id"] == "r-1"


def test_log_records_carry_the_request_id() -> None:
    record = logging.LogRecord("mlxd.access", logging.INFO, __file__, 1, "GET %s", ("/health",), None)
    token = REQUEST_ID.set("req-7")
    try:
        assert RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "time": line["time"],
        "level": "info",
        "logger": "mlxd.access",
        "message": "GET /health",
        "request_id": "req-7",
    }
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", (), None)
    RequestIdFilter().filter(plain)
    assert "request_id" not in json.loads(JsonFormatter().format(plain))


def test_health_and_metrics_scrape_cost_nothing_from_the_model(fake_daemon: RunningDaemon) -> None:
    status_before = fake_daemon.status()["loads"]
    for _ in range(5):
        assert httpx.get(fake_daemon.url + "/metrics").status_code == 200
    assert fake_daemon.status()["loads"] == status_before


def test_metrics_count_every_choice_of_n_and_the_prompt_once(fake_daemon: RunningDaemon) -> None:
    def counts() -> tuple[float, float]:
        with fake_daemon.client() as http:
            text = http.get("/metrics").text
        return (
            _metric(text, "mlxd_generated_tokens_total", alias="tiny"),
            _metric(text, "mlxd_prompt_tokens_total", alias="tiny"),
        )

    with fake_daemon.client() as http:
        http.post("/v1/completions", json={"model": "tiny", "prompt": "warm", "max_tokens": 1})
        generated, prompt = counts()
        reply = http.post(
            "/v1/completions", json={"model": "tiny", "prompt": "three ways", "max_tokens": 4, "n": 3}
        ).json()
    after_generated, after_prompt = counts()
    assert after_generated - generated == 12
    assert after_prompt - prompt == reply["usage"]["prompt_tokens"]
