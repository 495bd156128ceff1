"""The config in the runtime's terms: every conversion from ``MlxdConfig`` lives here.

The daemon (settings, preload, retirement) and the HTTP layer (a request's alias, an
explicit load) read the same config the same way through these functions.
"""

from __future__ import annotations

import os
from dataclasses import replace

from mlxd.config.models import DEFAULT_NUM_DRAFT_TOKENS, ModelConfig
from mlxd.config.paths import cache_dir
from mlxd.config.schema import MlxdConfig
from mlxd.runtime.specs import KvSettings, ModelSpec, RuntimeSettings, UnitKey

#: What a draft unit that no alias names is called in status output.
DRAFT_SUFFIX = "/draft"


def _weights_spec(model: ModelConfig) -> ModelSpec:
    return ModelSpec(
        source=model.model,
        revision=model.revision,
        local_path=model.local_path,
        adapter_path=model.adapter_path,
        context_length=model.context_length,
        label=model.source,
        parallel=model.parallel,
    )


def spec_for(model: ModelConfig) -> ModelSpec:
    """The runtime's view of an alias: its weights, and the engine options that shape its
    unit (a quantized KV cache, a draft model: the draft's weights alone, as a unit of
    their own that the alias's unit keeps loaded)."""
    spec = _weights_spec(model)
    kv = None
    if model.kv_bits is not None:
        kv = KvSettings(model.kv_bits, model.kv_group_size, model.quantized_kv_start)
    draft = _weights_spec(model.draft) if model.draft is not None else None
    return replace(spec, kv=kv, draft=draft) if kv is not None or draft is not None else spec


def num_draft_tokens_for(model: ModelConfig) -> int:
    """Tokens the alias's draft proposes per step by default (0: it has no draft)."""
    if model.draft is None:
        return 0
    return model.num_draft_tokens or DEFAULT_NUM_DRAFT_TOKENS


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
    """``[runtime]`` with the memory budget in bytes (of ``memory``, default: this machine's).

    Several ranks keep no prompt prefixes on disk: each rank would hold its own shard of
    every file (ranks on one machine would share the files), and a disk hit would have to
    happen on every rank alike or the ranks would prefill different tokens."""
    runtime = config.runtime
    disk = runtime.prompt_cache_path(cache_dir() / "prompts") if config.distributed is None else None
    return RuntimeSettings(
        max_loaded_models=runtime.max_loaded_models,
        memory_budget_bytes=runtime.memory_budget_bytes(memory if memory is not None else physical_memory()),
        max_batch_size=runtime.max_batch_size,
        max_queue=runtime.max_queue,
        prefill_step_size=runtime.prefill_step_size,
        prompt_cache_bytes=runtime.prompt_cache_bytes,
        prompt_cache_dir=disk,
        prompt_cache_disk_bytes=runtime.prompt_cache_disk_bytes,
        prompt_cache_disk_min_tokens=runtime.prompt_cache_disk_min_tokens,
    )


def units_of(config: MlxdConfig) -> dict[UnitKey, frozenset[str]]:
    """The model units the config names, each with the aliases that name it (a draft unit
    no alias names is called ``<alias>/draft``)."""
    units: dict[UnitKey, set[str]] = {}
    for alias, model in config.models.items():
        spec = spec_for(model)
        units.setdefault(spec.key, set()).add(alias)
    for alias, model in config.models.items():
        draft = spec_for(model).draft
        if draft is not None and draft.key not in units:
            units[draft.key] = {alias + DRAFT_SUFFIX}
    return {key: frozenset(aliases) for key, aliases in units.items()}
