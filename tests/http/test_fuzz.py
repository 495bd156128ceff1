"""schemathesis against the OpenAPI schema Litestar generates: no 5xx, ever, and every error in its dialect's envelope. The cases go to a real daemon; its engine is the fake one, whose
admission (prompt checks, grammar compilation) is the runtime's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from mlxd.config import load_config
from mlxd.http.app import create_litestar
from mlxd.http.dialects import Dialect, dialect_for
from mlxd.http.state import DaemonState
from tests.conftest import RunningDaemon, fake_engine, serving

pytestmark = [pytest.mark.server]


class _SchemaOnly:
    """Enough of a config source to build the routes (the schema needs no engine)."""

    current = load_config(None)
    generation = 1
    last_error = None
    path = None


SCHEMA = schemathesis.openapi.from_dict(
    create_litestar(DaemonState(_SchemaOnly(), None)).openapi_schema.to_schema()  # type: ignore[arg-type]
)
CASES: list[int] = []


FUZZ_CONFIG = """
[server]
port = 0
[limits]
max_tokens = 8
[runtime]
keep_alive = "forever"
[models.tiny]
model = "org/tiny"
aliases = ["gpt-4o-mini"]
"""


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("fuzz")
    with serving(root, FUZZ_CONFIG, fake_engine(FUZZ_CONFIG, root)) as running:
        yield running


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_and_every_error_in_the_envelope(case: Any, fuzz_daemon: RunningDaemon) -> None:
    response = case.call(base_url=fuzz_daemon.url, timeout=60)
    status = response.status_code
    CASES.append(status)
    assert status < 500, (case.method, case.path, case.body, response.text)
    if status >= 400:
        body = response.json()
        dialect = dialect_for(case.formatted_path)
        if dialect is Dialect.OLLAMA:
            message = body["error"]
        else:
            error = body["error"]
            message = error["message"]
            assert isinstance(error["type"], str)
            assert dialect is not Dialect.ANTHROPIC or body["type"] == "error"
        assert isinstance(message, str)
        assert message
        assert "Traceback" not in message


def test_daemon_survived_the_fuzzing(fuzz_daemon: RunningDaemon) -> None:
    with fuzz_daemon.client() as http:
        assert http.get("/health").status_code == 200
        ok = http.post("/v1/completions", json={"model": "tiny", "prompt": "still here", "max_tokens": 2})
        assert ok.status_code == 200
    assert not [status for status in CASES if status >= 500]
    print(f"\nfuzzed {len(CASES)} cases: " + ", ".join(f"{s}: {CASES.count(s)}" for s in sorted(set(CASES))))
