"""Anthropic Messages onto the common request: where each image goes."""

from __future__ import annotations

import msgspec

from mlxd.http.dialects.anthropic.translate import common
from mlxd.protocol.anthropic import CountTokensRequest


def _image(data: str) -> dict[str, object]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def test_a_tool_results_images_come_before_its_turns_own_as_their_messages_do() -> None:
    """A turn holding the turn's own image first, then a tool result with one: the tool
    message is rendered first, so its image must be the request's first."""
    body = {
        "model": "vision",
        "messages": [
            {"role": "user", "content": "Take a screenshot"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {
                "role": "user",
                "content": [
                    _image("T1dO"),
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "x"}, _image("U0hPVA==")],
                    },
                    {"type": "text", "text": "Compare them"},
                ],
            },
        ],
    }
    request = common(msgspec.json.decode(msgspec.json.encode(body), type=CountTokensRequest))
    assert request.messages is not None
    roles = [m["role"] for m in request.messages]
    assert roles == ["user", "assistant", "tool", "user"]
    tool, user = request.messages[2], request.messages[3]
    assert tool["content"] == [{"type": "text", "text": "x"}, {"type": "image"}]
    assert user["content"] == [{"type": "image"}, {"type": "text", "text": "Compare them"}]
    assert [(i.value, i.param) for i in request.images] == [
        ("U0hPVA==", "messages[2].content[1].content[1]"),
        ("T1dO", "messages[2].content[0]"),
    ]
