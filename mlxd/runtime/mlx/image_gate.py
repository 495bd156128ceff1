"""Requests held back while a prompt with images decodes alone.

Some vision backends (``serial``: Qwen's families, whose 3-D rotary positions carry one
delta per model) cannot share the batch with a prompt with images. Such a prompt then
decodes without company: it waits until the model's sequences end, runs alone, and every
request that arrives meanwhile waits, in order, until it ends. Other backends never wait.
"""

from __future__ import annotations

from mlxd.runtime.mlx.commands import Choice, Insert


class ImageGate:
    """The requests of one model waiting for a serial prompt with images."""

    def __init__(self, serial: bool) -> None:
        self._serial = serial
        self._waiting: list[Insert] = []
        #: True while a serial prompt with images decodes.
        self.alone = False

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def admit(self, command: Insert, decoding: bool) -> bool:
        """True when ``command`` may start now; else it waits its turn."""
        if not self._serial:
            return True
        if self._waiting or self.alone or (command.vision is not None and decoding):
            self._waiting.append(command)
            return False
        self.alone = command.vision is not None
        return True

    def ended_alone(self, decoding: bool) -> bool:
        """True once when the prompt that ran alone has ended (its backend may free its state)."""
        if self.alone and not decoding:
            self.alone = False
            return True
        return False

    def next(self, decoding: bool) -> Insert | None:
        """The waiting request that may start now, if any (in arrival order)."""
        if not self._waiting or self.alone:
            return None
        command = self._waiting[0]
        if command.vision is not None and decoding:
            return None
        del self._waiting[0]
        self.alone = command.vision is not None
        return command

    def cancel(self, seq_id: int) -> bool:
        """Drop a waiting choice (its client left); False when none waits under ``seq_id``."""
        for command in self._waiting:
            for choice in command.choices:
                if choice.seq_id == seq_id:
                    command.choices.remove(choice)
                    if not command.choices:
                        self._waiting.remove(command)
                    return True
        return False

    def clear(self) -> list[Choice]:
        """Forget every waiting request; their choices are returned, to be failed."""
        left = [choice for command in self._waiting for choice in command.choices]
        self._waiting.clear()
        self.alone = False
        return left
