"""The Ollama API through the official ``ollama`` client (``Client(host=url)``), on real MLX.

``chat`` and ``generate``, streaming and not, ``list``, ``show``, ``ps``, ``format`` with a
schema, tools, ``think``, ``keep_alive``, and the routes a request may not use: as the
client's users (and the many apps that speak Ollama's API) call them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema_rs
import ollama
import pytest

from tests.conftest import RunningDaemon, eventually
from tests.http.test_structured_output import WEATHER
from tests.schemas import PET

pytestmark = [pytest.mark.mlx, pytest.mark.server]

HI = [{"role": "user", "content": "Say hi"}]


def test_chat_whole_and_streamed_say_the_same(llama: ollama.Client) -> None:
    whole = llama.chat(model="tiny", messages=HI, options={"num_predict": 6, "temperature": 0})
    assert whole.done
    assert whole.done_reason == "length"
    assert whole.message.role == "assistant"
    assert whole.message.content
    assert whole.eval_count == 6
    assert whole.prompt_eval_count
    assert whole.prompt_eval_count > 0
    assert whole.total_duration
    assert whole.eval_duration is not None
    assert whole.total_duration >= whole.eval_duration >= 0
    parts = list(
        llama.chat(model="tiny", messages=HI, stream=True, options={"num_predict": 6, "temperature": 0})
    )
    assert all(not p.done for p in parts[:-1])
    assert parts[-1].done
    assert parts[-1].done_reason == "length"
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


def test_generate_whole_and_streamed(llama: ollama.Client) -> None:
    whole = llama.generate(model="tiny", prompt="Once upon a time", options={"num_predict": 5})
    assert whole.done
    assert whole.response
    assert whole.eval_count == 5
    parts = list(
        llama.generate(model="tiny", prompt="Once upon a time", stream=True, options={"num_predict": 5})
    )
    assert "".join(p.response or "" for p in parts) == whole.response
    raw = llama.generate(model="tiny", prompt="Once upon a time", raw=True, options={"num_predict": 5})
    assert raw.prompt_eval_count is not None
    assert whole.prompt_eval_count is not None
    assert raw.prompt_eval_count < whole.prompt_eval_count  # no chat template around it


def test_options_reach_the_sampler(llama: ollama.Client) -> None:
    def answer(**options: Any) -> str:
        reply = llama.chat(model="tiny-lora", messages=HI, options={"num_predict": 12, **options})
        return reply.message.content or ""

    assert answer(temperature=0) == answer(temperature=0)
    assert answer(temperature=1.5, seed=3, top_k=50) == answer(temperature=1.5, seed=3, top_k=50)
    greedy = answer(temperature=0)
    stop = greedy[4:7]
    assert stop.strip()
    assert answer(temperature=0, stop=[stop]) == greedy[: greedy.index(stop)]


def test_format_with_a_schema_is_enforced(llama: ollama.Client) -> None:
    options = {"num_predict": 400, "temperature": 1.0, "seed": 1}
    reply = llama.chat(model="tiny-lora", messages=HI, format=PET, options=options)
    assert reply.done_reason == "stop"
    jsonschema_rs.validator_for(PET).validate(json.loads(reply.message.content or ""))
    loose = llama.generate(model="tiny-lora", prompt="JSON please", format="json", options=options)
    if loose.done_reason == "stop":
        assert isinstance(json.loads(loose.response), dict)
    else:  # unbounded keys may run out of tokens: then it is reported, and starts as an object
        assert loose.done_reason == "length"
        assert loose.response.startswith("{")


def test_tools_are_shown_and_results_go_back(llama: ollama.Client) -> None:
    bare = llama.chat(model="tiny", messages=HI, options={"num_predict": 1})
    offered = llama.chat(model="tiny", messages=HI, tools=[WEATHER], options={"num_predict": 1})
    assert offered.prompt_eval_count
    assert bare.prompt_eval_count
    assert offered.prompt_eval_count > bare.prompt_eval_count + 50  # the template rendered the tool
    history = [
        *HI,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    answered = llama.chat(model="tiny", messages=history, tools=[WEATHER], options={"num_predict": 2})
    assert answered.prompt_eval_count
    assert answered.prompt_eval_count > offered.prompt_eval_count
    assert answered.eval_count == 2


def test_think_gives_the_thinking_field(llama: ollama.Client) -> None:
    thought = llama.chat(model="thinker", messages=HI, think=True, options={"num_predict": 8})
    assert thought.message.thinking
    streamed = list(
        llama.chat(model="thinker", messages=HI, think=True, stream=True, options={"num_predict": 8})
    )
    assert "".join(p.message.thinking or "" for p in streamed) == thought.message.thinking
    plain = llama.chat(model="thinker", messages=HI, think=False, options={"num_predict": 8})
    assert plain.message.thinking is None
    assert plain.message.content
    said = llama.generate(model="thinker", prompt="Hi", think=True, options={"num_predict": 8})
    assert said.thinking


def test_list_show_and_ps_describe_the_aliases(llama: ollama.Client) -> None:
    names = {m.model for m in llama.list().models}
    assert {"tiny", "gpt-4o-mini", "thinker", "plain"} <= names
    tiny = next(m for m in llama.list().models if m.model == "tiny")
    assert tiny.details is not None
    assert (tiny.details.family, tiny.details.format) == ("llama", "mlx")
    assert tiny.size
    assert tiny.size > 0
    shown = llama.show("tiny")
    assert shown.capabilities is not None
    assert set(shown.capabilities) == {"completion", "tools"}
    assert "thinking" in (llama.show("thinker").capabilities or [])
    assert shown.template
    assert "<|im_start|>" in shown.template
    assert shown.details is not None
    assert shown.details.parameter_size
    assert shown.details.parameter_size.endswith("K")
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["llama.embedding_length"] == 64  # the tiny model's hidden size
    assert shown.modelinfo["llama.block_count"] == 2
    assert shown.modelinfo["general.parameter_count"] > 0
    assert llama.show("tiny:latest").template == shown.template  # the tag Ollama apps add
    llama.chat(model="tiny", messages=HI, options={"num_predict": 1})
    loaded = {m.model: m for m in llama.ps().models}
    assert "tiny" in loaded
    assert loaded["tiny"].size
    assert loaded["tiny"].size > 0
    assert loaded["tiny"].context_length == 2048


def test_keep_alive_zero_unloads_after_the_answer(llama: ollama.Client, daemon: RunningDaemon) -> None:
    def loaded() -> set[str]:
        return {m.model or "" for m in llama.ps().models}

    reply = llama.chat(model="plain", messages=HI, keep_alive=0, options={"num_predict": 2})
    assert reply.eval_count == 2
    assert eventually(lambda: "plain" not in loaded())
    # An empty prompt loads the model; with keep_alive 0 it unloads it (Ollama's own way).
    assert llama.generate(model="plain").done_reason == "load"
    assert "plain" in loaded()
    assert llama.generate(model="plain", keep_alive=0).done_reason == "unload"
    assert eventually(lambda: "plain" not in loaded())


def test_num_ctx_bounds_the_prompt(llama: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        llama.chat(model="tiny", messages=HI, options={"num_ctx": 4})
    assert refused.value.status_code == 400
    assert "num_ctx" in refused.value.error
    fits = llama.chat(model="tiny", messages=HI, options={"num_ctx": 1024, "num_predict": 2})
    assert fits.eval_count == 2


@pytest.mark.parametrize(
    ("call", "status", "says"),
    [
        (lambda c: c.pull("tiny"), 403, "mlxd models pull"),
        (lambda c: c.push("tiny"), 403, "mlxd models pull"),
        (lambda c: c.create("x", from_="tiny"), 403, "mlxd.toml"),
        (lambda c: c.copy("tiny", "x"), 403, "mlxd.toml"),
        (lambda c: c.delete("tiny"), 403, "mlxd models rm"),
        (lambda c: c.chat(model="nope", messages=HI), 404, "nope"),
        (
            lambda c: c.chat(model="tiny", messages=[{"role": "user", "content": "x", "images": ["AA=="]}]),
            400,
            "image",
        ),
    ],
    ids=["pull", "push", "create", "copy", "delete", "unknown", "images"],
)
def test_refusals_say_what_to_do(llama: ollama.Client, call: Any, status: int, says: str) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        call(llama)
    assert refused.value.status_code == status
    assert says in refused.value.error
    assert llama.chat(model="tiny", messages=HI, options={"num_predict": 1}).done


def test_the_probes_apps_send(daemon: RunningDaemon) -> None:
    with httpx.Client(base_url=daemon.url) as http:
        root = http.get("/")
        assert (root.status_code, root.text) == (200, "Ollama is running")
        assert http.head("/").status_code == 200
        version = http.get("/api/version").json()
        assert version["version"].count(".") == 2
