"""The demo model's tokenizer: a real byte-level BPE trained on a few KB of English, with
ChatML special tokens and a chat template (plus a reasoning variant with ``<think>`` tags).

Training is deterministic and takes a few milliseconds, so equal builds give equal
bytes. Pure Python (the ``tokenizers`` library): no MLX here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as sorted JSON so that equal builds give equal bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer(dest: Path, *, chat_template: bool, max_length: int, thinking: bool = False) -> Any:
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
    write_json(dest / "tokenizer_config.json", config)
    write_json(dest / "special_tokens_map.json", specials)
    return tokenizer


#: An encoder's special tokens, BERT's names, at ids 0..4 (``[PAD]`` is 0, as in BERT).
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_wordpiece_tokenizer(dest: Path, *, max_length: int) -> Any:
    """An encoder's tokenizer, as BERT-family embedding models ship it: a WordPiece
    vocabulary trained on the same text, lower-cased, every input wrapped in
    ``[CLS] … [SEP]``. Saves ``tokenizer.json`` and its configs; returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    # The vocabulary is counted here rather than by the WordPiece trainer, whose ties fall
    # differently from run to run: the characters, each also as a word piece, then whole
    # words by frequency.
    pre = pre_tokenizers.BertPreTokenizer()
    counts: dict[str, int] = {}
    for word, _ in pre.pre_tokenize_str(normalizers.BertNormalizer(lowercase=True).normalize_str(_CORPUS)):
        counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    pieces = [*WORDPIECE_SPECIALS, *chars, *(f"##{c}" for c in chars)]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    pieces += words[: VOCAB_SIZE - len(pieces)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=WORDPIECE_SPECIALS[1]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.save(str(dest / "tokenizer.json"))
    specials = {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    config = {
        **specials,
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    write_json(dest / "tokenizer_config.json", config)
    write_json(dest / "special_tokens_map.json", specials)
    return tokenizer
