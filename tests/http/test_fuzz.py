"""schemathesis against the OpenAPI schema Litestar generates: no 5xx, ever, and every error in its dialect's envelope. The cases go to a real daemon; its engine is the fake one, whose
admission (prompt checks, grammar compilation) is the runtime's own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

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


#: One pytest item per operation (not ``SCHEMA.parametrize()``, whose sub-tests collapse into
#: one item under pytest-xdist), each fuzzed by hypothesis through schemathesis' strategies
#: for valid and for invalid requests. Sorted: every xdist worker must collect one order.
OPERATIONS = sorted((result.ok() for result in SCHEMA.get_all_operations()), key=lambda op: op.label)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_5xx_and_every_error_in_the_envelope(operation: Any, fuzz_daemon: RunningDaemon) -> None:
    @given(case=st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode)))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def fuzz(case: Any) -> None:
        check_case(case, fuzz_daemon)

    fuzz()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_a_wrong_method_or_media_type_is_a_4xx_in_the_envelope(
    operation: Any, fuzz_daemon: RunningDaemon
) -> None:
    path = re.sub(r"\{\w+\}", "x", operation.path)
    with fuzz_daemon.client() as http:
        wrong = "PATCH" if operation.method.upper() != "PATCH" else "PUT"
        response = http.request(wrong, path)
        assert response.status_code == 405, response.text
        check_envelope(path, response)
        if operation.method.upper() == "POST":
            response = http.post(path, content=b"a=1", headers={"content-type": "text/plain"})
            assert 400 <= response.status_code < 500, response.text
            check_envelope(path, response)


def check_case(case: Any, fuzz_daemon: RunningDaemon) -> None:
    """One generated request: never a 5xx, every error in its dialect's envelope."""
    response = case.call(base_url=fuzz_daemon.url, timeout=60)
    status = response.status_code
    CASES.append(status)
    assert status < 500, (case.method, case.path, case.body, response.text)
    if status >= 400:
        check_envelope(case.formatted_path, response)


def check_envelope(path: str, response: Any) -> None:
    """A 4xx body in the envelope of the dialect ``path`` belongs to, with a message."""
    body = response.json()
    dialect = dialect_for(path)
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
    # Every operation ran (its cases land in this process: keep this module on one worker).
    assert len(CASES) >= 1000, len(CASES)
    assert not [status for status in CASES if status >= 500]
    print(f"\nfuzzed {len(CASES)} cases: " + ", ".join(f"{s}: {CASES.count(s)}" for s in sorted(set(CASES))))
