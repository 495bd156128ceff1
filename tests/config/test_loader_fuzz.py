"""Property tests: whatever a config file or the overrides hold, the loader raises only ConfigError."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxd.config.loader import load_config
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ConfigError

# Real key names make the generated documents reach deep into validation, random ones
# exercise unknown keys (and the quoting of odd names in error messages).
NAMES = [
    "server", "runtime", "limits", "defaults", "models", "host", "port", "api_key", "allowed_hosts",
    "max_request_bytes", "request_timeout", "keep_alive", "memory_budget", "prompt_cache_bytes",
    "temperature", "top_p", "stop", "max_tokens", "qwen", "model", "revision", "adapter", "aliases",
    "default", "chat_template_kwargs", "enable_thinking", "log_level",
]  # fmt: skip
TEXT_CHARS = st.characters(exclude_categories=["Cs"])  # surrogates cannot be written as UTF-8
KEYS = st.one_of(st.sampled_from(NAMES), st.text(TEXT_CHARS, max_size=8))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(TEXT_CHARS, max_size=12),
    st.sampled_from(["15m", "forever", "4MiB", "75%", "org/name", "./here", "main", "0.0.0.0", "debug"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=5)


def toml_value(value: Any) -> str:
    """A tiny TOML writer for the generated documents (inline tables only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_value(key)} = {toml_value(value)}\n" for key, value in data.items())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "mlxd.toml"


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def problems_from(load: Callable[[], MlxdConfig]) -> list[str] | None:
    """None when the config loaded, else its problems (any other exception fails the test)."""
    try:
        load()
    except ConfigError as error:
        return error.problems
    return None


def assert_readable(problems: list[str] | None) -> None:
    if problems is not None:
        assert problems
        assert all(len(problem.splitlines()) == 1 for problem in problems)


@FUZZ
@given(DOCUMENTS)
def test_any_document_loads_or_raises_config_error(scratch: Path, data: dict[str, Any]) -> None:
    scratch.write_text(toml_document(data), encoding="utf-8")
    assert_readable(problems_from(lambda: load_config(scratch)))


@FUZZ
@given(st.dictionaries(KEYS, st.one_of(st.none(), VALUES), max_size=5))
def test_any_overrides_load_or_raise_config_error(data: dict[str, Any]) -> None:
    assert_readable(problems_from(lambda: load_config(None, data)))


@FUZZ
@given(st.text(TEXT_CHARS, max_size=200))
def test_any_text_loads_or_raises_config_error(scratch: Path, text: str) -> None:
    scratch.write_text(text, encoding="utf-8")
    assert_readable(problems_from(lambda: load_config(scratch)))
