"""The config in the runtime's terms: every conversion from ``MlxdConfig`` lives here.

The daemon (settings, preload, retirement) and the HTTP layer (a request's alias, an
explicit load) read the same config the same way through these functions.
"""

from __future__ import annotations

import os

from mlxd.config.schema import MlxdConfig, ModelConfig
from mlxd.runtime.engine import ModelSpec, RuntimeSettings, UnitKey


def spec_for(model: ModelConfig) -> ModelSpec:
    """The runtime's view of an alias's weights."""
    return ModelSpec(
        source=model.model,
        revision=model.revision,
        local_path=model.local_path,
        adapter_path=model.adapter_path,
        context_length=model.context_length,
        label=model.source,
        parallel=model.parallel,
    )


def keep_alive_for(config: MlxdConfig, alias: str) -> float:
    """How long ``alias``'s unit stays loaded when idle: its own keep_alive, else ``[runtime]``'s."""
    keep_alive = config.models[alias].keep_alive
    return keep_alive if keep_alive is not None else config.runtime.keep_alive


def physical_memory() -> int:
    """Bytes of RAM (macOS and Linux both answer sysconf)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def runtime_settings(config: MlxdConfig, memory: int | None = None) -> RuntimeSettings:
    """``[runtime]`` with the memory budget in bytes (of ``memory``, default: this machine's)."""
    runtime = config.runtime
    return RuntimeSettings(
        max_loaded_models=runtime.max_loaded_models,
        memory_budget_bytes=runtime.memory_budget_bytes(memory if memory is not None else physical_memory()),
        max_batch_size=runtime.max_batch_size,
        max_queue=runtime.max_queue,
        prefill_step_size=runtime.prefill_step_size,
        prompt_cache_bytes=runtime.prompt_cache_bytes,
    )


def units_of(config: MlxdConfig) -> dict[UnitKey, frozenset[str]]:
    """The model units the config names, each with the aliases that name it."""
    units: dict[UnitKey, set[str]] = {}
    for alias, model in config.models.items():
        units.setdefault(spec_for(model).key, set()).add(alias)
    return {key: frozenset(aliases) for key, aliases in units.items()}
