"""The config store: generations, rejected reloads, diffs and subscribers."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from mlxd.config.diff import ConfigDiff
from mlxd.config.loader import load_config
from mlxd.config.schema import MlxdConfig
from mlxd.config.store import ConfigStore
from mlxd.errors import ConfigError
from mlxd.runtime.from_config import runtime_settings

BASE = """\
[server]
port = 8080

[defaults]
temperature = 0.5

[models.qwen]
model = "mlx-community/Qwen2.5-7B-Instruct-4bit"
default = true

[models.small]
model = "org/small"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlxd.toml"
    path.write_text(BASE, encoding="utf-8")
    return path


@pytest.fixture
def store(config_file: Path) -> ConfigStore:
    return ConfigStore(config_file)


def test_starts_at_generation_one(store: ConfigStore, config_file: Path) -> None:
    assert store.generation == 1
    assert store.current == load_config(config_file)
    assert store.path == config_file
    assert store.last_error is None
    assert store.last_reload_at is None


def test_an_invalid_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "mlxd.toml"
    path.write_text("[server]\nport = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        ConfigStore(path)


def test_a_valid_edit_bumps_the_generation(store: ConfigStore, config_file: Path) -> None:
    config_file.write_text(BASE.replace("temperature = 0.5", "temperature = 0.9"), encoding="utf-8")
    result = store.reload()
    assert (result.changed, result.generation) == (True, 2)
    assert store.generation == 2
    assert store.current.defaults.temperature == 0.9
    assert result.config is store.current
    assert result.diff.sections == ["defaults"]
    assert result.diff.keys == ["defaults.temperature"]
    assert store.last_reload_at is not None


def test_an_invalid_edit_keeps_the_old_config(store: ConfigStore, config_file: Path) -> None:
    before = store.current
    config_file.write_text(BASE.replace("temperature = 0.5", "temperature = 9"), encoding="utf-8")
    with pytest.raises(ConfigError):
        store.reload()
    assert store.current is before
    assert store.generation == 1
    assert store.last_error is not None
    assert "defaults.temperature (line 5)" in store.last_error


def test_the_next_valid_reload_clears_the_error(store: ConfigStore, config_file: Path) -> None:
    config_file.write_text("[server\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        store.reload()
    assert store.last_error is not None
    assert "line 1" in store.last_error
    config_file.write_text(BASE, encoding="utf-8")  # back to what is already in force
    result = store.reload()
    assert store.last_error is None
    assert result.changed is False
    assert store.generation == 1


def test_an_identical_file_does_not_bump(store: ConfigStore, config_file: Path) -> None:
    config_file.write_text(
        "# a new comment\n" + BASE.replace("port = 8080", "port   =   8080"), encoding="utf-8"
    )
    result = store.reload()
    assert result.changed is False
    assert result.diff.is_empty
    assert store.generation == 1


def test_a_deleted_file_is_a_rejected_reload(store: ConfigStore, config_file: Path) -> None:
    config_file.unlink()
    with pytest.raises(ConfigError, match="not found"):
        store.reload()
    assert store.current.models["qwen"].default is True


def test_file_changed_until_any_reload_reads_the_file(store: ConfigStore, config_file: Path) -> None:
    """Whichever path reloads (the watcher, SIGHUP, POST /mlxd/reload), the store knows
    the file it read: the watcher does not read it again, valid or not."""
    assert store.file_changed() is False
    # Another size: a clock that ticks coarsely may give the same modification time.
    config_file.write_text(BASE.replace("0.5", "0.65"), encoding="utf-8")
    assert store.file_changed() is True
    store.reload()
    assert store.file_changed() is False
    config_file.write_text("[server\n", encoding="utf-8")
    assert store.file_changed() is True
    with pytest.raises(ConfigError):
        store.reload()
    assert store.file_changed() is False  # rejected, but read: not read again until it changes
    config_file.unlink()
    assert store.file_changed() is True


def test_no_file_never_changes() -> None:
    assert ConfigStore(None).file_changed() is False


def test_overrides_survive_reloads(config_file: Path) -> None:
    store = ConfigStore(config_file, {"runtime": {"max_queue": 7}})
    config_file.write_text(BASE + "\n[runtime]\nmax_queue = 99\nmax_batch_size = 3\n", encoding="utf-8")
    store.reload()
    assert (store.current.runtime.max_queue, store.current.runtime.max_batch_size) == (7, 3)


# -- diffs ---------------------------------------------------------------------------------


def reload_with(store: ConfigStore, config_file: Path, text: str) -> ConfigDiff:
    config_file.write_text(text, encoding="utf-8")
    return store.reload().diff


def test_diff_added_and_removed_aliases(store: ConfigStore, config_file: Path) -> None:
    text = BASE.replace('[models.small]\nmodel = "org/small"\n', '[models.big]\nmodel = "org/big"\n')
    diff = reload_with(store, config_file, text)
    assert (diff.added, diff.removed, diff.changed) == (["big"], ["small"], [])
    assert diff.sections == ["models"]


@pytest.mark.parametrize(
    ("edit", "weights"),
    [
        ('model = "org/small"\nrevision = "v2"', True),
        ('model = "org/other"', True),
        ('model = "org/small"\nkeep_alive = "1h"', False),
        ('model = "org/small"\nmax_tokens_limit = 100', False),
        ('model = "org/small"\n[models.small.defaults]\ntop_p = 0.5', False),
    ],
)
def test_diff_tells_weight_changes_from_cheap_ones(
    store: ConfigStore, config_file: Path, edit: str, weights: bool
) -> None:
    diff = reload_with(store, config_file, BASE.replace('model = "org/small"', edit))
    [change] = diff.changed
    assert change.alias == "small"
    assert change.weights_changed is weights
    assert diff.weights_changed == (["small"] if weights else [])
    assert diff.cheap_changed == ([] if weights else ["small"])


def test_an_adapter_change_is_a_weight_change(tmp_path: Path, store: ConfigStore, config_file: Path) -> None:
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    diff = reload_with(store, config_file, BASE + 'adapter = "adapters/sql"\n')
    assert diff.weights_changed == ["small"]
    assert diff.changed[0].fields == ("adapter",)


def test_port_changes_need_a_restart_and_keep_the_old_address(
    store: ConfigStore, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = BASE.replace("port = 8080", "port = 9090").replace("temperature = 0.5", "temperature = 0.6")
    config_file.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mlxd.config"):
        result = store.reload()
    assert result.diff.restart_required == ["server.port"]
    assert store.current.server.port == 8080  # still what the daemon is bound to
    assert store.current.defaults.temperature == 0.6  # the rest applies
    assert result.changed is True
    assert result.diff.sections == ["defaults"]
    assert any("server.port" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)


def test_a_host_only_change_is_reported_but_changes_nothing(store: ConfigStore, config_file: Path) -> None:
    config_file.write_text(
        '[server]\nhost = "localhost"\n' + BASE.removeprefix("[server]\n"), encoding="utf-8"
    )
    result = store.reload()
    assert result.diff.restart_required == ["server.host"]
    assert (result.changed, store.generation, store.current.server.host) == (False, 1, "127.0.0.1")


def test_a_parallel_change_is_a_weight_change(store: ConfigStore, config_file: Path) -> None:
    diff = reload_with(store, config_file, BASE + 'parallel = "pipeline"\n')
    assert diff.weights_changed == ["small"]
    assert diff.changed[0].fields == ("parallel",)


DISTRIBUTED = '\n[distributed]\nhosts = ["127.0.0.1", "127.0.0.1"]\n'


def test_distributed_changes_need_a_restart_and_keep_the_old_ranks(tmp_path: Path) -> None:
    path = tmp_path / "mlxd.toml"
    path.write_text(BASE + DISTRIBUTED, encoding="utf-8")
    store = ConfigStore(path)
    assert store.restart_required == ()
    path.write_text(
        BASE.replace("0.5", "0.6") + DISTRIBUTED.replace('"]', '", "127.0.0.1"]'), encoding="utf-8"
    )
    result = store.reload()
    assert result.diff.restart_required == ["distributed"]
    assert store.restart_required == ("distributed",)
    assert store.current.distributed is not None
    assert len(store.current.distributed.hosts) == 2  # the ranks it runs on
    assert store.current.defaults.temperature == 0.6  # the rest applies
    path.write_text(BASE + DISTRIBUTED, encoding="utf-8")  # back as it runs
    store.reload()
    assert store.restart_required == ()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            'adapter = "adapters/sql"',
            "models.small.adapter: LoRA adapters are not served across several ranks",
        ),
        (
            'draft_model = "qwen"',
            "models.small.draft_model: draft models (speculative decoding) are not served",
        ),
    ],
    ids=["adapter", "draft"],
)
def test_what_several_ranks_cannot_serve_is_refused(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    path = tmp_path / "mlxd.toml"
    path.write_text(BASE + line + "\n" + DISTRIBUTED, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(problem in p for p in caught.value.problems)


def test_several_ranks_keep_no_prompt_prefixes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "mlxd.toml"
    path.write_text(BASE + '[runtime]\nprompt_cache_dir = "prompts"\n', encoding="utf-8")
    assert runtime_settings(load_config(path)).prompt_cache_dir == tmp_path / "prompts"
    path.write_text(BASE + '[runtime]\nprompt_cache_dir = "prompts"\n' + DISTRIBUTED, encoding="utf-8")
    assert runtime_settings(load_config(path)).prompt_cache_dir is None


# -- subscribers ---------------------------------------------------------------------------


def test_subscribers_see_each_applied_change(store: ConfigStore, config_file: Path) -> None:
    seen: list[tuple[MlxdConfig, MlxdConfig, ConfigDiff]] = []
    first = store.current
    store.subscribe(lambda old, new, diff: seen.append((old, new, diff)))
    store.reload()  # unchanged: no call
    config_file.write_text("[server\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        store.reload()  # rejected: no call
    config_file.write_text(BASE.replace("temperature = 0.5", "temperature = 0.1"), encoding="utf-8")
    store.reload()
    [(old, new, diff)] = seen
    assert old == first  # the config in force before (an unchanged reload re-read it)
    assert new is store.current
    assert diff.keys == ["defaults.temperature"]


def test_a_failing_subscriber_breaks_nothing(
    store: ConfigStore, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def broken(old: MlxdConfig, new: MlxdConfig, diff: ConfigDiff) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(lambda old, new, diff: calls.append(1))
    config_file.write_text(BASE.replace("temperature = 0.5", "temperature = 0.1"), encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="mlxd.config"):
        result = store.reload()
    assert result.generation == 2
    assert calls == [1]
    assert any("subscriber" in r.getMessage() for r in caplog.records)


def test_unsubscribe(store: ConfigStore, config_file: Path) -> None:
    calls: list[int] = []
    unsubscribe = store.subscribe(lambda old, new, diff: calls.append(1))
    unsubscribe()
    config_file.write_text(BASE.replace("temperature = 0.5", "temperature = 0.1"), encoding="utf-8")
    store.reload()
    assert calls == []


def test_an_unchanged_reload_refreshes_what_requests_derive_from_the_config(
    store: ConfigStore, config_file: Path, tmp_path: Path
) -> None:
    """An alias at a symlink that now points elsewhere: ``mlxd reload`` changes nothing in the
    config, yet requests resolve the model's new target."""
    from mlxd.http.dialects.openai.translate import translate
    from mlxd.http.embeddings import resolve_embeddings
    from mlxd.protocol.requests import ChatCompletionRequest

    v1, v2 = (tmp_path / "v1").resolve(), (tmp_path / "v2").resolve()  # macOS: /var is a link
    v1.mkdir()
    v2.mkdir()
    link = tmp_path / "current"
    link.symlink_to(v1)
    config_file.write_text(BASE + f'[models.linked]\nmodel = "{link}"\n', encoding="utf-8")
    store.reload()
    chat = msgspec.convert(
        {"model": "linked", "messages": [{"role": "user", "content": "hi"}]}, ChatCompletionRequest
    )
    assert resolve_embeddings(store.current, "linked", "a").spec.local_path == v1
    assert translate(chat, store.current)[0].spec.local_path == v1
    link.unlink()
    link.symlink_to(v2)
    generation = store.generation
    assert store.reload().changed is False
    assert store.generation == generation
    assert resolve_embeddings(store.current, "linked", "a").spec.local_path == v2
    assert translate(chat, store.current)[0].spec.local_path == v2
