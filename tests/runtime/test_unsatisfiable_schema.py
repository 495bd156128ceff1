"""A JSON schema no output can match is a 400 naming response_format, not an empty 200."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import RunningDaemon

SELF_REFERENCE: dict[str, Any] = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
THROUGH_ANY_OF: dict[str, Any] = {"anyOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"$ref": "#/$defs/a"}}}


@pytest.mark.parametrize("schema", [SELF_REFERENCE, THROUGH_ANY_OF])
def test_a_grammar_that_admits_nothing_is_refused(schema: dict[str, Any]) -> None:
    from mlxd.runtime.grammars import GrammarError, json_grammar

    with pytest.raises(GrammarError) as caught:
        json_grammar(schema)
    assert caught.value.param == "response_format"
    assert "unsatisfiable" in caught.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}},
        {"$ref": "#/$defs/t", "$defs": {"t": {"type": "array", "items": {"$ref": "#/$defs/t"}}}},
        {"type": "string", "maxLength": 0},
    ],
)
def test_satisfiable_schemas_still_compile(schema: dict[str, Any]) -> None:
    from mlxd.runtime.grammars import json_grammar

    assert json_grammar(schema)


@pytest.mark.mlx
@pytest.mark.server
def test_the_daemon_answers_400_and_keeps_serving(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "loop", "schema": SELF_REFERENCE},
            },
        )
    assert caught.value.code == "invalid_schema"
    assert caught.value.param == "response_format"
    reply = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=3, temperature=0, response_format={"type": "json_object"}
    )
    assert reply.choices[0].message.content
