"""Commands on their way between ranks: what rank 0 sends (no sinks or futures: they are
its own), how a follower makes them whole (sinks that discard, futures of its own), and
what several ranks refuse to run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from mlxd.errors import ModelUnsupportedError
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.commands import Choice, Command, Embed, Insert, Load, Unload


class Discard:
    """A follower's sink: the output of every sequence is rank 0's to deliver."""

    cached_tokens = 0

    def put(self, delivery: GenerationEvent) -> None:
        """Dropped: followers serve no clients."""


class NoLoop:
    """What a follower's worker delivers to: nothing (it has no event loop and no clients)."""

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Dropped."""


#: Commands that answer rank 0 through a future: the other ranks get one of their own.
_ANSWERED = (Load, Unload)


def to_wire(command: Command) -> Command:
    """The command as the other ranks get it: no sinks or futures (they are rank 0's)."""
    if isinstance(command, Insert):
        return replace(command, choices=[Choice(c.seq_id, c.sampling, None) for c in command.choices])  # type: ignore[arg-type]
    if isinstance(command, _ANSWERED):
        return replace(command, future=None)  # type: ignore[arg-type]
    return command


def from_wire(command: Command) -> Command:
    """A command from rank 0 made whole on this rank: sinks that discard, futures of its own."""
    if isinstance(command, Insert):
        for choice in command.choices:
            choice.sink = Discard()
    elif isinstance(command, _ANSWERED):
        command.future = Future()
    return command


def refused(command: Command) -> bool:
    """Fail what several ranks cannot run alike (rank 0 only): embeddings, whose batches
    are sized by each rank's own clock, so the ranks would split them differently."""
    if not isinstance(command, Embed):
        return False
    if not command.future.done():
        command.future.set_exception(
            ModelUnsupportedError(
                "embeddings are not served across several ranks yet",
                hint="serve them from a daemon without [distributed]",
            )
        )
    return True
