"""Requests that arrive together start together: a burst reaches the worker as one.

When many clients send at once, their requests finish admission (template, tokenization)
one after another. Handed to the worker one by one, the first few start at once, in a
prefill of their own, while the rest wait for that prefill and its first decode step, then
start in a second (and a third …): measured on a GPU with 64 clients, their first tokens
came after three prefills and three first steps instead of one of each, and MLX's CUDA
backend compiled kernels for every new prefill shape it met. So while other requests are
still being admitted, an admitted request is held back, and the whole burst is handed over
together when the last of them is admitted, or after ``HOLD_S`` at most. A request that
comes alone is never held; nor is anything when nothing else is being admitted.

Every command goes through the gate, so the worker sees them in the order they were sent:
a cancellation or a model load never overtakes a request held before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")

#: The longest a request waits for the rest of its burst: under a steady stream of requests
#: admission never pauses, and each request then starts at most this much later.
HOLD_S = 0.05


class BurstGate(Generic[C]):
    """Passes commands to ``submit`` in order, holding them while ``admitting()`` says more
    requests are on their way (``hold`` on ``send``), for ``hold_s`` at most."""

    def __init__(
        self, submit: Callable[[C], None], admitting: Callable[[], int], hold_s: float = HOLD_S
    ) -> None:
        self._submit = submit
        self._admitting = admitting
        self._hold_s = hold_s
        self._held: list[C] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._held)

    def send(self, command: C, *, hold: bool = False) -> None:
        """Submit ``command``, or hold it: ``hold`` (an admitted request) and requests are still
        being admitted, or earlier commands are held (order is kept)."""
        if not self._held and not (hold and self._admitting() > 0):
            self._submit(command)
            return
        self._held.append(command)
        if not hold:
            return
        if self._admitting() == 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._hold_s, self.flush)

    def settled(self) -> None:
        """An admission ended without a command (it failed): the burst may be complete."""
        if self._held and self._admitting() == 0:
            self.flush()

    def flush(self) -> None:
        """Submit everything held, in order."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        for command in held:
            self._submit(command)
