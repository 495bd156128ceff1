"""The engine options of mlx_lm.server as config keys: draft_model, num_draft_tokens, kv_bits and
friends, chat_template (a file checked at load), the disk prompt cache, and what the runtime
makes of them (units, settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxd.config.loader import load_config
from mlxd.errors import ConfigError
from mlxd.runtime.from_config import num_draft_tokens_for, runtime_settings, spec_for, units_of
from mlxd.runtime.specs import KvSettings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_draft_is_an_alias_a_repo_or_a_directory(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    path = write(
        tmp_path / "mlxd.toml",
        """
[models.big]
model = "org/big"
draft_model = "little"
[models.little]
model = "org/little"
kv_bits = 8
[models.self]
model = "org/big"
draft_model = "self"
num_draft_tokens = 5
[models.repo]
model = "org/big"
draft_model = "org/tiny-draft"
[models.local]
model = "org/big"
draft_model = "./small"
""",
    )
    config = load_config(path)
    big, little = spec_for(config.models["big"]), spec_for(config.models["little"])
    # The draft is the alias's weights alone: its own options belong to its own unit.
    assert big.draft is not None
    assert (big.draft.source, big.draft.kv, big.draft.draft) == ("org/little", None, None)
    assert little.kv == KvSettings(8, 64, 5000)
    assert big.draft.key != little.key
    self_spec = spec_for(config.models["self"])
    assert self_spec.draft is not None
    assert self_spec.draft.key == ("org/big", None, None, None)
    assert spec_for(config.models["repo"]).draft.source == "org/tiny-draft"  # type: ignore[union-attr]
    assert spec_for(config.models["local"]).draft.local_path == tmp_path / "small"  # type: ignore[union-attr]
    assert [num_draft_tokens_for(config.models[a]) for a in ("big", "self", "little")] == [3, 5, 0]
    # Aliases over the same weights with other engine options are units of their own;
    # draft units no alias names are called after the alias they draft for.
    names = {key: sorted(aliases) for key, aliases in units_of(config).items()}
    assert names[("org/big", None, None, None)] == ["self/draft"]
    assert names[("org/little", None, None, None)] == ["big/draft"]
    assert names[("org/tiny-draft", None, None, None)] == ["repo/draft"]
    assert len({spec_for(m).key for m in config.models.values()}) == 5


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('draft_model = "nope"', "draft_model 'nope' is not an alias"),
        ('draft_model = "./missing"', "draft_model directory not found"),
        ("num_draft_tokens = 4", "num_draft_tokens needs draft_model"),
        ("kv_group_size = 32", "kv_group_size needs kv_bits"),
        ("quantized_kv_start = 0\nkv_group_size = 128", "kv_group_size and quantized_kv_start need kv_bits"),
        ("kv_bits = 3", "kv_bits"),
        ("kv_bits = 4\nkv_group_size = 48", "kv_group_size"),
        ('draft_model = "org/d"\nnum_draft_tokens = 33', "num_draft_tokens"),
    ],
)
def test_options_that_cannot_work_are_errors_naming_the_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    path = write(tmp_path / "mlxd.toml", f'[models.a]\nmodel = "org/a"\n{table}\n')
    problems = problems_of(path)
    assert any(expected in p for p in problems), problems


TEMPLATE_OK = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def test_a_chat_template_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    write(tmp_path / "templates" / "chat.jinja", TEMPLATE_OK)
    path = write(
        tmp_path / "mlxd.toml", '[models.a]\nmodel = "org/a"\nchat_template = "templates/chat.jinja"\n'
    )
    model = load_config(path).models["a"]
    assert model.template_text == TEMPLATE_OK
    assert (
        load_config(write(tmp_path / "plain.toml", '[models.a]\nmodel = "org/a"\n')).models["a"].template_text
        is None
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "file not found"),
        ("{% for m in messages %}{{ m.content }", "not a valid Jinja template (line 1)"),
        (
            "{{ raise_exception('no system role') }}",
            "raised an error on a two-message conversation: no system role",
        ),
        ("{{ messages[5].content }}", "failed to render"),
        ("{{ messages[0].content }}", "leaves the assistant message out"),
        ("{{ ''.__class__.__mro__ }}{% for m in messages %}{{ m.content }}{% endfor %}", "failed to render"),
    ],
)
def test_a_template_that_cannot_render_a_conversation_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str | None, expected: str
) -> None:
    if text is not None:
        write(tmp_path / "bad.jinja", text)
    path = write(tmp_path / "mlxd.toml", '[models.a]\nmodel = "org/a"\nchat_template = "bad.jinja"\n')
    (problem,) = problems_of(path)
    assert problem.startswith("models.a.chat_template (line 3): chat template bad.jinja:")
    assert expected in problem


def test_the_disk_prompt_cache_is_on_by_default_in_the_user_cache_directory(tmp_path: Path) -> None:
    settings = runtime_settings(load_config(None))
    assert settings.prompt_cache_dir is not None
    assert settings.prompt_cache_dir.name == "prompts"
    assert settings.prompt_cache_disk_bytes == 4 * 10**9
    relative = write(tmp_path / "mlxd.toml", '[runtime]\nprompt_cache_dir = "cache/prompts"\n')
    assert runtime_settings(load_config(relative)).prompt_cache_dir == tmp_path / "cache" / "prompts"
    for table in ('prompt_cache_dir = ""', "prompt_cache_disk_bytes = 0"):
        off = write(tmp_path / "off.toml", f"[runtime]\n{table}\n")
        assert runtime_settings(load_config(off)).prompt_cache_dir is None


def test_sampling_defaults_merge_like_the_others(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mlxd.toml",
        """
[defaults]
xtc_threshold = 0.2
presence_context_size = 50
[models.a]
model = "org/a"
[models.a.defaults]
xtc_probability = 0.5
""",
    )
    merged = load_config(path).generation_defaults("a")
    assert (merged.xtc_probability, merged.xtc_threshold) == (0.5, 0.2)
    assert (merged.presence_context_size, merged.frequency_context_size) == (50, 20)
    bad = write(tmp_path / "bad.toml", "[defaults]\nxtc_threshold = 0.7\n")
    assert any("xtc_threshold" in p for p in problems_of(bad))


def test_the_shipped_engine_options_example_validates(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "mlxd.toml").read_text(encoding="utf-8")
    _, marker, tail = text.partition("# [models.qwen-fast]")
    assert marker, "the commented engine-options example is missing"
    block = (marker + tail).split("\n\n", 1)[0]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = load_config(write(tmp_path / "mlxd.toml", uncommented + "\n"))
    spec = spec_for(config.models["qwen-fast"])
    assert spec.kv == KvSettings(8, 64, 2048)
    assert spec.draft is not None
    assert spec.draft.source == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
