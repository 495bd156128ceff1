"""mlxd's own routes: health, status, reload, load and unload."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import msgspec
from litestar import Response, Router, get, post

from mlxd import __version__
from mlxd.errors import ModelNotFoundError
from mlxd.http.state import DaemonState
from mlxd.protocol.admin import (
    ConfigStatus,
    DaemonStatus,
    LoadResult,
    ModelStatus,
    ReloadResult,
    UnloadResult,
)
from mlxd.runtime.from_config import keep_alive_for, spec_for

_JSON = "application/json"


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type=_JSON)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def admin_router(state: DaemonState) -> Router:
    """``/health`` and ``/mlxd/*`` bound to the daemon's state."""

    @get("/health")
    async def health() -> Response[bytes]:
        """Liveness (no auth): 200 while the engine works and the daemon is not draining."""
        if state.draining:
            return _json({"status": "draining"}, 503)
        if not state.engine.healthy():
            return _json(
                {
                    "status": "unhealthy",
                    "reason": "the MLX worker is not running (restarting, or it could not start)",
                },
                503,
            )
        return _json({"status": "ok"})

    @get("/mlxd/status")
    async def status() -> Response[bytes]:
        """What the daemon runs, with which config, and how busy it is."""
        engine = state.engine.status()
        configs = state.configs
        return _json(
            DaemonStatus(
                version=__version__,
                pid=os.getpid(),
                uptime_s=round(time.time() - state.started_at, 1),
                draining=state.draining,
                config=ConfigStatus(
                    path=str(configs.path) if configs.path else None,
                    generation=configs.generation,
                    last_error=configs.last_error,
                    last_reload_at=_iso(getattr(configs, "last_reload_at", None)),
                    restart_required=list(getattr(configs, "restart_required", ())),
                ),
                worker=engine.worker,
                models=[
                    ModelStatus(
                        alias=m.alias,
                        source=m.source,
                        state=m.state,
                        memory_bytes=m.memory_bytes,
                        active_sequences=m.active_sequences,
                        idle_s=m.idle_s,
                    )
                    for m in engine.models
                ],
                active_sequences=engine.active_sequences,
                queue_depth=engine.queue_depth,
                batches=engine.batches,
                largest_batch=engine.largest_batch,
                loads=engine.loads,
                prompt_tokens_processed=engine.prompt_tokens_processed,
                embedding_batches=engine.embedding_batches,
                embedded_inputs=engine.embedded_inputs,
                memory=engine.memory,
                distributed=state.distributed() if state.distributed is not None else None,
            )
        )

    @post("/mlxd/reload", status_code=200)
    async def reload() -> Response[bytes]:
        """Re-read the config; the old one keeps serving when the new one is invalid."""
        # A rejected config raises ConfigError: the error map answers 400 with its problems.
        generation = await state.reload()
        return _json(ReloadResult(generation=generation))

    def _alias(alias: str) -> str:
        config = state.configs.current
        found = config.find_alias(alias)
        if found is None:
            raise ModelNotFoundError(f"the model {alias!r} does not exist")
        return found

    @post("/mlxd/models/{alias:str}/load", status_code=200)
    async def load(alias: str) -> Response[bytes]:
        """Load an alias now (it then stays until its keep_alive expires)."""
        name = _alias(alias)
        config = state.configs.current
        await state.engine.load(name, spec_for(config.models[name]), keep_alive_for(config, name))
        return _json(LoadResult(alias=name, loaded=True))

    @post("/mlxd/models/{alias:str}/unload", status_code=200)
    async def unload(alias: str) -> Response[bytes]:
        """Unload an alias now (409 if it is serving requests)."""
        name = _alias(alias)
        unloaded = await state.engine.unload(name)
        return _json(UnloadResult(alias=name, unloaded=unloaded))

    @get("/metrics")
    async def metrics() -> Response[bytes]:
        """Prometheus text format."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Router(path="/", route_handlers=[health, status, reload, load, unload, metrics])
