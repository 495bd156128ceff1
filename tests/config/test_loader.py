"""Loading mlxd.toml: precedence, discovery, relative paths, and errors that name key and line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mlxd.config.loader import discover_config_path, load_config
from mlxd.config.paths import user_config_file
from mlxd.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return caught.value.problems


# -- precedence: overrides > environment > file > defaults ---------------------------------


@pytest.fixture
def port_file(tmp_path: Path) -> Path:
    return write(tmp_path / "mlxd.toml", '[server]\nhost = "localhost"\nport = 1000\n')


def test_defaults_apply_without_a_file() -> None:
    assert load_config(None).server.port == 8080


def test_the_file_beats_defaults(port_file: Path) -> None:
    config = load_config(port_file)
    assert config.server.port == 1000
    assert config.server.host == "localhost"


def test_the_environment_beats_the_file(port_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_SERVER__PORT", "2000")
    config = load_config(port_file)
    assert config.server.port == 2000
    assert config.server.host == "localhost"  # a nested env value does not reset its table


def test_overrides_beat_the_environment(port_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_SERVER__PORT", "2000")
    config = load_config(port_file, {"server": {"port": 3000}})
    assert config.server.port == 3000
    assert config.server.host == "localhost"  # overrides are deep-merged


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_SERVER__API_KEY", "s3cret")
    assert load_config(None).server.api_key.get_secret_value() == "s3cret"


def test_environment_merges_into_a_file_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "mlxd.toml", '[models.qwen]\nmodel = "org/name"\n[models.qwen.defaults]\ntop_p = 0.5\n'
    )
    monkeypatch.setenv("MLXD_MODELS__QWEN__DEFAULTS__TEMPERATURE", "0.3")
    defaults = load_config(path).models["qwen"].defaults
    assert (defaults.temperature, defaults.top_p) == (0.3, 0.5)


# -- errors name the key path and where the value came from --------------------------------

RANGE_ERROR = """\
[server]
port = 8080

[runtime]
keep_alive = "15m"

[models.qwen]
model = "mlx-community/Qwen2.5-7B-Instruct-4bit"
default = true

[models.qwen.defaults]
temperature = 2.5
"""


def test_out_of_range_value_names_key_and_line(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path / "mlxd.toml", RANGE_ERROR))
    assert problems == ["models.qwen.defaults.temperature (line 12): Input should be less than or equal to 2"]


def test_unknown_key_is_an_error_with_path_line_and_suggestion(tmp_path: Path) -> None:
    text = '[models.qwen]\nmodel = "org/name"\n\n[models.qwen.defaults]\ntempreature = 1\n'
    [problem] = problems_of(write(tmp_path / "mlxd.toml", text))
    assert problem == "models.qwen.defaults.tempreature (line 5): unknown key (did you mean 'temperature'?)"


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path / "mlxd.toml", "[serverr]\nport = 1\n"))
    assert problem.startswith("serverr (line 1): unknown key")


def test_wrong_type_is_named(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path / "mlxd.toml", '[server]\nport = "eighty"\n'))
    assert problem.startswith("server.port (line 2): ")
    assert "integer" in problem


def test_missing_required_key_points_at_its_table(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path / "mlxd.toml", '\n[models.qwen]\nrevision = "main"\n'))
    assert problem == "models.qwen.model (line 2): required key is missing"


def test_every_problem_is_reported_once(tmp_path: Path) -> None:
    text = '[server]\nport = -1\nportt = 2\n[runtime]\nkeep_alive = "soon"\n'
    problems = problems_of(write(tmp_path / "mlxd.toml", text))
    assert [p.split(" ")[0] for p in problems] == ["server.port", "server.portt", "runtime.keep_alive"]


def test_a_union_mismatch_is_one_line(tmp_path: Path) -> None:
    text = '[models.a]\nmodel = "o/n"\nchat_template_kwargs = { enable_thinking = [1] }\n'
    [problem] = problems_of(write(tmp_path / "mlxd.toml", text))
    assert problem.startswith(
        "models.a.chat_template_kwargs.enable_thinking (line 3): Input should be a valid "
    )


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", "[server]\nport = 8080\nhost = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not valid TOML" in caught.value.message
    [problem] = caught.value.problems
    assert problem.startswith("line 3, column ")


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_SERVER__PORT", "abc")
    [problem] = problems_of(None)
    assert problem.startswith("server.port (from MLXD_SERVER__PORT): ")


def test_unparseable_environment_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_SERVER__ALLOWED_HOSTS", "[not json")
    [problem] = problems_of(None)
    assert "MLXD_SERVER__ALLOWED_HOSTS" in problem


def test_override_errors_say_command_line() -> None:
    [problem] = problems_of(None, overrides={"server": {"port": 70000}})
    assert problem.startswith("server.port (command line): ")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_errors_carry_no_traceback_or_urls(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path / "mlxd.toml", RANGE_ERROR + "bogus = 1\n"))
    text = "\n".join(problems)
    assert "Traceback" not in text
    assert "errors.pydantic.dev" not in text
    assert "type=" not in text


def test_exposed_host_requires_an_api_key(tmp_path: Path) -> None:
    path = write(tmp_path / "mlxd.toml", '[server]\nhost = "0.0.0.0"\n')
    [problem] = problems_of(path)
    assert problem.startswith("server (line 1): ")
    assert "api_key" in problem
    assert load_config(path, {"server": {"api_key": "k"}}).server.host == "0.0.0.0"


# -- discovery -----------------------------------------------------------------------------


def test_discovery_order(isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover_config_path() is None
    user = write(user_config_file(), "")
    assert user.is_relative_to(tmp_path / "home")  # the isolation reached platformdirs
    assert discover_config_path() == user
    local = write(isolated / "mlxd.toml", "")
    assert discover_config_path() == local
    from_env = write(tmp_path / "env.toml", "")
    monkeypatch.setenv("MLXD_CONFIG", str(from_env))
    assert discover_config_path() == from_env
    explicit = tmp_path / "explicit.toml"
    assert discover_config_path(explicit) == explicit


def test_explicit_paths_are_returned_even_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLXD_CONFIG", str(tmp_path / "missing.toml"))
    assert discover_config_path() == tmp_path / "missing.toml"


# -- relative paths, adapters, permissions -------------------------------------------------


def test_relative_paths_resolve_against_the_file(tmp_path: Path, isolated: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "adapters" / "sql").mkdir(parents=True)
    (conf / "models" / "tiny").mkdir(parents=True)
    text = '[models.local]\nmodel = "./models/tiny"\nadapter = "adapters/sql"\n'
    model = load_config(write(conf / "mlxd.toml", text)).models["local"]
    assert Path.cwd() == isolated  # the working directory is elsewhere
    assert model.local_path == (conf / "models" / "tiny").resolve()
    assert model.adapter_path == (conf / "adapters" / "sql").resolve()


def test_a_missing_adapter_directory_is_an_error(tmp_path: Path) -> None:
    text = '[models.sql]\nmodel = "org/name"\nadapter = "adapters/sql"\n'
    [problem] = problems_of(write(tmp_path / "mlxd.toml", text))
    assert problem == "models.sql.adapter (line 3): adapter directory not found: adapters/sql"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize(
    ("mode", "key", "warns"),
    [
        (0o644, "s3cr3t-v4lue", True),
        (0o640, "s3cr3t-v4lue", True),
        (0o600, "s3cr3t-v4lue", False),
        (0o644, "", False),
    ],
)
def test_readable_api_key_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, key: str, warns: bool
) -> None:
    path = write(tmp_path / "mlxd.toml", f'[server]\napi_key = "{key}"\n')
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="mlxd.config"):
        load_config(path)
    warned = [r for r in caplog.records if "chmod 600" in r.getMessage()]
    assert bool(warned) is warns
    assert all(key not in r.getMessage() for r in warned if key)  # never the key itself


def test_overrides_cannot_reach_settings_init_parameters() -> None:
    [problem] = problems_of(None, overrides={"_env_prefix": "OTHER_"})
    assert problem == "_env_prefix (command line): unknown key"


@pytest.mark.parametrize(("budget", "expected"), [("75%", 12 * 2**30), ("4GiB", 4 * 2**30), (1000, 1000)])
def test_memory_budget_in_bytes(budget: str | int, expected: int) -> None:
    config = load_config(None, {"runtime": {"memory_budget": budget}})
    assert config.runtime.memory_budget_bytes(16 * 2**30) == expected


# -- strict values: a typo of type must not pass -------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[runtime]\nmax_batch_size = "16"\n',
            'runtime.max_batch_size (line 2): Input should be a valid integer, not a string: "16"',
        ),
        (
            "[runtime]\nmax_queue = 1.0\n",
            "runtime.max_queue (line 2): Input should be a valid integer, not a number: 1.0",
        ),
        (
            '[server]\nlog_prompts = "off"\n',
            'server.log_prompts (line 2): Input should be a valid boolean, not a string: "off"',
        ),
        (
            '[models.a]\nmodel = "o/n"\ndefault = "yes"\n',
            'models.a.default (line 3): Input should be a valid boolean, not a string: "yes"',
        ),
        (
            '[models.a]\nmodel = "o/n"\npreload = 1\n',
            "models.a.preload (line 3): Input should be a valid boolean, not an integer: 1",
        ),
        (
            "[defaults]\ntemperature = true\n",
            "defaults.temperature (line 2): Input should be a valid number, not a boolean: true",
        ),
        (
            '[server]\nallowed_hosts = ["a", 2]\n',
            "server.allowed_hosts[1] (line 2): Input should be a valid string, not an integer: 2",
        ),
        (
            '[server]\nallowed_hosts = "a"\n',
            'server.allowed_hosts (line 2): Input should be a list, not a string: "a"',
        ),
    ],
)
def test_wrong_types_are_errors_not_coerced(tmp_path: Path, text: str, problem: str) -> None:
    assert problems_of(write(tmp_path / "mlxd.toml", text)) == [problem]


def test_a_wrong_typed_api_key_is_not_echoed(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path / "mlxd.toml", "[server]\napi_key = 987654321\n"))
    assert problem.startswith("server.api_key (line 2): Input should be a valid string")
    assert "987654321" not in problem


def test_human_spellings_and_natural_types_still_pass(tmp_path: Path) -> None:
    text = """\
[server]
max_request_bytes = "4MiB"
request_timeout = "10s"
drain_timeout = 5
allowed_hosts = ["mlxd.local"]
[runtime]
memory_budget = "24GB"
keep_alive = 0
prompt_cache_bytes = 1000000
[defaults]
temperature = 1
stop = ["###"]
[models.a]
model = "o/n"
aliases = ["b"]
keep_alive = "forever"
chat_template_kwargs = { enable_thinking = false, reasoning_effort = "low" }
"""
    config = load_config(write(tmp_path / "mlxd.toml", text))
    assert config.server.max_request_bytes == 4 * 2**20
    assert config.server.request_timeout == 10.0
    assert config.server.drain_timeout == 5.0
    assert config.server.allowed_hosts == ("mlxd.local",)
    assert config.runtime.keep_alive == 0.0
    assert config.defaults.temperature == 1.0
    assert config.defaults.stop == ("###",)
    assert config.models["a"].aliases == ("b",)
    assert config.models["a"].keep_alive == float("inf")


def test_environment_strings_are_converted_to_each_keys_type(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MLXD_SERVER__PORT": "9000",
        "MLXD_SERVER__LOG_PROMPTS": "true",
        "MLXD_SERVER__MAX_REQUEST_BYTES": "1MiB",
        "MLXD_RUNTIME__KEEP_ALIVE": "15m",
        "MLXD_RUNTIME__MAX_QUEUE": "0",
        "MLXD_RUNTIME__MEMORY_BUDGET": "50%",
        "MLXD_DEFAULTS__TOP_P": "0.5",
        "MLXD_SERVER__ALLOWED_HOSTS": '["a.local"]',
    }.items():
        monkeypatch.setenv(name, value)
    config = load_config(None)
    assert config.server.port == 9000
    assert config.server.log_prompts is True
    assert config.server.max_request_bytes == 2**20
    assert config.runtime.keep_alive == 900.0
    assert config.runtime.max_queue == 0
    assert config.runtime.memory_budget == "50%"
    assert config.defaults.top_p == 0.5
    assert config.server.allowed_hosts == ("a.local",)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MLXD_SERVER__PORT", "9.5", "valid integer"),
        ("MLXD_SERVER__PORT", "99999", "less than or equal to 65535"),
        ("MLXD_SERVER__LOG_PROMPTS", "maybe", "valid boolean"),
        ("MLXD_RUNTIME__MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
    ],
)
def test_environment_values_are_parsed_strictly(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    [problem] = problems_of(None)
    assert problem.startswith(f"{name.removeprefix('MLXD_').lower().replace('__', '.')} (from {name}): ")
    assert says in problem


def test_a_missing_local_model_directory_is_an_error(tmp_path: Path) -> None:
    text = '[models.local]\nmodel = "./models/gone"\n[models.hub]\nmodel = "org/not-pulled-yet"\n'
    [problem] = problems_of(write(tmp_path / "mlxd.toml", text))
    assert problem == "models.local.model (line 2): model directory not found: ./models/gone"


def test_a_model_name_matches_in_any_case_unless_two_would(tmp_path: Path) -> None:
    """As the Hub's repo ids and Ollama's model names match; never a guess between two."""
    path = tmp_path / "mlxd.toml"
    path.write_text(
        '[models.qwen]\nmodel = "mlx-community/Qwen2.5-7B-Instruct-4bit"\naliases = ["GPT-4o-mini"]\n'
        '[models.Llama]\nmodel = "org/llama"\n[models.LLAMA]\nmodel = "org/llama-big"\n'
        '[models.fast]\nmodel = "org/Model"\n[models.slow]\nmodel = "org/Model"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.find_alias("qwen") == "qwen"
    assert config.find_alias("QWEN") == "qwen"
    assert config.find_alias("gpt-4o-mini") == "qwen"
    assert config.find_alias("mlx-community/qwen2.5-7b-instruct-4bit") == "qwen"
    assert config.find_alias("Llama") == "Llama"  # exact first
    assert config.find_alias("llama") is None  # two aliases differ only in case: no guess
    assert config.find_alias("mistral") is None
    assert config.find_alias("org/Model") == "fast"  # exactly: the first alias of that repo
    assert config.find_alias("org/model") is None  # in another case: two aliases, no guess
