"""Build tiny random-weight models locally: for tests, ``mlxd serve --demo`` and the benchmark.

Nothing can be downloaded here, so one builder writes a real mlx-lm model directory: a
``llama`` architecture from ``mlx_lm.models`` with seeded random weights and a real
byte-level BPE tokenizer trained on the short English text below. The output is
bit-identical for a given seed, so it doubles as a cache key (``DEMO_VERSION``).

Random weights make gibberish. Two deliberate properties help tests: the output rows of
the special tokens are zero, so greedy decoding never emits them (runs go to
``max_tokens``); and the tokenizer uses the ByteLevel decoder, so mlx-lm picks its
``BPEStreamingDetokenizer``.

Every array is evaluated before a function returns: MLX streams are thread-local, and a
lazy array that escapes to another thread fails there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

DEMO_VERSION = "2"

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
#: A reasoning model's tags (mlx-lm recognises them in the vocabulary).
THINK_TOKENS = ("<think>", "</think>")
VOCAB_SIZE = 768

# ChatML, with a Hermes/Qwen-style tools branch (mlx-lm recognises it and picks its JSON
# tool-call parser). Without tools it renders exactly like plain ChatML.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' + (tool_call.arguments | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A reasoning model's template: the assistant turn opens a <think> block unless the
# request (or the alias) sets enable_thinking = false.
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is not defined or enable_thinking %}{{- '<think>\\n' }}{%- endif %}{%- endif %}",
)

# Original text, written for this module. It gives the BPE trainer common English
# words, digits, times, prices and punctuation, so test strings split into a handful of
# ordinary tokens rather than into raw bytes.
_CORPUS = """\
The small daemon wakes up when the laptop starts. It reads one settings file, opens a \
port on the loopback address and waits for requests. Nobody outside the machine can \
reach it unless the owner asks for that, and then a key is required.

A request names a model by a short alias. The daemon looks the alias up in its table, \
loads the weights if they are not already in memory, and starts to generate. Tokens \
come back one at a time, and each one is sent to the client as soon as it is ready.

When two people ask at the same moment, their requests share one batch. The engine \
runs a single step for all of them, then hands every new token to the right stream. \
This is why the server must do very little work per token: any extra copy or lock is \
paid again for every word of every answer.

On Monday the weather was cold and wet. On Tuesday the sun came out at 7:45 and the \
garden dried by noon. By Friday it was warm enough to eat outside, so we carried the \
table into the yard and invited the neighbours for dinner at 19:30.

The recipe is simple. Take 2 cups of flour, 1 cup of water, a pinch of salt and 3 \
spoons of oil. Mix them well, rest the dough for 30 minutes, then roll it thin and \
bake it for 12 minutes at 220 degrees. Serve it warm with soup or cheese.

Count with me: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20. Then by tens: 10, \
20, 30, 40, 50, 60, 70, 80, 90, 100. Large numbers such as 1024, 2048, 4096 and 65536 \
appear often in computing, and so do dates like 2024-05-17 and prices like $3.99.

She asked, "Where does the river go?" He answered that it runs past the old mill, \
under the stone bridge and out to the sea. They walked along the bank until the path \
turned into a narrow road, and then they followed the road back to town.

Good tests check what users see. A test starts a real server, sends a real request \
and reads the real answer. It checks the status code, the shape of the body and the \
number of tokens. It never checks that random weights wrote something meaningful, \
because they never do.

The library is open from 9 to 5 on weekdays and from 10 to 2 on Saturday. Each reader \
may borrow up to 8 books for 21 days. Late books cost 25 cents a day, and lost books \
must be replaced or paid for in full.

Hello world! Hello again, world. This is a test. This is only a test. Say yes or no. \
One, two, three, four, five. Red, green, blue, black and white. North, south, east \
and west. Left or right? Up and down. Stop here, please.

A good answer is short and clear. It says what happened, why it matters and what to \
do next. If something failed, it names the thing that failed and the way to fix it, \
in one line, without a long trace that only the author of the code could read.

The train left the station at 08:15 and reached the coast at 11:40. Along the way we \
saw fields, forests, a lake with two boats and a castle on a hill. The children \
counted cows and lost count after 47. Their father said there were at least 100.
"""


def _train_tokenizer(thinking: bool = False) -> Any:
    """Train the byte-level BPE tokenizer on the embedded text (deterministic, a few ms)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # The ByteLevel decoder is what makes mlx-lm choose its BPEStreamingDetokenizer.
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[*SPECIAL_TOKENS, *(THINK_TOKENS if thinking else ())],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.split("\n\n"), trainer=trainer)
    return tokenizer


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as sorted JSON so that equal builds give equal bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer(dest: Path, *, chat_template: bool, max_length: int, thinking: bool = False) -> Any:
    """Save ``tokenizer.json`` with the configs transformers reads; return the tokenizer."""
    tokenizer = _train_tokenizer(thinking)
    tokenizer.save(str(dest / "tokenizer.json"))
    specials = {"bos_token": END_OF_TEXT, "eos_token": IM_END, "pad_token": END_OF_TEXT}
    config: dict[str, Any] = {
        **specials,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    if chat_template:
        config["chat_template"] = THINKING_TEMPLATE if thinking else CHAT_TEMPLATE
    _write_json(dest / "tokenizer_config.json", config)
    _write_json(dest / "special_tokens_map.json", specials)
    return tokenizer


def _random_weights(model: Any, seed: int, silent_rows: list[int]) -> dict[str, Any]:
    """Seeded normal weights (std 1/sqrt(fan_in)) and unit norms, evaluated.

    The output-head rows in ``silent_rows`` are zeroed so greedy decoding never picks them.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        if param.ndim == 1:  # RMSNorm scales: start as the identity
            weights[name] = mx.ones(param.shape, dtype=mx.float32)
        else:
            scale = param.shape[-1] ** -0.5
            weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * scale
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    mask = mx.ones((weights[head].shape[0], 1), dtype=mx.float32)
    mask[mx.array(silent_rows)] = 0.0
    weights[head] = weights[head] * mask
    mx.eval(weights)
    return weights


def build_tiny_model(
    dest: Path,
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    chat_template: bool = True,
    tie_word_embeddings: bool = True,
    thinking: bool = False,
) -> Path:
    """Write a loadable mlx-lm model directory (llama, random weights) to dest; return dest.

    The same arguments always give byte-identical files.
    """
    import mlx.core as mx
    from mlx_lm.models import llama

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(
        dest, chat_template=chat_template, max_length=max_position_embeddings, thinking=thinking
    )
    bos_id, eos_id = tokenizer.token_to_id(END_OF_TEXT), tokenizer.token_to_id(IM_END)
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": bos_id,
        # Both end a turn, as in ChatML models; the first is the tokenizer's eos_token.
        "eos_token_id": [eos_id, bos_id],
        "pad_token_id": bos_id,
        "torch_dtype": "float32",
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))
    silent = [
        tokenizer.token_to_id(token) for token in (*SPECIAL_TOKENS, *(THINK_TOKENS if thinking else ()))
    ]
    weights = _random_weights(model, seed, silent)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(dest / "config.json", config)
    generation = {"bos_token_id": bos_id, "eos_token_id": config["eos_token_id"]}
    _write_json(dest / "generation_config.json", generation)
    return dest


def build_small_model(dest: Path, *, seed: int = 0) -> Path:
    """Same builder at ~76M parameters, for benchmarks where the engine should dominate."""
    return build_tiny_model(
        dest,
        seed=seed,
        num_layers=12,
        hidden_size=768,
        num_heads=12,
        num_kv_heads=4,
        intermediate_size=2048,
        max_position_embeddings=4096,
    )


def build_lora_adapter(
    base: Path,
    dest: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    num_layers: int | None = None,
    scale: float = 10.0,
) -> Path:
    """Write an mlx-lm LoRA adapter directory for the model at base; return dest.

    Uses mlx-lm's own LoRA layers, with seeded non-zero ``lora_a`` and ``lora_b`` so the
    adapter visibly changes the logits. ``num_layers`` counts from the last block
    (None: all). mlx-lm's LoRA init draws from MLX's thread-local global PRNG.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    # Lazy: only the shapes matter, the base weights are never read.
    model, _ = load_model(Path(base), lazy=True)
    layers = len(model.layers) if num_layers is None else num_layers
    lora_parameters = {"rank": rank, "scale": scale, "dropout": 0.0}
    model.freeze()
    linear_to_lora_layers(model, layers, lora_parameters)
    params = sorted(tree_flatten(model.trainable_parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        # lora_a is (in, rank): unit-variance projections; lora_b is (rank, out): small.
        std = param.shape[0] ** -0.5 if name.endswith("lora_a") else 0.02
        weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * std
    mx.eval(weights)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(dest / "adapters.safetensors"), weights, metadata={"format": "mlx"})
    config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": lora_parameters}
    _write_json(dest / "adapter_config.json", config)
    return dest


_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_STALE_BUILD_SECONDS = 3600


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds every file a model directory needs."""
    return all((path / name).is_file() for name in _MODEL_FILES)


def _fsync_tree(path: Path) -> None:
    """Flush every file and the directory itself, so a rename never publishes lost data."""
    for child in [*path.iterdir(), path]:
        fd = os.open(child, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_builds(data_dir: Path, prefix: str) -> None:
    """Delete temp dirs that crashed builds left behind (old enough not to be running)."""
    cutoff = time.time() - _STALE_BUILD_SECONDS
    for path in data_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def ensure_demo_model(data_dir: Path) -> Path:
    """Build the demo model once under ``data_dir/demo-<DEMO_VERSION>``; return its path.

    Builds into a temp dir beside it and renames it into place, so a crash or a
    concurrent build never leaves a half model; a hand-damaged directory is rebuilt.
    """
    data_dir = Path(data_dir)
    final = data_dir / f"demo-{DEMO_VERSION}"
    if _is_complete(final):
        return final
    data_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    _remove_stale_builds(data_dir, prefix)
    if final.exists():
        # Only reachable by hand damage: move it aside first, as removal is not atomic.
        trash = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, trash / "damaged")
        shutil.rmtree(trash, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
    try:
        build_tiny_model(tmp)
        _fsync_tree(tmp)
        try:
            # POSIX rename refuses a non-empty target: the first finished build wins.
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
