"""Chat Completions and Completions in: an OpenAI request onto the common request core.

Known OpenAI fields mlxd does not honour yet are a 400 naming the field, never a silent
no-op; everything else is ``mlxd.http.translate``'s to decide, as for every dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.http.dialects.openai.logprobs import LogprobShape
from mlxd.http.images import ImagePart, content, from_url
from mlxd.http.translate import CommonRequest, past_calls, resolve, thinking
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, ChatMessage, CompletionRequest
from mlxd.runtime.requests import GenerationRequest


@dataclass(frozen=True, slots=True)
class Shape:
    """What the response side needs besides the ``GenerationRequest``: the logprobs shape
    (OpenAI chat, the seed's, or legacy completions) and the echoed prompt."""

    logprobs: LogprobShape | None
    echo: str = ""


def _unsupported(request: AnyRequest) -> None:
    def reject(param: str, what: str) -> None:
        raise RequestError(f"{what} is not supported yet", param=param, code="unsupported_parameter")

    if isinstance(request, ChatCompletionRequest):
        if request.functions:
            reject("functions", "functions")
        if request.function_call not in (None, "none"):
            reject("function_call", "function_call")
        if request.modalities is not None and set(request.modalities) - {"text"}:
            reject("modalities", "output other than text")
        if request.audio is not None:
            reject("audio", "audio output")
        if request.web_search_options is not None:
            reject("web_search_options", "web search")
    else:
        if request.best_of not in (None, 1):
            reject("best_of", "best_of > 1")
        if request.suffix:
            reject("suffix", "suffix")
        if request.echo and request.logprobs is not None:
            reject("echo", "echo together with logprobs")


def _message(message: ChatMessage, i: int, images: list[ImagePart]) -> dict[str, Any]:
    body: Any = message.content
    if isinstance(body, list):
        texts: list[str | None] = []
        for j, part in enumerate(body):
            param = f"messages[{i}].content[{j}]"
            if part.type == "text" and part.text is not None:
                texts.append(part.text)
            elif part.type == "image_url":
                url = part.image_url.get("url") if isinstance(part.image_url, dict) else part.image_url
                images.append(from_url(url, param))
                texts.append(None)
            else:
                raise RequestError(f"content parts of type {part.type!r} are not supported", param=param)
        body = content(texts)
    entry: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": body or "",
    }
    if message.name:
        entry["name"] = message.name
    if message.tool_call_id:
        entry["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        entry["tool_calls"] = past_calls(message.tool_calls, f"messages[{i}].tool_calls")
    return entry


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


def _text_prompt(request: CompletionRequest) -> str | tuple[int, ...]:
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise RequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return tuple(int(p) for p in prompt)
    if len(prompt) != 1 or not isinstance(prompt[0], str) or not prompt[0]:
        raise RequestError(
            "send one non-empty prompt per request (prompt lists are not supported)", param="prompt"
        )
    return str(prompt[0])


def translate(request: AnyRequest, config: MlxdConfig) -> tuple[GenerationRequest, Shape]:
    """Validate an OpenAI request against the config and resolve every parameter."""
    _unsupported(request)
    top, shape = _logprobs(request)
    common: dict[str, Any] = {}
    echo = ""
    if isinstance(request, ChatCompletionRequest):
        images: list[ImagePart] = []
        common.update(
            messages=tuple(_message(m, i, images) for i, m in enumerate(request.messages)),
            images=tuple(images),
            role_mapping=request.role_mapping,
            # The request's own template arguments win over what its effort implies.
            chat_template_kwargs={
                **(thinking(request.reasoning_effort, "reasoning_effort") or {}),
                **(request.chat_template_kwargs or {}),
            }
            or None,
            max_tokens=request.max_completion_tokens or request.max_tokens,
            tools=request.tools,
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
        )
    else:
        prompt = _text_prompt(request)
        common.update(prompt=prompt, max_tokens=request.max_tokens)
        if request.echo:
            if not isinstance(prompt, str):
                raise RequestError(
                    "echo of a prompt given as token ids is not supported yet",
                    param="echo",
                    code="unsupported_parameter",
                )
            echo = prompt
    generation = resolve(
        CommonRequest(
            model=request.model,
            adapters=request.adapters,
            n=request.n,
            stop=request.stop,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            repetition_context_size=request.repetition_context_size,
            xtc_probability=request.xtc_probability,
            xtc_threshold=request.xtc_threshold,
            presence_context_size=request.presence_context_size,
            frequency_context_size=request.frequency_context_size,
            num_draft_tokens=request.num_draft_tokens,
            draft_model=request.draft_model,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=request.logit_bias,
            seed=request.seed,
            logprobs=top,
            response_format=request.response_format,
            stream=bool(request.stream),
            **common,
        ),
        config,
    )
    return generation, Shape(shape, echo)
