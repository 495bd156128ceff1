"""Stored Responses: a bounded, least-recently-used map from response id to what it said.

A stored response keeps its ``response`` object (for ``GET /v1/responses/{id}``) and its
conversation as chat-template messages, so ``previous_response_id`` continues it. The
store lives in memory only: a restart forgets it, as the bound (``[server]
responses_store_size``) forgets the least recently used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxd.http.errors import UnknownId


class ResponseNotFound(UnknownId):
    """No stored response has this id (never stored, forgotten, or deleted)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored response."""

    body: Mapping[str, Any]
    conversation: Sequence[Mapping[str, Any]]


class ResponseStore:
    """At most ``capacity`` responses; the least recently used goes first."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, stored: Stored, capacity: int) -> None:
        """Keep a response (then drop the oldest beyond ``capacity``; 0 keeps none)."""
        with self._lock:
            self._items[response_id] = stored
            self._items.move_to_end(response_id)
            while len(self._items) > capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str, param: str | None = None) -> Stored:
        """A stored response (it becomes the most recently used); ``param`` names the field
        that asked for it, for the 404."""
        with self._lock:
            stored = self._items.get(response_id)
            if stored is None:
                raise ResponseNotFound(f"no stored response has the id {response_id!r}", param)
            self._items.move_to_end(response_id)
            return stored

    def delete(self, response_id: str) -> None:
        """Forget a response."""
        with self._lock:
            if self._items.pop(response_id, None) is None:
                raise ResponseNotFound(f"no stored response has the id {response_id!r}")

    def __len__(self) -> int:
        return len(self._items)
