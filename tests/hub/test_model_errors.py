"""A model that cannot be loaded says why, with a code naming the cause, and never looks retryable.

The unit tests run ``model_directory`` on real directories; the server tests ask a real
daemon through the openai client for aliases whose model is not downloaded, gone or
damaged, and check it keeps serving the alias that works.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from mlxd.config.loader import load_config
from mlxd.errors import (
    ModelCorruptError,
    ModelDirNotFoundError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelUnsupportedError,
)
from mlxd.http.errors import http_error
from mlxd.hub import model_directory
from mlxd.runtime.specs import ModelSpec
from tests.conftest import RunningDaemon, serving


@pytest.fixture
def model_copy(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))


def truncate(path: Path, by: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-by])


def local(path: Path, label: str = "mine") -> ModelSpec:
    return ModelSpec(source=f"./{path.name}", local_path=path, label=label)


def test_a_complete_local_model_is_its_own_directory(model_copy: Path) -> None:
    assert model_directory(local(model_copy)) == model_copy


def test_not_downloaded_names_the_pull_command_for_the_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = tmp_path / "mlxd.toml"
    config.write_text('[models.qwen]\nmodel = "org/qwen"\nrevision = "v2"\n')
    spec = ModelSpec(source="org/qwen", revision="v2", label="org/qwen")
    with pytest.raises(ModelNotDownloadedError) as caught:
        model_directory(spec, load_config(config))
    assert caught.value.message == "model org/qwen at v2 is not downloaded: run `mlxd models pull qwen`"
    # No alias names it (any more): the repo id pulls it just as well.
    with pytest.raises(ModelNotDownloadedError) as caught:
        model_directory(spec)
    assert caught.value.message.endswith("run `mlxd models pull org/qwen --revision v2`")


def test_a_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirNotFoundError, match="'mine' does not exist"):
        model_directory(local(tmp_path / "gone"))


def test_truncated_local_weights_are_corrupt_and_the_hint_fits_a_local_directory(model_copy: Path) -> None:
    truncate(model_copy / "model.safetensors")
    with pytest.raises(ModelCorruptError) as caught:
        model_directory(local(model_copy))
    assert caught.value.message.startswith("mine: model.safetensors is incomplete (")
    assert caught.value.hint is not None
    assert "mlxd models" not in caught.value.hint  # `models rm` refuses local directories
    assert "copy the complete model" in caught.value.hint


def test_unreadable_config_is_corrupt(model_copy: Path) -> None:
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ModelCorruptError, match=r"config\.json is not valid JSON"):
        model_directory(local(model_copy))


@pytest.mark.parametrize("damage", ["code", "unknown-type", "link-out"])
def test_what_mlxd_will_not_load_is_unsupported(model_copy: Path, tmp_path: Path, damage: str) -> None:
    if damage == "code":
        (model_copy / "modeling.py").write_text("import os\n")
    elif damage == "unknown-type":
        (model_copy / "config.json").write_text('{"model_type": "no-such-architecture"}')
    else:
        (tmp_path / "secret").write_text("x")
        (model_copy / "extra.json").symlink_to(tmp_path / "secret")
    with pytest.raises(ModelUnsupportedError):
        model_directory(local(model_copy))


def test_an_adapter_without_its_config_is_corrupt(model_copy: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    spec = ModelSpec(source="./copy", local_path=model_copy, adapter_path=adapter, label="copy")
    with pytest.raises(ModelCorruptError, match=r"no adapter_config\.json"):
        model_directory(spec)


def test_permanent_failures_carry_statuses_clients_do_not_retry() -> None:
    # OpenAI-style clients retry 408, 409, 429 and every 5xx.
    for kind in (ModelNotDownloadedError, ModelDirNotFoundError, ModelCorruptError, ModelUnsupportedError):
        assert issubclass(kind, ModelLoadError)
        error = http_error(kind("gone"))
        assert error.status not in {408, 409, 429}
        assert error.status < 500
        assert "Retry-After" not in error.headers


# --- through a real daemon ------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_daemon(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningDaemon, Path]]:
    root = tmp_path_factory.mktemp("broken")
    damaged = Path(shutil.copytree(tiny_model_dir, root / "damaged"))
    truncate(damaged / "model.safetensors")
    vanishing = Path(shutil.copytree(tiny_model_dir, root / "vanishing"))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(root / "empty-cache"))
    try:
        with serving(
            root,
            f"""
[server]
port = 0
[models.tiny]
model = "{tiny_model_dir}"
default = true
[models.never]
model = "org/never-pulled"
[models.damaged]
model = "./damaged"
[models.vanishing]
model = "./vanishing"
""",
        ) as running:
            shutil.rmtree(vanishing)  # gone after the config was checked
            yield running, root
    finally:
        mp.undo()


def ask(running: RunningDaemon, alias: str) -> openai.APIStatusError:
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(model=alias, prompt="x", max_tokens=2)
    return caught.value


CASES = [
    ("never", "model_not_downloaded", "run `mlxd models pull never`"),
    ("vanishing", "model_dir_not_found", "model directory './vanishing' does not exist"),
    ("damaged", "model_corrupt", "damaged: model.safetensors is incomplete"),
]


@pytest.mark.mlx
@pytest.mark.server
@pytest.mark.parametrize(("alias", "code", "says"), CASES)
def test_the_daemon_names_the_cause_and_keeps_serving(
    broken_daemon: tuple[RunningDaemon, Path], alias: str, code: str, says: str
) -> None:
    running, _ = broken_daemon
    error = ask(running, alias)
    assert error.code == code
    assert says in error.message
    assert "/" + str(running.config_path.parent).strip("/") not in error.message  # no absolute paths
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
    reply = client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2


@pytest.mark.mlx
@pytest.mark.server
@pytest.mark.parametrize(
    ("alias", "status"),
    [("never", 404), ("vanishing", 404), ("damaged", 422)],
)
def test_the_daemon_answers_a_status_clients_do_not_retry(
    broken_daemon: tuple[RunningDaemon, Path], alias: str, status: int
) -> None:
    error = ask(broken_daemon[0], alias)
    assert error.status_code == status
    assert "retry-after" not in error.response.headers
