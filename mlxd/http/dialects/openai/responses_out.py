"""OpenAI Responses out: output events to a ``response`` object or its semantic stream events.

Output items come in the order the model wrote them: a ``reasoning`` item (its
``reasoning_text``), a ``message`` (its ``output_text``), ``function_call`` items. A
stream opens with ``response.created`` and ``response.in_progress``; each item is
``response.output_item.added``, its content part's ``…added``, the deltas
(``response.reasoning_text.delta``, ``response.output_text.delta``,
``response.function_call_arguments.delta``), their ``…done`` events and
``response.output_item.done``; then ``response.completed`` carries the whole response
(``response.incomplete`` when it stopped at ``max_output_tokens``, ``response.failed`` when
generation fails after the start). Item ids are the same in
the events and the final response, as the SDK's stream accumulator requires.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from mlxd.errors import RequestError
from mlxd.http.translate import past_call
from mlxd.output.collect import ChoiceOutput
from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from mlxd.protocol.openai_responses import ResponsesRequest

_encode = msgspec.json.Encoder().encode


def item_id(prefix: str) -> str:
    """An OpenAI-style id: a prefix and 48 hex characters."""
    return f"{prefix}_{os.urandom(24).hex()}"


def _reasoning(rid: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []
    return {"id": rid, "type": "reasoning", "summary": [], "content": content, "status": status}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(mid: str, text: str | None, status: str) -> dict[str, Any]:
    content = [_text_part(text)] if text is not None else []
    return {"id": mid, "type": "message", "role": "assistant", "status": status, "content": content}


def _call(fid: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": fid,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def wire_usage(usage: Usage, reasoning_tokens: int) -> dict[str, Any]:
    """The Responses ``usage`` object."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, usage.completion_tokens)},
        "total_tokens": usage.total_tokens,
    }


def _past(item: dict[str, Any]) -> dict[str, Any]:
    """A function_call item as an earlier call (arguments that are no JSON object become ``{}``)."""
    try:
        return past_call(item["call_id"], item["name"], item["arguments"] or "{}", "input")
    except RequestError:
        return past_call(item["call_id"], item["name"], {}, "input")


class ResponseEncoder:
    """One Responses request's answer: the ``response`` object, or its stream's events."""

    def __init__(self, model: str, request: ResponsesRequest) -> None:
        self.id = item_id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.request = request
        #: The finished output items, in order (the stream's ``…done`` items).
        self.items: list[dict[str, Any]] = []
        self._sequence = 0
        # The item the stream is filling: its kind, id, index and text so far.
        self._open: str | None = None
        self._id = ""
        self._text: list[str] = []
        self._call: tuple[str, str] = ("", "")
        self._completed_at: int | None = None

    # --- the response object -------------------------------------------------------------

    def response(
        self,
        status: str,
        usage: dict[str, Any] | None,
        finish: Finish | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """The ``response`` object in its current state."""
        request = self.request
        incomplete = (
            {"reason": "max_output_tokens"} if finish is not None and finish.reason == "length" else None
        )
        text_format = request.text.format if request.text is not None and request.text.format else None
        effort = request.reasoning.effort if request.reasoning is not None else None
        tools = request.tools or []
        state = "incomplete" if incomplete and status == "completed" else status
        if state == "completed" and self._completed_at is None:
            self._completed_at = int(time.time())  # once: the stream's and the stored one agree
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self._completed_at if state == "completed" else None,
            "status": state,
            "error": {"code": "server_error", "message": error} if error is not None else None,
            "incomplete_details": incomplete,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "output": self.items if status != "in_progress" else [],
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": effort, "summary": None},
            "store": request.store is not False,
            "temperature": request.temperature,
            "text": {"format": text_format or {"type": "text"}},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": tools,
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": request.metadata or {},
        }

    def whole(self, out: ChoiceOutput, usage: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming body, built from the whole choice."""
        status = "incomplete" if out.finish.reason == "length" else "completed"
        if out.reasoning:
            self.items.append(_reasoning(item_id("rs"), out.reasoning, status))
        if out.text or not (out.calls or out.reasoning):  # as the stream: no empty items
            self.items.append(_message(item_id("msg"), out.text, status))
        for call in out.calls:
            self.items.append(_call(item_id("fc"), call.id, call.name, call.arguments, "completed"))
        return self.response("completed", usage, out.finish)

    # --- a stream ----------------------------------------------------------------------

    def _event(self, body: dict[str, Any]) -> bytes:
        body["sequence_number"] = self._sequence
        self._sequence += 1
        return b"event: " + str(body["type"]).encode() + b"\ndata: " + _encode(body) + b"\n\n"

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        created = self._event({"type": "response.created", "response": self.response("in_progress", None)})
        return created + self._event(
            {"type": "response.in_progress", "response": self.response("in_progress", None)}
        )

    def frames(self, events: Sequence[Event]) -> bytes:
        """The events for one delivery of the choice's output, in order (not the ending)."""
        out: list[bytes] = []
        for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    self._start(out, "message")
                    self._text.append(event.text)
                    out.append(
                        self._event(self._where("response.output_text.delta", delta=event.text, logprobs=[]))
                    )
            elif isinstance(event, ReasoningDelta):
                self._start(out, "reasoning")
                self._text.append(event.text)
                out.append(self._event(self._where("response.reasoning_text.delta", delta=event.text)))
            elif isinstance(event, ToolCallStart):
                self._close(out)
                self._open, self._id, self._text = "function_call", item_id("fc"), []
                self._call = (event.id, event.name)
                item = _call(self._id, event.id, event.name, "", "in_progress")
                out.append(self._added(item))
            elif isinstance(event, ToolCallDelta):
                self._text.append(event.arguments)
                event_body = {
                    "type": "response.function_call_arguments.delta",
                    "item_id": self._id,
                    "output_index": len(self.items),
                    "delta": event.arguments,
                }
                out.append(self._event(event_body))
            elif isinstance(event, ToolCallEnd):
                self._close(out)
        return b"".join(out)

    def reasoning_text(self) -> str:
        """All the reasoning so far, of closed items and the open one."""
        done = [
            part["text"] for item in self.items if item["type"] == "reasoning" for part in item["content"]
        ]
        if self._open == "reasoning":
            done.extend(self._text)
        return "".join(done)

    def ending(self, finish: Finish, usage: dict[str, Any]) -> bytes:
        """``response.completed`` (``response.incomplete`` at ``max_output_tokens``, as OpenAI
        sends it; ``response.failed``) after the last open item closes."""
        out: list[bytes] = []
        if finish.reason == "error":
            self._open = None
            failed = self.response("failed", None, finish, finish.error or "generation failed")
            out.append(self._event({"type": "response.failed", "response": failed}))
            return b"".join(out)
        self._close(out, "incomplete" if finish.reason == "length" else "completed")
        response = self.response("completed", usage, finish)
        out.append(self._event({"type": f"response.{response['status']}", "response": response}))
        return b"".join(out)

    def _where(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "item_id": self._id,
            "output_index": len(self.items),
            "content_index": 0,
            **fields,
        }

    def _added(self, item: dict[str, Any]) -> bytes:
        return self._event(
            {"type": "response.output_item.added", "output_index": len(self.items), "item": item}
        )

    def _start(self, out: list[bytes], kind: str) -> None:
        if self._open == kind:
            return
        self._close(out)
        self._open, self._text = kind, []
        if kind == "message":
            self._id = item_id("msg")
            out.append(self._added(_message(self._id, None, "in_progress")))
            part = _text_part("")
        else:
            self._id = item_id("rs")
            out.append(self._added(_reasoning(self._id, "", "in_progress")))
            part = {"type": "reasoning_text", "text": ""}
        out.append(self._event(self._where("response.content_part.added", part=part)))

    def _close(self, out: list[bytes], status: str = "completed") -> None:
        kind, text = self._open, "".join(self._text)
        if kind is None:
            return
        if kind == "function_call":
            call_id, name = self._call
            done = {
                "type": "response.function_call_arguments.done",
                "item_id": self._id,
                "output_index": len(self.items),
                "arguments": text,
                "name": name,
            }
            out.append(self._event(done))
            item = _call(self._id, call_id, name, text, "completed")
        elif kind == "message":
            out.append(self._event(self._where("response.output_text.done", text=text, logprobs=[])))
            out.append(self._event(self._where("response.content_part.done", part=_text_part(text))))
            item = _message(self._id, text, status)
        else:
            out.append(self._event(self._where("response.reasoning_text.done", text=text)))
            part = {"type": "reasoning_text", "text": text}
            out.append(self._event(self._where("response.content_part.done", part=part)))
            item = _reasoning(self._id, text, status)
        out.append(
            self._event({"type": "response.output_item.done", "output_index": len(self.items), "item": item})
        )
        self.items.append(item)
        self._open, self._text = None, []

    # --- what a stored response keeps --------------------------------------------------

    def assistant_message(self) -> dict[str, Any] | None:
        """The output as the next turn's chat-template message (reasoning left out)."""
        text = "".join(
            part["text"] for item in self.items if item["type"] == "message" for part in item["content"]
        )
        calls = [_past(item) for item in self.items if item["type"] == "function_call"]
        if not text and not calls:
            return None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return message
