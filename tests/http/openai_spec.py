"""Component schemas of OpenAI's published OpenAPI document, for validating mlxd's responses.

Source: github.com/openai/openai-openapi, ``openapi.yaml``, ``info.version: "2.3.0"``
(commit 578000861507cd19620e3f1092adf62303757c0a), MIT License, Copyright OpenAI.
The schemas below are transcribed field by field from its ``components/schemas``, with
descriptions and examples left out; ``nullable`` and ``$ref`` keep the OpenAPI 3.0 form
and ``validator`` turns them into JSON Schema. ``Model`` is the document's four required
fields (id, object, created, owned_by).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema_rs

_FINISH = ["stop", "length", "tool_calls", "content_filter", "function_call"]
_REF = "#/components/schemas/"

_FUNCTION = {"type": "object", "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}
_BYTES = {"type": "array", "items": {"type": "integer"}, "nullable": True}

_LOGPROBS: dict[str, Any] = {  # the document's &chat_completion_response_logprobs
    "type": "object",
    "nullable": True,
    "properties": {
        "content": {
            "type": "array",
            "items": {"$ref": _REF + "ChatCompletionTokenLogprob"},
            "nullable": True,
        },
        "refusal": {
            "type": "array",
            "items": {"$ref": _REF + "ChatCompletionTokenLogprob"},
            "nullable": True,
        },
    },
    "required": ["content", "refusal"],
}

COMPONENTS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "nullable": True},
            "message": {"type": "string", "nullable": False},
            "param": {"type": "string", "nullable": True},
            "type": {"type": "string", "nullable": False},
        },
        "required": ["type", "message", "param", "code"],
    },
    "ErrorResponse": {
        "type": "object",
        "properties": {"error": {"$ref": _REF + "Error"}},
        "required": ["error"],
    },
    "ListModelsResponse": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": _REF + "Model"}},
        },
        "required": ["object", "data"],
    },
    "Model": {
        "properties": {
            "id": {"type": "string"},
            "created": {"type": "integer"},
            "object": {"type": "string", "enum": ["model"]},
            "owned_by": {"type": "string"},
        },
        "required": ["id", "object", "created", "owned_by"],
    },
    "CreateCompletionResponse": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["finish_reason", "index", "logprobs", "text"],
                    "properties": {
                        "finish_reason": {"type": "string", "enum": ["stop", "length", "content_filter"]},
                        "index": {"type": "integer"},
                        "logprobs": {
                            "type": "object",
                            "nullable": True,
                            "properties": {
                                "text_offset": {"type": "array", "items": {"type": "integer"}},
                                "token_logprobs": {"type": "array", "items": {"type": "number"}},
                                "tokens": {"type": "array", "items": {"type": "string"}},
                                "top_logprobs": {
                                    "type": "array",
                                    "items": {"type": "object", "additionalProperties": {"type": "number"}},
                                },
                            },
                        },
                        "text": {"type": "string"},
                    },
                },
            },
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "string"},
            "object": {"type": "string", "enum": ["text_completion"]},
            "usage": {"$ref": _REF + "CompletionUsage"},
        },
        "required": ["id", "object", "created", "model", "choices"],
    },
    "CompletionUsage": {
        "type": "object",
        "properties": {
            "completion_tokens": {"type": "integer"},
            "prompt_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
            "completion_tokens_details": {
                "type": "object",
                "properties": {"reasoning_tokens": {"type": "integer"}},
            },
        },
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    },
    "ChatCompletionTokenLogprob": {
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "logprob": {"type": "number"},
            "bytes": _BYTES,
            "top_logprobs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "token": {"type": "string"},
                        "logprob": {"type": "number"},
                        "bytes": _BYTES,
                    },
                    "required": ["token", "logprob", "bytes"],
                },
            },
        },
        "required": ["token", "logprob", "bytes", "top_logprobs"],
    },
    "ChatCompletionMessageToolCalls": {
        "type": "array",
        "items": {"$ref": _REF + "ChatCompletionMessageToolCall"},
    },
    "ChatCompletionMessageToolCall": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": {**_FUNCTION, "required": ["name", "arguments"]},
        },
        "required": ["id", "type", "function"],
    },
    "ChatCompletionMessageToolCallChunk": {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": _FUNCTION,
        },
        "required": ["index"],
    },
    "ChatCompletionResponseMessage": {
        "type": "object",
        "properties": {
            "content": {"type": "string", "nullable": True},
            "refusal": {"type": "string", "nullable": True},
            "tool_calls": {"$ref": _REF + "ChatCompletionMessageToolCalls"},
            "role": {"type": "string", "enum": ["assistant"]},
            "function_call": {**_FUNCTION, "required": ["name", "arguments"]},
        },
        "required": ["role", "content", "refusal"],
    },
    "ChatCompletionStreamResponseDelta": {
        "type": "object",
        "properties": {
            "content": {"type": "string", "nullable": True},
            "function_call": _FUNCTION,
            "tool_calls": {"type": "array", "items": {"$ref": _REF + "ChatCompletionMessageToolCallChunk"}},
            "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
            "refusal": {"type": "string", "nullable": True},
        },
    },
    "CreateChatCompletionResponse": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["finish_reason", "index", "message", "logprobs"],
                    "properties": {
                        "finish_reason": {"type": "string", "enum": _FINISH},
                        "index": {"type": "integer"},
                        "message": {"$ref": _REF + "ChatCompletionResponseMessage"},
                        "logprobs": _LOGPROBS,
                    },
                },
            },
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "service_tier": {"type": "string", "enum": ["scale", "default"], "nullable": True},
            "system_fingerprint": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "usage": {"$ref": _REF + "CompletionUsage"},
        },
        "required": ["choices", "created", "id", "model", "object"],
    },
    "CreateChatCompletionStreamResponse": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["delta", "finish_reason", "index"],
                    "properties": {
                        "delta": {"$ref": _REF + "ChatCompletionStreamResponseDelta"},
                        "logprobs": _LOGPROBS,
                        "finish_reason": {"type": "string", "enum": _FINISH, "nullable": True},
                        "index": {"type": "integer"},
                    },
                },
            },
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "service_tier": {"type": "string", "enum": ["scale", "default"], "nullable": True},
            "system_fingerprint": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion.chunk"]},
            "usage": {
                "type": "object",
                "properties": {
                    "completion_tokens": {"type": "integer"},
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            },
        },
        "required": ["choices", "created", "id", "model", "object"],
    },
}


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 to JSON Schema: ``nullable`` becomes a null alternative, refs point at ``$defs``."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace(_REF, "#/$defs/")
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validator(name: str, components: dict[str, Any] = COMPONENTS) -> jsonschema_rs.Validator:
    """A validator for one component of the document."""
    defs = {key: _json_schema(value) for key, value in components.items()}
    return jsonschema_rs.validator_for({"$ref": f"#/$defs/{name}", "$defs": defs})  # type: ignore[no-any-return]


def with_nullable_completion_finish() -> dict[str, Any]:
    """The components, except that a text completion chunk's ``finish_reason`` may be null.

    The one exemption: the document requires ``finish_reason`` on ``CreateCompletionResponse``
    choices, admits no null, and says streamed chunks share that shape, so no value is both
    valid and true for a chunk that does not end its choice. OpenAI's own API sends null
    there, and so does mlxd; every other field of those chunks is validated as written.
    """
    components = copy.deepcopy(COMPONENTS)
    choice = components["CreateCompletionResponse"]["properties"]["choices"]["items"]
    choice["properties"]["finish_reason"]["nullable"] = True
    return components
