"""The starter file, the shipped example mlxd.toml, and the committed JSON Schema."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mlxd.config.distributed import DistributedConfig
from mlxd.config.loader import load_config
from mlxd.config.models import ModelConfig
from mlxd.config.schema import MlxdConfig
from mlxd.config.template import EXAMPLE_ALIAS, render_starter
from mlxd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def uncomment(block: str) -> str:
    return "\n".join(line.removeprefix("# ") if line != "#" else "" for line in block.splitlines())


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    path = tmp_path / "mlxd.toml"
    path.write_text(render_starter(), encoding="utf-8")
    return path


def test_the_starter_validates_and_equals_the_defaults(starter: Path) -> None:
    assert load_config(starter) == load_config(None)


def test_the_starter_writes_every_key_with_its_description() -> None:
    text = render_starter()
    data = tomllib.loads(text)
    for section, info in MlxdConfig.model_fields.items():
        assert info.description
        assert info.description in text
        model = ModelConfig if section == "models" else info.annotation
        if section == "distributed":  # `DistributedConfig | None`: present means on
            model = DistributedConfig
            assert "# [distributed]" in text
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key, field in model.model_fields.items():
            assert field.description, f"{section}.{key} has no description"
            assert " ".join(field.description.split()[:4]) in " ".join(text.replace("#", " ").split())
            present = key in data.get(section, {}) or f"# {key} =" in text or f"#   {key} " in text
            assert present, f"{section}.{key} is missing from the starter"


def test_sizes_and_durations_are_written_as_people_write_them() -> None:
    text = render_starter()
    assert 'max_request_bytes = "4MiB"' in text
    assert 'keep_alive = "15m"' in text
    assert 'prompt_cache_bytes = "2GB"' in text


def test_the_example_alias_validates_once_uncommented(tmp_path: Path) -> None:
    head, marker, tail = render_starter().partition(f"# [models.{EXAMPLE_ALIAS}]")
    assert marker, "the example alias is missing"
    path = tmp_path / "mlxd.toml"
    path.write_text(head + uncomment(marker + tail), encoding="utf-8")
    config = load_config(path)
    assert list(config.models) == [EXAMPLE_ALIAS]
    assert config.default_alias() == EXAMPLE_ALIAS
    assert config.models[EXAMPLE_ALIAS].defaults.temperature == 0.2


# -- the shipped example -------------------------------------------------------------------


def test_the_shipped_example_validates() -> None:
    config = load_config(REPO / "mlxd.toml")
    qwen = config.models["qwen"]
    assert qwen.model == "mlx-community/Qwen2.5-7B-Instruct-4bit"
    assert config.default_alias() == "qwen"
    assert config.find_alias("gpt-4o-mini") == "qwen"
    assert qwen.preload is False  # starting the daemon from a checkout must not download anything


def test_the_shipped_adapter_example_needs_its_directory(tmp_path: Path) -> None:
    text = (REPO / "mlxd.toml").read_text(encoding="utf-8")
    head, marker, tail = text.partition("# [models.qwen-sql]")
    assert marker, "the commented adapter example is missing"
    path = tmp_path / "mlxd.toml"
    path.write_text(head + uncomment(marker + tail), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].startswith("models.qwen-sql.adapter (line ")
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    config = load_config(path)
    assert config.models["qwen-sql"].adapter_path == (tmp_path / "adapters" / "sql").resolve()
    assert config.models["qwen-sql"].defaults.max_tokens == 256


# -- the committed JSON Schema -------------------------------------------------------------


def test_the_committed_schema_is_current() -> None:
    committed = json.loads((REPO / "docs" / "mlxd.schema.json").read_text(encoding="utf-8"))
    assert committed == MlxdConfig.model_json_schema(), (
        "docs/mlxd.schema.json is out of date: run `mlxd config schema > docs/mlxd.schema.json`"
    )


def properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(name, prop) for name, prop in schema.get("properties", {}).items()]
    for definition in schema.get("$defs", {}).values():
        found += properties(definition)
    return found


def test_every_schema_property_has_a_description() -> None:
    props = properties(MlxdConfig.model_json_schema())
    assert len(props) > 40
    assert [name for name, prop in props if not prop.get("description")] == []


def test_the_schema_accepts_the_spellings_users_write() -> None:
    server = MlxdConfig.model_json_schema()["$defs"]["ServerConfig"]["properties"]
    kinds = {branch["type"] for branch in server["request_timeout"]["anyOf"]}
    assert kinds == {"number", "string"}
