"""Turn an OpenAI request plus the config into a ``GenerationRequest``.

Precedence of generation parameters: request field > alias ``defaults`` >
``[defaults]`` > built-in. Known OpenAI fields mlxd does not honour yet are a 400
naming the field, never a silent no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlxd.config.schema import CHAT_TEMPLATE_KWARGS, GenerationDefaults, MlxdConfig, ModelConfig
from mlxd.errors import ModelNotFoundError, RequestError
from mlxd.http.dialects.openai.logprobs import LogprobShape
from mlxd.http.ids import new_id
from mlxd.http.tools import Tools, structured, tool_choice
from mlxd.output.parser import OutputSpec
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, CompletionRequest
from mlxd.runtime.engine import (
    ChatPrompt,
    Constraint,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    TextPrompt,
)
from mlxd.runtime.from_config import keep_alive_for, spec_for

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class Shape:
    """What the response side needs besides the ``GenerationRequest``: the logprobs shape
    (OpenAI chat, the seed's, or legacy completions), the echoed prompt, and what the
    output parser must enforce."""

    logprobs: LogprobShape | None
    echo: str = ""
    output: OutputSpec = field(default_factory=OutputSpec)


class _PerConfig:
    """What each alias resolves to under one config generation, computed once: resolving
    paths and merging defaults on every request showed up in the profile."""

    config: MlxdConfig | None = None
    aliases: dict[str, tuple[ModelSpec, GenerationDefaults]] = {}  # noqa: RUF012 - rebound per config


def _alias_view(config: MlxdConfig, alias: str) -> tuple[ModelSpec, GenerationDefaults]:
    if _PerConfig.config is not config:
        _PerConfig.config, _PerConfig.aliases = config, {}
    view = _PerConfig.aliases.get(alias)
    if view is None:
        view = _PerConfig.aliases[alias] = (spec_for(config.models[alias]), config.generation_defaults(alias))
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


def _unsupported(request: AnyRequest) -> None:
    def reject(param: str, what: str) -> None:
        raise RequestError(f"{what} is not supported yet", param=param, code="unsupported_parameter")

    if isinstance(request, ChatCompletionRequest):
        if request.functions:
            reject("functions", "functions")
        if request.function_call not in (None, "none"):
            reject("function_call", "function_call")
    else:
        if request.best_of not in (None, 1):
            reject("best_of", "best_of > 1")
        if request.suffix:
            reject("suffix", "suffix")
        if request.echo and request.logprobs is not None:
            reject("echo", "echo together with logprobs")


def _messages(request: ChatCompletionRequest, max_messages: int) -> tuple[dict[str, Any], ...]:
    if not request.messages:
        raise RequestError("messages must not be empty", param="messages")
    if len(request.messages) > max_messages:
        raise RequestError(f"at most {max_messages} messages are accepted", param="messages")
    out = []
    for i, message in enumerate(request.messages):
        if message.role not in _ROLES:
            raise RequestError(f"unknown role {message.role!r}", param=f"messages[{i}].role")
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise RequestError(
                        f"content parts of type {part.type!r} are not supported by text models",
                        param=f"messages[{i}].content[{j}]",
                    )
                texts.append(part.text)
            content = "".join(texts)
        entry: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": content or "",
        }
        if message.name:
            entry["name"] = message.name
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            entry["tool_calls"] = _past_calls(message.tool_calls, f"messages[{i}].tool_calls")
        out.append(entry)
    return tuple(out)


def _past_calls(calls: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """An assistant message's earlier tool calls, with arguments as objects for the template."""
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError("each tool call needs a function with a name", param=param)
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                raise RequestError("tool call arguments must be JSON", param=param) from None
        out.append({**call, "function": {"name": function["name"], "arguments": arguments}})
    return out


def _constraint(
    request: AnyRequest, shown: Tools | None, forced: Tools | None, parallel: bool
) -> Constraint | None:
    """Structured output the request asks for: a JSON object or schema, a forced tool call,
    or both (see ``tools.structured``)."""
    return structured(_response_format(request), shown, forced, parallel=parallel)


def _response_format(request: AnyRequest) -> Constraint | None:
    """``response_format`` as a constraint on the content."""
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


def _stop(request: AnyRequest, config: MlxdConfig, default: tuple[str, ...]) -> tuple[str, ...]:
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


def _logprobs(request: AnyRequest) -> tuple[int | None, LogprobShape | None]:
    """(top alternatives to compute, response shape)."""
    if isinstance(request, CompletionRequest):
        return (request.logprobs, "legacy") if request.logprobs is not None else (None, None)
    lp, top = request.logprobs, request.top_logprobs
    if lp is True:
        return top or 0, "openai"
    if lp is None or lp is False:
        if top:
            raise RequestError("top_logprobs requires logprobs: true", param="top_logprobs")
        return None, None
    return int(lp), "seed"


def _prompt(
    request: AnyRequest, config: MlxdConfig, model: ModelConfig, tools: Tools | None
) -> ChatPrompt | TextPrompt:
    if isinstance(request, ChatCompletionRequest):
        kwargs = dict(model.chat_template_kwargs)
        for key, value in (request.chat_template_kwargs or {}).items():
            if key not in CHAT_TEMPLATE_KWARGS:
                raise RequestError(
                    f"chat_template_kwargs may only set {', '.join(sorted(CHAT_TEMPLATE_KWARGS))}",
                    param="chat_template_kwargs",
                )
            kwargs[key] = value
        return ChatPrompt(_messages(request, config.limits.max_messages), request.role_mapping, kwargs, tools)
    prompt = request.prompt
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("prompt must not be empty", param="prompt")
        return TextPrompt(text=prompt)
    if not prompt:
        raise RequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return TextPrompt(tokens=tuple(int(p) for p in prompt))
    if len(prompt) != 1 or not isinstance(prompt[0], str) or not prompt[0]:
        raise RequestError(
            "send one non-empty prompt per request (prompt lists are not supported)", param="prompt"
        )
    return TextPrompt(text=str(prompt[0]))


def translate(request: AnyRequest, config: MlxdConfig) -> tuple[GenerationRequest, Shape]:
    """Validate a request against the config and resolve every parameter."""
    _unsupported(request)
    alias = resolve_alias(config, request.model)
    if request.adapters is not None:
        alias = _adapter_alias(config, alias, request.adapters)
    model = config.models[alias]
    spec, defaults = _alias_view(config, alias)
    if request.logit_bias and len(request.logit_bias) > config.limits.max_logit_bias:
        raise RequestError(f"at most {config.limits.max_logit_bias} logit_bias entries", param="logit_bias")
    requested = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if requested is not None and requested > config.limits.max_tokens:
        raise RequestError(f"max_tokens must be at most {config.limits.max_tokens}", param="max_tokens")
    # The alias's max_tokens_limit is a server-side cap: it trims, whatever the request says.
    ceiling = min(model.max_tokens_limit or config.limits.max_tokens, config.limits.max_tokens)
    max_tokens = min(requested or defaults.max_tokens or 512, ceiling)
    n = request.n or 1
    if n > config.limits.max_n:
        raise RequestError(f"n must be at most {config.limits.max_n}", param="n")
    top, shape = _logprobs(request)
    tools, forced = tool_choice(request) if isinstance(request, ChatCompletionRequest) else (None, None)
    prompt = _prompt(request, config, model, tools)
    single_call = isinstance(request, ChatCompletionRequest) and request.parallel_tool_calls is False
    constraint = _constraint(request, tools, forced, not single_call)
    echo = ""
    if isinstance(request, CompletionRequest) and request.echo and isinstance(prompt, TextPrompt):
        echo = prompt.text or ""

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
    )
    for token_id, _ in sampling.logit_bias:
        if token_id < 0:
            raise RequestError("logit_bias token ids cannot be negative", param="logit_bias")
    generation = GenerationRequest(
        request_id=new_id(),
        alias=alias,
        spec=spec,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=_stop(request, config, defaults.stop or ()),
        logprobs=top,
        max_tokens_explicit=requested is not None and requested <= ceiling,
        keep_alive=keep_alive_for(config, alias),
        n=n,
        constraint=constraint,
        delivery_interval=config.server.stream_interval if request.stream else None,
    )
    # Stop strings are still cut on the worker; the parser cuts reasoning and tool calls.
    output = OutputSpec(tools=tools, max_tool_calls=1 if single_call else None)
    return generation, Shape(shape, echo, output)
