"""What rank 0 sends the other ranks: every command, without what only rank 0 can use."""

from __future__ import annotations

import pickle
from concurrent.futures import Future
from pathlib import Path

from mlxd.output.parser import OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.commands import Cancel, Choice, Configure, Insert, Load, Shutdown, Unload
from mlxd.runtime.mlx.lockstep_wire import Discard, from_wire, to_wire
from mlxd.runtime.requests import SamplingParams
from mlxd.runtime.specs import ModelSpec, RuntimeSettings


class Sink:
    cached_tokens = 0

    def __init__(self) -> None:
        self.events: list[GenerationEvent] = []

    def put(self, delivery: GenerationEvent) -> None:
        self.events.append(delivery)


def travel(command: object) -> object:
    """To the wire, across (pickled, as the ranks send it), and back into a command."""
    return from_wire(pickle.loads(pickle.dumps(to_wire(command))))  # type: ignore[arg-type]


def test_an_insert_arrives_whole_but_with_sinks_that_discard() -> None:
    from mlx_lm.tool_parsers import json_tools

    sink = Sink()
    insert = Insert(
        ("org/m", None, None),
        [1, 2, 3],
        16,
        OutputSpec(stops=("END",), tools=[{"type": "function", "function": {"name": "f"}}], max_tool_calls=1),
        2,
        [Choice(7, SamplingParams(temperature=0.5, seed=3), sink), Choice(8, SamplingParams(), sink)],
        grammar='start: "x"',
        interval=0.02,
        request_id="req-1",
        tool_format=ToolFormat("<tool_call>", "</tool_call>", json_tools.parse_tool_call),
        reasoning_format=ReasoningFormat("<think>", "</think>", starts_inside=True),
    )
    arrived = travel(insert)
    assert isinstance(arrived, Insert)
    assert all(isinstance(choice.sink, Discard) for choice in arrived.choices)
    assert [(c.seq_id, c.sampling) for c in arrived.choices] == [
        (c.seq_id, c.sampling) for c in insert.choices
    ]
    for name in ("key", "tokens", "max_tokens", "output", "logprobs", "grammar", "interval", "request_id"):
        assert getattr(arrived, name) == getattr(insert, name)
    assert arrived.tool_format == insert.tool_format
    assert arrived.reasoning_format == insert.reasoning_format
    assert all(choice.sink is sink for choice in insert.choices)  # rank 0's own command is untouched


def test_loads_and_unloads_arrive_with_futures_of_their_own() -> None:
    spec = ModelSpec("org/m", "main", local_path=Path("/models/m"), label="m", parallel="pipeline")
    load = Load(spec.key, spec, Path("/models/m"), Future(), request_id="req-2")
    arrived = travel(load)
    assert isinstance(arrived, Load)
    assert (arrived.key, arrived.spec, arrived.path, arrived.request_id) == (
        load.key,
        spec,
        load.path,
        "req-2",
    )
    assert arrived.future is not load.future
    assert not arrived.future.done()
    unload = travel(Unload(spec.key, Future()))
    assert isinstance(unload, Unload)
    assert unload.key == spec.key


def test_plain_commands_arrive_as_they_are() -> None:
    assert travel(Cancel(9)) == Cancel(9)
    assert travel(Configure(RuntimeSettings(max_batch_size=4))) == Configure(
        RuntimeSettings(max_batch_size=4)
    )
    assert isinstance(travel(Shutdown()), Shutdown)


def test_a_pipeline_unit_is_another_unit_than_a_tensor_split() -> None:
    tensor = ModelSpec("org/m", "main")
    pipeline = ModelSpec("org/m", "main", parallel="pipeline")
    assert tensor.key != pipeline.key
    assert tensor.base_key == ("org/m", "main")  # one process keys units as before
