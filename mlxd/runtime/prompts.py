"""Turn a chat or text prompt into token ids (pure Python; safe off the MLX thread)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mlxd.errors import RequestError
from mlxd.runtime.images import decode
from mlxd.runtime.requests import ChatPrompt, TextPrompt

#: The seed server's prompt format for models without a chat template.
SEED_ROLE_MAPPING: Mapping[str, str] = {
    "system_prompt": (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant follows the user's instructions carefully."
    ),
    "system": "ASSISTANT's RULE: ",
    "user": "USER: ",
    "assistant": "ASSISTANT: ",
    "stop": "\n",
}


def render_role_mapping(messages: Sequence[Mapping[str, Any]], mapping: Mapping[str, str]) -> str:
    """Render messages the way ``mlx_lm.server`` does with ``role_mapping``."""
    stop = mapping.get("stop", "")
    parts = [mapping.get("system_prompt", "")]
    for message in messages:
        parts.append(f"{mapping.get(str(message['role']), '')}{message.get('content') or ''}{stop}")
    parts.append(mapping.get("assistant", ""))
    return "".join(parts).rstrip()


def _template_kwargs(prompt: ChatPrompt) -> dict[str, Any]:
    # The assistant's turn is opened unless the request or the alias says otherwise
    # (``add_generation_prompt`` is one of the allowed chat_template_kwargs).
    kwargs: dict[str, Any] = {"add_generation_prompt": True, **prompt.template_kwargs}
    if prompt.tools:
        kwargs["tools"] = [dict(tool) for tool in prompt.tools]
    if prompt.template is not None:  # the alias's own template, checked when the config loaded
        kwargs["chat_template"] = prompt.template
    return kwargs


def _apply_template(tokenizer: Any, prompt: ChatPrompt, **kwargs: Any) -> Any:
    try:
        return tokenizer.apply_chat_template(
            [dict(m) for m in prompt.messages], **_template_kwargs(prompt), **kwargs
        )
    except Exception as exc:  # jinja's raise_exception() and friends: the conversation's fault
        raise RequestError(
            f"the model's chat template rejected the messages: {exc}", param="messages"
        ) from exc


def encode_inputs(tokenizer: Any, inputs: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """Token ids of embedding inputs: texts as the tokenizer encodes them (special tokens
    included, as the model was trained to embed them), token ids as given."""
    encoded = iter(_encode_texts(tokenizer, [x for x in inputs if isinstance(x, str)]))
    return [next(encoded) if isinstance(x, str) else [int(t) for t in x] for x in inputs]


def closing_tokens(tokenizer: Any) -> frozenset[int]:
    """The ids a tokenizer may close an input with: its separator (BERT's ``[SEP]``,
    XLM-RoBERTa's ``</s>``) and its end of sequence."""
    ids = (getattr(tokenizer, name, None) for name in ("sep_token_id", "eos_token_id"))
    return frozenset(i for i in ids if isinstance(i, int))


def cut_to_context(ids: list[int], context: int, closing: Collection[int]) -> None:
    """Cut an over-long input to ``context`` tokens in place, as sentence-transformers
    truncates: from the end of its text, keeping the ``closing`` tokens it ends with, which
    the model was trained to see last and which last-token pooling reads."""
    kept = 0
    while kept < min(len(ids), context - 1) and ids[len(ids) - 1 - kept] in closing:
        kept += 1
    del ids[context - kept : len(ids) - kept]


#: The tokenizer methods a batch call and ``encode`` share; a class that overrides any of them
#: (CodeLlama's splits one text on ``<FILL_ME>``, mlx-lm's newline tokenizer rewrites it in
#: ``encode``) may encode a list otherwise than each text, so it is asked one text at a time.
_SHARED_PATH = ("encode", "__call__", "_encode_plus", "_batch_encode_plus")


def _encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """``tokenizer.encode`` of each text; several at once through the Rust tokenizer's batch
    call where that is the same code path (256 short inputs: 2x faster on 2 cores, and it
    spreads them over more where a Mac has them)."""
    if len(texts) > 1 and (fast := _plain_fast_tokenizer(tokenizer)) is not None:
        return [list(ids) for ids in fast(texts)["input_ids"]]
    return [list(tokenizer.encode(text)) for text in texts]


def _plain_fast_tokenizer(tokenizer: Any) -> Any:
    """The transformers fast tokenizer under ``tokenizer`` (itself, or under mlx-lm's
    wrapper) when neither overrides the shared encoding path; else ``None``."""
    from transformers import PreTrainedTokenizerBase  # heavy: only off the event loop

    inner = getattr(tokenizer, "_tokenizer", None)
    hf = inner if isinstance(inner, PreTrainedTokenizerBase) else tokenizer
    if not isinstance(hf, PreTrainedTokenizerBase) or hf.is_fast is not True:
        return None
    if hf is not tokenizer and getattr(type(tokenizer), "encode", None) is not None:
        return None  # a wrapper with an encode of its own
    for name in _SHARED_PATH:
        module = _defined_in(type(hf), name)
        if module is not None and not module.startswith(_TRANSFORMERS_BASE):
            return None
    return hf


#: Where transformers' own tokenizer base classes live.
_TRANSFORMERS_BASE = "transformers.tokenization_utils"


#: ``_defined_in``'s answers: asked for every prompt, about classes that never change.
_DEFINED_IN: dict[tuple[type, str], str | None] = {}


def _defined_in(cls: type, name: str) -> str | None:
    """The module of the class in ``cls``'s MRO that defines ``name`` (None: no class does)."""
    key = (cls, name)
    if key not in _DEFINED_IN:
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        _DEFINED_IN[key] = None if owner is None else owner.__module__
    return _DEFINED_IN[key]


def vision_prompt(tokenizer: Any, vision: Any, prompt: ChatPrompt) -> Any:
    """A chat prompt with images, for the model's image processor: the template written as
    text (one image token per image part), each image decoded and widened to its patches.

    Raises:
        RequestError: an image is corrupt, or the template has no slot for each image.
    """
    if not (tokenizer.has_chat_template or prompt.template):
        raise RequestError("images need a model with a chat template", param=prompt.images[0].param)
    text = _apply_template(tokenizer, prompt, tokenize=False)
    pixels = [decode(image) for image in prompt.images]
    try:
        return vision.prepare(tokenizer, text, pixels, [image.digest for image in prompt.images])
    except (ValueError, AssertionError) as exc:
        raise RequestError(f"the images do not fit the prompt: {exc}", param="messages") from exc


def encode_prompt(tokenizer: Any, prompt: ChatPrompt | TextPrompt) -> list[int]:
    """Token ids for a prompt: the chat template, ``role_mapping``, or plain encoding."""
    if isinstance(prompt, TextPrompt):
        if prompt.tokens is not None:
            return list(prompt.tokens)
        return list(tokenizer.encode(prompt.text or ""))
    if prompt.role_mapping is not None or not (tokenizer.has_chat_template or prompt.template):
        mapping = {**SEED_ROLE_MAPPING, **(prompt.role_mapping or {})}
        return list(tokenizer.encode(render_role_mapping(prompt.messages, mapping)))
    rust = _rust_encoder(tokenizer)
    if rust is not None:
        # The batch call, as transformers makes it: it lets go of the GIL while it encodes
        # (``encode`` holds it, freezing the event loop for 20 ms on a 32k-token prompt).
        text = _apply_template(tokenizer, prompt, tokenize=False)
        return list(rust.encode_batch([text], add_special_tokens=False)[0].ids)
    tokens = _apply_template(tokenizer, prompt, tokenize=True)
    if isinstance(tokens, Mapping):
        tokens = tokens["input_ids"]
    return [int(t) for t in tokens]


def _rust_encoder(tokenizer: Any) -> Any:
    """The Rust tokenizer under a plain transformers fast tokenizer, where encoding the
    rendered template with it gives what ``apply_chat_template(tokenize=True)`` does; else
    ``None``. That path renders, then calls the tokenizer on the text without special tokens
    through transformers' encoding machinery around the Rust call: a short chat prompt took
    99 us on the CPU machine, 83 us without the machinery, on the tokenizer thread whose work
    in a burst alternates with the event loop's under the GIL. Not where a class renders its
    own way, or where the Rust tokenizer is set to truncate, pad or split special tokens
    otherwise than transformers would ask it to.
    """
    hf = _plain_fast_tokenizer(tokenizer)
    if hf is None:
        return None
    module = _defined_in(type(hf), "apply_chat_template")
    if module is None or not module.startswith(_TRANSFORMERS_BASE):
        return None
    rust = getattr(hf, "_tokenizer", None)
    if rust is None or rust.truncation is not None or rust.padding is not None:
        return None
    if rust.encode_special_tokens != bool(getattr(hf, "split_special_tokens", False)):
        return None
    return rust
