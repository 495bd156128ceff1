"""The tiny-model builder: real mlx-lm loading, determinism, templates, LoRA, the demo cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime import demo_setup
from mlxd.runtime.demo_model import DEMO_VERSION, build_lora_adapter, build_small_model, build_tiny_model
from mlxd.runtime.demo_setup import ensure_demo_model

pytestmark = pytest.mark.mlx

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Count from 1 to 5, please."},
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default tiny build made here, so these tests check the builder, not a shared fixture."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The tiny build loaded by mlx-lm: (model, TokenizerWrapper)."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(tiny_model_dir))
    return model, tokenizer


def _greedy(model: Any, tokenizer: Any, prompt: list[int], max_tokens: int) -> tuple[str, Any]:
    """Generate at temperature 0 (mlx-lm's default sampler is argmax); return text and last step."""
    import mlx_lm

    text, last = "", None
    for last in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        text += last.text
    return text, last


def _safetensors(path: Path) -> dict[str, Any]:
    import mlx.core as mx

    weights = mx.load(str(path))
    assert isinstance(weights, dict)
    return weights


def _last_logits(model: Any, tokens: list[int]) -> Any:
    import mlx.core as mx

    logits = model(mx.array([tokens]))[0, -1]
    mx.eval(logits)
    return logits


def test_tiny_model_generates_deterministically_at_temperature_zero(
    tiny_model: tuple[Any, Any],
) -> None:
    model, tokenizer = tiny_model
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)

    first_text, first = _greedy(model, tokenizer, prompt, max_tokens=24)
    second_text, second = _greedy(model, tokenizer, prompt, max_tokens=24)

    assert first_text == second_text
    assert first_text
    # Special tokens have zero output rows, so greedy decoding runs to max_tokens.
    assert first.generation_tokens == 24
    assert first.finish_reason == "length"
    assert second.generation_tokens == 24


def test_special_tokens_score_zero_so_greedy_never_picks_them(
    tiny_model: tuple[Any, Any],
) -> None:
    model, tokenizer = tiny_model
    specials = sorted(tokenizer.eos_token_ids | {tokenizer.convert_tokens_to_ids("<|im_start|>")})
    logits = _last_logits(model, tokenizer.encode("Hello world"))

    assert logits[specials].tolist() == [0.0] * len(specials)
    assert logits.max().item() > 0.0


def test_fresh_loads_of_the_same_directory_generate_the_same_text(tiny_model_dir: Path) -> None:
    import mlx_lm

    texts = []
    for _ in range(2):
        model, tokenizer = mlx_lm.load(str(tiny_model_dir))
        texts.append(mlx_lm.generate(model, tokenizer, "Hello world", max_tokens=16))
    assert texts[0] == texts[1]
    assert texts[0]


def test_config_matches_the_tokenizer(tiny_model_dir: Path, tiny_model: tuple[Any, Any]) -> None:
    _, tokenizer = tiny_model
    config = json.loads((tiny_model_dir / "config.json").read_text())

    assert config["model_type"] == "llama"
    assert config["vocab_size"] == len(tokenizer)
    assert 512 <= len(tokenizer) <= 1024
    assert tokenizer.eos_token == "<|im_end|>"
    assert config["bos_token_id"] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token_id in config["eos_token_id"]
    assert set(config["eos_token_id"]) == tokenizer.eos_token_ids
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tokenizer.encode(special, add_special_tokens=False) == [
            tokenizer.convert_tokens_to_ids(special)
        ]


def test_mlx_lm_picks_the_bpe_streaming_detokenizer(tiny_model: tuple[Any, Any]) -> None:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    _, tokenizer = tiny_model
    detokenizer = tokenizer.detokenizer
    assert isinstance(detokenizer, BPEStreamingDetokenizer)

    text = "Count 1 2 3, then 100 and 2048: done!"
    for token in tokenizer.encode(text, add_special_tokens=False):
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == text


@pytest.mark.parametrize(
    "text", ["Hello world", "1 2 3 4 5", "The meeting is at 19:30 on 2024-05-17.", "a  b   c"]
)
def test_typical_strings_split_into_several_tokens_and_round_trip(
    tiny_model: tuple[Any, Any], text: str
) -> None:
    _, tokenizer = tiny_model
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert 2 <= len(ids) < len(text.encode())
    assert tokenizer.decode(ids) == text


def test_chat_template_renders_chatml(tiny_model: tuple[Any, Any]) -> None:
    _, tokenizer = tiny_model
    assert tokenizer.has_chat_template

    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nCount from 1 to 5, please.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    closed = tokenizer.apply_chat_template(
        [*MESSAGES, {"role": "assistant", "content": "1 2 3 4 5"}], tokenize=False
    )
    assert closed.endswith("<|im_start|>assistant\n1 2 3 4 5<|im_end|>\n")
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert tokenizer.decode(ids) == text


def test_chat_template_can_be_left_out(tmp_path: Path) -> None:
    import mlx_lm

    model_dir = build_tiny_model(tmp_path / "plain", chat_template=False)
    _, tokenizer = mlx_lm.load(str(model_dir))

    assert tokenizer.chat_template is None
    assert not tokenizer.has_chat_template
    assert "chat_template" not in json.loads((model_dir / "tokenizer_config.json").read_text())


def test_untied_embeddings_get_their_own_head(tmp_path: Path) -> None:
    import mlx_lm

    model_dir = build_tiny_model(tmp_path / "untied", tie_word_embeddings=False)
    weights = _safetensors(model_dir / "model.safetensors")
    assert "lm_head.weight" in weights

    model, tokenizer = mlx_lm.load(str(model_dir))
    _, last = _greedy(model, tokenizer, tokenizer.encode("Hello"), max_tokens=8)
    assert last.generation_tokens == 8


def test_a_pipeline_capable_family_loads_with_its_weight_index(tmp_path: Path) -> None:
    import mlx_lm

    model_dir = build_tiny_model(tmp_path / "mini", model_type="ministral3")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "ministral3"
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(_safetensors(model_dir / "model.safetensors"))
    model, tokenizer = mlx_lm.load(str(model_dir))
    assert hasattr(model.model, "pipeline")  # what a pipeline load over several ranks needs
    _, last = _greedy(model, tokenizer, tokenizer.encode("Hello"), max_tokens=8)
    assert last.generation_tokens == 8
    assert not (build_tiny_model(tmp_path / "llama") / "model.safetensors.index.json").exists()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=7)
    again = build_tiny_model(tmp_path / "b", seed=7)
    other = build_tiny_model(tmp_path / "c", seed=8)

    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(path.name for path in again.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    weights = "model.safetensors"
    assert (first / weights).read_bytes() != (other / weights).read_bytes()


def test_builds_from_a_worker_thread_leave_nothing_lazy(tmp_path: Path) -> None:
    import mlx_lm

    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_tiny_model(tmp_path / "threaded")
            build_lora_adapter(tmp_path / "threaded", tmp_path / "threaded-adapter")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=build)
    worker.start()
    worker.join()
    assert errors == []

    model, tokenizer = mlx_lm.load(
        str(tmp_path / "threaded"), adapter_path=str(tmp_path / "threaded-adapter")
    )
    _, last = _greedy(model, tokenizer, tokenizer.encode("Hello"), max_tokens=4)
    assert last.generation_tokens == 4


def test_lora_adapter_changes_the_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    import mlx.core as mx
    import mlx_lm

    adapter_dir = build_lora_adapter(tiny_model_dir, tmp_path / "adapter", rank=4)

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora"
    assert config["num_layers"] == 2
    assert config["lora_parameters"]["rank"] == 4
    weights = _safetensors(adapter_dir / "adapters.safetensors")
    assert weights
    assert all(name.rsplit(".", 1)[-1] in {"lora_a", "lora_b"} for name in weights)
    assert all(mx.any(w != 0).item() for w in weights.values())

    base, tokenizer = mlx_lm.load(str(tiny_model_dir))
    adapted, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(adapter_dir))
    prompt = tokenizer.encode("Hello world, this is a test.")
    base_logits = _last_logits(base, prompt)
    adapted_logits = _last_logits(adapted, prompt)
    assert not mx.allclose(base_logits, adapted_logits, atol=1e-3).item()


def test_lora_adapter_is_deterministic_and_respects_num_layers(tiny_model_dir: Path, tmp_path: Path) -> None:

    one = build_lora_adapter(tiny_model_dir, tmp_path / "one", seed=3, num_layers=1)
    two = build_lora_adapter(tiny_model_dir, tmp_path / "two", seed=3, num_layers=1)

    for name in ("adapters.safetensors", "adapter_config.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    layers = {name.split(".")[2] for name in _safetensors(one / "adapters.safetensors")}
    assert layers == {"1"}  # mlx-lm counts adapted blocks from the last one


def test_small_model_is_in_the_benchmark_size_range(tmp_path: Path) -> None:

    model_dir = build_small_model(tmp_path / "small")
    parameters = sum(w.size for w in _safetensors(model_dir / "model.safetensors").values())
    assert 50_000_000 <= parameters <= 150_000_000


def test_ensure_demo_model_builds_once_and_reuses_it(tmp_path: Path) -> None:
    import mlx_lm

    path = ensure_demo_model(tmp_path / "data")
    assert path == tmp_path / "data" / f"demo-{DEMO_VERSION}"
    before = (path / "model.safetensors").stat()

    assert ensure_demo_model(tmp_path / "data") == path
    after = (path / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [path.name]
    mlx_lm.load(str(path))


def test_ensure_demo_model_matches_the_default_tiny_build(tmp_path: Path) -> None:
    demo = ensure_demo_model(tmp_path / "data")
    tiny = build_tiny_model(tmp_path / "tiny")
    assert (demo / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()


def test_concurrent_ensure_calls_that_both_build_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold both builders until both have finished, so both reach the rename: the loser
    # must accept the winner's directory instead of failing or nesting its own.
    real_build = demo_setup.build_tiny_model
    both_built = threading.Barrier(2, timeout=60)
    builds: list[Path] = []

    def build_then_wait(dest: Path, **kwargs: Any) -> Path:
        result = real_build(dest, **kwargs)
        builds.append(dest)
        both_built.wait()
        return result

    monkeypatch.setattr(demo_setup, "build_tiny_model", build_then_wait)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_demo_model(tmp_path / "data"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(builds) == 2
    final = tmp_path / "data" / f"demo-{DEMO_VERSION}"
    assert results == [final, final]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [final.name]
    assert sorted(p.name for p in final.iterdir()) == sorted(
        p.name for p in build_tiny_model(tmp_path / "reference").iterdir()
    )


def test_concurrent_ensure_calls_from_two_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path;"
        "from mlxd.runtime.demo_setup import ensure_demo_model;"
        "print(ensure_demo_model(Path(sys.argv[1])))"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0].strip() for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    final = data_dir / f"demo-{DEMO_VERSION}"
    assert outputs == [str(final), str(final)]
    assert sorted(p.name for p in data_dir.iterdir()) == [final.name]
    import mlx_lm

    mlx_lm.load(str(final))


def test_a_crashed_build_leaves_no_model_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = demo_setup.build_tiny_model

    def crash_midway(dest: Path, **kwargs: Any) -> Path:
        (dest / "config.json").write_text("{}")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(demo_setup, "build_tiny_model", crash_midway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_demo_model(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []

    monkeypatch.setattr(demo_setup, "build_tiny_model", real_build)
    path = ensure_demo_model(tmp_path / "data")
    assert (path / "model.safetensors").is_file()


def test_a_damaged_demo_model_is_rebuilt(tmp_path: Path) -> None:
    import mlx_lm

    path = ensure_demo_model(tmp_path / "data")
    (path / "model.safetensors").unlink()

    assert ensure_demo_model(tmp_path / "data") == path
    assert (path / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [path.name]
    mlx_lm.load(str(path))


def test_stale_temp_dirs_from_old_crashes_are_removed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stale = data_dir / f".demo-{DEMO_VERSION}.tmp-crashed"
    fresh = data_dir / f".demo-{DEMO_VERSION}.tmp-running"
    for path in (stale, fresh):
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
    os.utime(stale, (0, 0))

    ensure_demo_model(data_dir)

    assert not stale.exists()
    assert fresh.exists()  # might be another process's build in progress
