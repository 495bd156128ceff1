"""``translate``: an OpenAI request plus the config into a ``GenerationRequest`` (pure Python).

Precedence of generation parameters: request field > alias ``defaults`` > ``[defaults]``
> built-in; server-side caps and limits hold whatever the request says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlxd.config import load_config
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ModelNotFoundError, RequestError
from mlxd.http.dialects.openai.translate import translate
from mlxd.http.embeddings import resolve_embeddings
from mlxd.protocol.requests import ChatCompletionRequest, CompletionRequest
from mlxd.runtime.requests import ChatPrompt, TextPrompt

CONFIG = """
[server]
stream_interval = "50ms"
[runtime]
keep_alive = "10m"
[limits]
max_tokens = 1000
max_n = 4
[defaults]
temperature = 0.5
top_p = 0.9
max_tokens = 100
stop = ["GLOBAL"]
[models.tiny]
model = "org/tiny"
default = true
aliases = ["gpt-4o-mini"]
max_tokens_limit = 64
keep_alive = "forever"
[models.tiny.defaults]
temperature = 0.2
[models.other]
model = "org/other"
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> MlxdConfig:
    path = tmp_path_factory.mktemp("translate") / "mlxd.toml"
    path.write_text(CONFIG)
    return load_config(path)


def chat(**body: Any) -> ChatCompletionRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return msgspec.json.decode(msgspec.json.encode(body), type=ChatCompletionRequest)


def text(**body: Any) -> CompletionRequest:
    return msgspec.json.decode(msgspec.json.encode(body), type=CompletionRequest)


def test_request_beats_alias_defaults_beat_global_defaults_beat_built_ins(config: MlxdConfig) -> None:
    plain, _ = translate(chat(model="tiny"), config)
    assert plain.sampling.temperature == 0.2  # the alias's own default
    assert plain.sampling.top_p == 0.9  # [defaults]
    assert plain.sampling.min_p == 0.0  # built-in
    assert plain.stop == ("GLOBAL",)
    asked, _ = translate(chat(model="tiny", temperature=1.1, top_p=0.5, stop="mine"), config)
    assert (asked.sampling.temperature, asked.sampling.top_p, asked.stop) == (1.1, 0.5, ("mine",))
    other, _ = translate(chat(model="other"), config)
    assert other.sampling.temperature == 0.5  # no alias default: [defaults]


def test_max_tokens_limit_trims_silently_and_limits_refuse(config: MlxdConfig) -> None:
    trimmed, _ = translate(chat(model="tiny", max_tokens=500), config)
    assert (trimmed.max_tokens, trimmed.max_tokens_explicit) == (64, False)
    default, _ = translate(chat(model="other"), config)
    assert (default.max_tokens, default.max_tokens_explicit) == (100, False)
    explicit, _ = translate(chat(model="other", max_completion_tokens=300), config)
    assert (explicit.max_tokens, explicit.max_tokens_explicit) == (300, True)
    with pytest.raises(RequestError) as refused:
        translate(chat(model="other", max_tokens=1001), config)
    assert refused.value.param == "max_tokens"
    with pytest.raises(RequestError) as too_many:
        translate(chat(n=5), config)
    assert too_many.value.param == "n"


def test_names_resolve_to_aliases_and_nothing_else(config: MlxdConfig) -> None:
    assert translate(chat(), config)[0].alias == "tiny"  # the default alias
    assert translate(chat(model="gpt-4o-mini"), config)[0].alias == "tiny"
    assert translate(chat(model="org/other"), config)[0].alias == "other"  # its repo id
    for name in ("nope", "../tiny", "/etc/passwd", "org/unknown"):
        with pytest.raises(ModelNotFoundError):
            translate(chat(model=name), config)


def test_keep_alive_spec_and_delivery_follow_the_config(config: MlxdConfig) -> None:
    tiny, _ = translate(chat(model="tiny", stream=True), config)
    other, _ = translate(chat(model="other"), config)
    assert tiny.keep_alive == float("inf")
    assert other.keep_alive == 600
    assert tiny.spec.source == "org/tiny"
    assert tiny.delivery_interval == pytest.approx(0.05)  # streams: the stream interval
    assert other.delivery_interval is None  # not streaming: the whole output at once
    assert tiny.request_id != other.request_id


def test_prompts_and_seeds(config: MlxdConfig) -> None:
    request, shape = translate(text(prompt=[1, 2, 3], seed=7, logprobs=2, echo=False), config)
    assert request.prompt == TextPrompt(tokens=(1, 2, 3))
    assert (request.sampling.seed, request.logprobs, shape.logprobs) == (7, 2, "legacy")
    conversation, shape = translate(chat(logprobs=True, top_logprobs=3), config)
    assert isinstance(conversation.prompt, ChatPrompt)
    assert (conversation.logprobs, shape.logprobs) == (3, "openai")
    assert translate(chat(logprobs=5), config)[1].logprobs == "seed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"stop": [""]}, "stop"),
        ({"logit_bias": {"-1": 1}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": []}, "messages"),
        ({"adapters": "../x"}, "adapters"),
    ],
    ids=lambda value: str(value)[:24],
)
def test_invalid_fields_are_400s_naming_them(config: MlxdConfig, body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as refused:
        translate(chat(**body), config)
    assert refused.value.param == param


def test_the_alias_view_is_recomputed_for_a_new_config(config: MlxdConfig, tmp_path: Path) -> None:
    first, _ = translate(chat(model="other"), config)
    path = tmp_path / "mlxd.toml"
    path.write_text(CONFIG.replace('model = "org/other"', 'model = "org/changed"'))
    second, _ = translate(chat(model="other"), load_config(path))
    assert (first.spec.source, second.spec.source) == ("org/other", "org/changed")


def test_embedding_requests_share_the_alias_view(config: MlxdConfig, tmp_path: Path) -> None:
    """The alias's spec is resolved once per config generation for embeddings too (resolving
    a model's path on every request was 40-90 us of the event loop's time per request)."""
    first = resolve_embeddings(config, "other", "a text")
    again = resolve_embeddings(config, "other", ["another"])
    assert again.spec is first.spec
    path = tmp_path / "mlxd.toml"
    path.write_text(CONFIG.replace('model = "org/other"', 'model = "org/changed"'))
    changed = resolve_embeddings(load_config(path), "other", "a text")
    assert (first.spec.source, changed.spec.source) == ("org/other", "org/changed")
