"""The dialect-neutral request core: what every API's request comes down to, resolved
against the config into a ``GenerationRequest``.

Each dialect's translator maps its own fields onto one ``CommonRequest`` and calls
``resolve``, so alias resolution (the default alias, ``adapters``), limits and caps, the
precedence of defaults (request field > alias ``defaults`` > ``[defaults]`` >
built-in), stop strings, tools and ``tool_choice``, structured output, the
``max_tokens`` ceiling and ``keep_alive`` are decided here once for all of them. Errors
name the field the way the request's own dialect spells it (``CommonRequest.names``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlxd.config.generation import GenerationDefaults
from mlxd.config.models import CHAT_TEMPLATE_KWARGS, ModelConfig
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ModelNotFoundError, RequestError
from mlxd.http.ids import new_id
from mlxd.http.images import ImagePart, resolve_images
from mlxd.http.tools import Tools, structured, tool_choice
from mlxd.protocol.requests import ResponseFormat
from mlxd.runtime.from_config import keep_alive_for, num_draft_tokens_for, spec_for
from mlxd.runtime.requests import ChatPrompt, Constraint, GenerationRequest, SamplingParams, TextPrompt
from mlxd.runtime.specs import ModelSpec

_ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CommonRequest:
    """One generation request in no dialect's terms: what each translator fills in.

    ``messages`` are OpenAI-style dicts (``role``, ``content`` text, ``tool_calls`` with
    object arguments, ``tool_call_id``, ``name``) for the chat template; ``prompt`` is raw
    text or token ids instead. ``None`` means the request did not say.
    """

    model: str | None = None
    adapters: str | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | tuple[int, ...] | None = None
    role_mapping: Mapping[str, str] | None = None
    chat_template_kwargs: Mapping[str, Any] | None = None
    max_tokens: int | None = None
    n: int | None = None
    stop: str | Sequence[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    repetition_context_size: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: Mapping[int, float] | None = None
    seed: int | None = None
    xtc_probability: float | None = None
    xtc_threshold: float | None = None
    presence_context_size: int | None = None
    frequency_context_size: int | None = None
    #: Draft tokens per step (alias with a draft model); ``draft_model`` is refused: it is the alias's.
    num_draft_tokens: int | None = None
    draft_model: str | None = None
    #: Top alternatives per token (``None``: no logprobs).
    logprobs: int | None = None
    #: OpenAI-style function tools and ``tool_choice`` (``none``, ``auto``, ``required``,
    #: a named function or ``allowed_tools``).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    #: Seconds the model stays loaded after this request (the alias's keep_alive otherwise).
    keep_alive: float | None = None
    #: The images of ``messages``, in order (each is an ``{"type": "image"}`` part there).
    images: tuple[ImagePart, ...] = ()
    #: The dialect's name of each neutral field, for error messages (``max_tokens`` is
    #: ``max_output_tokens`` in Responses, ``num_predict`` in Ollama).
    names: Mapping[str, str] = field(default_factory=dict)


class _PerConfig:
    """What each alias resolves to under one config generation, computed once: resolving
    paths and merging defaults on every request showed up in the profile."""

    #: The config and its aliases' views, swapped together when a new config comes.
    views: tuple[MlxdConfig | None, dict[str, tuple[ModelSpec, GenerationDefaults]]] = (None, {})


def alias_view(config: MlxdConfig, alias: str) -> tuple[ModelSpec, GenerationDefaults]:
    """``alias``'s model spec and generation defaults under ``config``, computed once per
    config generation (a reload brings a new one)."""
    cached, aliases = _PerConfig.views
    if cached is not config:
        aliases = {}
        _PerConfig.views = (config, aliases)
    view = aliases.get(alias)
    if view is None:
        view = aliases[alias] = (spec_for(config.models[alias]), config.generation_defaults(alias))
    return view


def resolve_alias(config: MlxdConfig, name: str | None) -> str:
    """The alias a request names, or the default one; 404 for anything else."""
    if name is None or name == "":
        alias = config.default_alias()
        if alias is None:
            if not config.models:
                raise ModelNotFoundError("no models are configured; add one to mlxd.toml")
            raise RequestError(
                "model is required: no alias is marked default = true", param="model", code="missing_model"
            )
        return alias
    alias = config.find_alias(name)
    if alias is None:
        raise ModelNotFoundError(
            f"the model {name!r} does not exist; GET /v1/models lists the configured ones"
        )
    return alias


def _adapter_alias(config: MlxdConfig, alias: str, adapters: str) -> str:
    """``adapters`` must name an adapter declared in the config (by alias or as written)."""
    base = config.models[alias]
    for name, model in config.models.items():
        if model.adapter is not None and adapters in (name, model.adapter):
            if (model.model, model.revision) != (base.model, base.revision):
                raise RequestError(f"adapter {adapters!r} belongs to another base model", param="adapters")
            return name
    raise RequestError(
        f"adapters must name an adapter declared in the config, not {adapters!r}", param="adapters"
    )


def _messages(request: CommonRequest, max_messages: int) -> tuple[Mapping[str, Any], ...]:
    messages = request.messages or ()
    if not messages:
        raise RequestError("messages must not be empty", param="messages")
    if len(messages) > max_messages:
        raise RequestError(f"at most {max_messages} messages are accepted", param="messages")
    for i, message in enumerate(messages):
        if message.get("role") not in _ROLES:
            raise RequestError(f"unknown role {message.get('role')!r}", param=f"messages[{i}].role")
    return messages


def past_call(call_id: str | None, name: Any, arguments: Any, param: str) -> dict[str, Any]:
    """An earlier tool call of the assistant, as the chat template takes it (arguments as
    an object, whether the dialect sent them as JSON text or as an object)."""
    if not isinstance(name, str) or not name:
        raise RequestError("each tool call needs a function name", param=param)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            raise RequestError("tool call arguments must be JSON", param=param) from None
    if arguments is None:
        arguments = {}
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id:
        call["id"] = call_id
    return call


def past_calls(calls: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """A message's earlier calls in OpenAI's shape (``{"id"?, "function": {"name", "arguments"}}``,
    which Ollama's messages share), as the chat template takes them."""
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise RequestError("each tool call needs a function with a name", param=param)
        out.append(past_call(call.get("id"), function.get("name"), function.get("arguments"), param))
    return out


def _response_format(request: CommonRequest) -> Constraint | None:
    """``response_format`` (or a dialect's equivalent) as a constraint on the content."""
    format_ = request.response_format
    if format_ is None or format_.type == "text":
        return None
    if format_.type == "json_object":
        return Constraint(None)
    if format_.type == "json_schema":
        schema = (format_.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise RequestError("response_format json_schema needs a 'schema' object", param="response_format")
        return Constraint(schema)
    raise RequestError(f"response_format {format_.type!r} is not supported", param="response_format")


def _constraint(request: CommonRequest, shown: Tools | None, forced: Tools | None) -> Constraint | None:
    """Structured output the request asks for: a JSON object or schema, a forced tool call,
    or both (see ``tools.structured``)."""
    parallel = request.parallel_tool_calls is not False
    return structured(_response_format(request), shown, forced, parallel=parallel)


def _num_draft_tokens(request: CommonRequest, alias: str, model: ModelConfig) -> int:
    """Draft tokens per step: the request's, else the alias's (0 without a draft model)."""
    if request.draft_model is not None:
        raise RequestError(
            f"draft_model is set per alias in the config ([models.{alias}] draft_model)", param="draft_model"
        )
    default = num_draft_tokens_for(model)
    if request.num_draft_tokens is None:
        return default
    if request.num_draft_tokens and not default:
        raise RequestError(f"{alias!r} has no draft_model to draft tokens with", param="num_draft_tokens")
    return request.num_draft_tokens


def _stop(request: CommonRequest, config: MlxdConfig, default: tuple[str, ...]) -> tuple[str, ...]:
    if request.stop is None:
        return default
    stops = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop)
    limits = config.limits
    if len(stops) > limits.max_stop:
        raise RequestError(f"at most {limits.max_stop} stop strings are accepted", param="stop")
    for stop in stops:
        if not stop:
            raise RequestError("stop strings must not be empty", param="stop")
        if len(stop) > limits.max_stop_length:
            raise RequestError(
                f"stop strings are limited to {limits.max_stop_length} characters", param="stop"
            )
    return stops


def _prompt(
    request: CommonRequest, config: MlxdConfig, alias: str, tools: Tools | None
) -> ChatPrompt | TextPrompt:
    if request.messages is None and request.prompt is not None:
        if request.images:
            raise RequestError("images need a chat prompt", param=request.images[0].param)
        if not request.prompt:
            raise RequestError("prompt must not be empty", param="prompt")
        if isinstance(request.prompt, str):
            return TextPrompt(text=request.prompt)
        return TextPrompt(tokens=request.prompt)
    kwargs = dict(config.models[alias].chat_template_kwargs)
    for key, value in (request.chat_template_kwargs or {}).items():
        if key not in CHAT_TEMPLATE_KWARGS:
            raise RequestError(
                f"chat_template_kwargs may only set {', '.join(sorted(CHAT_TEMPLATE_KWARGS))}",
                param="chat_template_kwargs",
            )
        kwargs[key] = value
    messages = _messages(request, config.limits.max_messages)
    return ChatPrompt(
        messages,
        request.role_mapping,
        kwargs,
        tools,
        template=config.models[alias].template_text,
        images=resolve_images(request.images, config),
    )


def resolve(request: CommonRequest, config: MlxdConfig) -> GenerationRequest:
    """Validate a request against the config and resolve every parameter.

    Returns the ``GenerationRequest`` for the engine (its output parser on the worker
    enforces the stop strings, the tools and the tool-call limit). Raises the 400/404 the request deserves, its ``param`` in the request's dialect.
    """
    with dialect_names(request.names):
        return _resolve(request, config)


@contextlib.contextmanager
def dialect_names(names: Mapping[str, str]) -> Iterator[None]:
    """Errors raised inside name the field as the dialect spells it: the rules (here and in
    the engine's admission) speak of ``max_tokens`` or ``messages``, the client of
    ``num_predict`` or ``input``."""
    try:
        yield
    except RequestError as exc:
        if exc.param and names:
            head = exc.param.split("[", 1)[0].split(".", 1)[0]
            if head in names:
                exc.param = names[head] + exc.param[len(head) :]
                exc.message = exc.message.replace(head, names[head], 1)
        raise


def _resolve(request: CommonRequest, config: MlxdConfig) -> GenerationRequest:
    alias = resolve_alias(config, request.model)
    if request.adapters is not None:
        alias = _adapter_alias(config, alias, request.adapters)
    model = config.models[alias]
    spec, defaults = alias_view(config, alias)
    limits = config.limits
    if request.logit_bias and len(request.logit_bias) > limits.max_logit_bias:
        raise RequestError(f"at most {limits.max_logit_bias} logit_bias entries", param="logit_bias")
    requested = request.max_tokens
    if requested is not None and requested > limits.max_tokens:
        raise RequestError(f"max_tokens must be at most {limits.max_tokens}", param="max_tokens")
    # The alias's max_tokens_limit is a server-side cap: it trims, whatever the request says.
    ceiling = min(model.max_tokens_limit or limits.max_tokens, limits.max_tokens)
    max_tokens = min(requested or defaults.max_tokens or 512, ceiling)
    n = request.n or 1
    if n > limits.max_n:
        raise RequestError(f"n must be at most {limits.max_n}", param="n")
    tools, forced = tool_choice(request) if request.messages is not None else (None, None)
    prompt = _prompt(request, config, alias, tools)
    constraint = _constraint(request, tools, forced)

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    sampling = SamplingParams(
        temperature=pick(request.temperature, defaults.temperature),
        top_p=pick(request.top_p, defaults.top_p),
        top_k=pick(request.top_k, defaults.top_k),
        min_p=pick(request.min_p, defaults.min_p),
        repetition_penalty=pick(request.repetition_penalty, defaults.repetition_penalty),
        repetition_context_size=pick(request.repetition_context_size, defaults.repetition_context_size),
        presence_penalty=pick(request.presence_penalty, defaults.presence_penalty),
        frequency_penalty=pick(request.frequency_penalty, defaults.frequency_penalty),
        logit_bias=tuple(sorted((request.logit_bias or {}).items())),
        seed=request.seed,
        xtc_probability=pick(request.xtc_probability, defaults.xtc_probability),
        xtc_threshold=pick(request.xtc_threshold, defaults.xtc_threshold),
        presence_context_size=pick(request.presence_context_size, defaults.presence_context_size),
        frequency_context_size=pick(request.frequency_context_size, defaults.frequency_context_size),
    )
    for token_id, _ in sampling.logit_bias:
        if token_id < 0:
            raise RequestError("logit_bias token ids cannot be negative", param="logit_bias")
    return GenerationRequest(
        request_id=new_id(),
        alias=alias,
        spec=spec,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=_stop(request, config, defaults.stop or ()),
        max_tool_calls=1 if request.parallel_tool_calls is False else None,
        logprobs=request.logprobs,
        max_tokens_explicit=requested is not None and requested <= ceiling,
        keep_alive=keep_alive_for(config, alias) if request.keep_alive is None else request.keep_alive,
        n=n,
        constraint=constraint,
        delivery_interval=config.server.stream_interval if request.stream else None,
        num_draft_tokens=_num_draft_tokens(request, alias, model),
    )


def thinking(effort: str | None, param: str) -> dict[str, Any] | None:
    """OpenAI's reasoning effort as chat-template arguments: ``none`` and ``minimal`` turn a
    reasoning model's thinking off, ``low`` to ``xhigh`` on (the template gets the effort too)."""
    if effort is None:
        return None
    if effort in ("none", "minimal"):
        return {"enable_thinking": False}
    if effort in ("low", "medium", "high", "xhigh"):
        return {"enable_thinking": True, "reasoning_effort": effort}
    raise RequestError(
        f"reasoning effort {effort!r} is not one of none, minimal, low, medium, high, xhigh", param=param
    )
