"""The wire types of mlxd's own routes, shared by the daemon (encodes) and the CLI (decodes).

``GET /mlxd/status``, ``POST /mlxd/reload`` and ``POST /mlxd/models/{alias}/load|unload``
answer with these structs, and the CLI decodes the answers into them strictly (no type
coercion), so a server and a client that drift apart fail a test with a decode error
instead of printing a wrong ``mlxd status``. Fields added later get defaults, so a newer
CLI still reads an older daemon's answers.
"""

from __future__ import annotations

import msgspec


class ConfigStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The config the daemon serves: its file, generation and the last reload's problem."""

    path: str | None
    generation: int
    last_error: str | None
    #: ISO 8601, None before the first reload.
    last_reload_at: str | None = None
    #: Keys the file changed that apply only after a restart (``server.port``, ``distributed``).
    restart_required: list[str] = msgspec.field(default_factory=list)


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One model the daemon holds (or is loading)."""

    alias: str
    source: str
    state: str
    memory_bytes: int
    active_sequences: int
    idle_s: float


class DistributedStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A distributed daemon's ranks: the backend, how many, where, and how many are up."""

    backend: str
    size: int
    hosts: list[str]
    ranks_up: int
    #: Each rank's seconds per decode pass, as last reported (0 before its first).
    step_seconds: list[float] = msgspec.field(default_factory=list)


class DaemonStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /mlxd/status``: what the daemon runs, with which config, and how busy it is."""

    version: str
    pid: int
    uptime_s: float
    draining: bool
    config: ConfigStatus
    worker: str
    models: list[ModelStatus]
    active_sequences: int
    queue_depth: int
    batches: int = 0
    largest_batch: int = 0
    loads: int = 0
    prompt_tokens_processed: int = 0
    #: Embedding batches run on the worker and the inputs they embedded (their ratio: how
    #: many inputs of concurrent requests shared a forward pass).
    embedding_batches: int = 0
    embedded_inputs: int = 0
    memory: dict[str, int] = msgspec.field(default_factory=dict)
    #: None for one process.
    distributed: DistributedStatus | None = None


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /mlxd/reload`` when the new config was applied."""

    generation: int


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /mlxd/models/{alias}/load``."""

    alias: str
    loaded: bool


class UnloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /mlxd/models/{alias}/unload``: False when the alias was not loaded."""

    alias: str
    unloaded: bool
