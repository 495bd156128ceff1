"""What the HTTP layer needs from the daemon: the live config, the engine, reload."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlxd.config.schema import MlxdConfig
from mlxd.http.dialects.openai.responses_store import ResponseStore
from mlxd.protocol.admin import DistributedStatus
from mlxd.runtime.engine import Engine


class ConfigSource(Protocol):
    """The config store as the HTTP layer reads it."""

    @property
    def current(self) -> MlxdConfig: ...

    @property
    def generation(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def path(self) -> Path | None: ...


async def _no_reload() -> int:
    raise NotImplementedError


@dataclass
class DaemonState:
    """Shared by every route: config, engine, and the daemon's lifecycle flags."""

    configs: ConfigSource
    engine: Engine
    reload: Callable[[], Awaitable[int]] = _no_reload
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    metrics: Any = None
    #: Stored Responses (``previous_response_id``, ``GET /v1/responses/{id}``).
    responses: ResponseStore = field(default_factory=ResponseStore)
    #: The ranks of a distributed daemon, as ``/mlxd/status`` shows them (None: one process).
    distributed: Callable[[], DistributedStatus] | None = None
