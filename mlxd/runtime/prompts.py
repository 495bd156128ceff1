"""Turn a chat or text prompt into token ids (pure Python; safe off the MLX thread)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

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
    return [list(next(encoded)) if isinstance(x, str) else [int(t) for t in x] for x in inputs]


def _encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """``tokenizer.encode`` of each text; several at once through the Rust tokenizer's batch
    call where that gives the same ids (256 short inputs: 2x faster on 2 cores, and it
    spreads them over more where a Mac has them). A tokenizer class that changes ``encode``
    itself (mlx-lm's newline tokenizer, say), or sits under a wrapper that does, encodes
    one text at a time."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # under mlx-lm's wrapper
    cls = type(hf)
    batched = (
        len(texts) > 1
        and getattr(type(tokenizer), "encode", None) in (None, PreTrainedTokenizerBase.encode)
        and getattr(hf, "is_fast", False) is True
        and getattr(cls, "encode", None) is PreTrainedTokenizerBase.encode
        and cls.__call__ is PreTrainedTokenizerBase.__call__
    )
    if batched:
        return [list(ids) for ids in hf(texts)["input_ids"]]
    return [list(tokenizer.encode(text)) for text in texts]


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
    tokens = _apply_template(tokenizer, prompt, tokenize=True)
    if isinstance(tokens, Mapping):
        tokens = tokens["input_ids"]
    return [int(t) for t in tokens]
