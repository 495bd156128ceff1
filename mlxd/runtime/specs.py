"""What the runtime is configured with: a model unit's identity and spec, and the runtime's
settings (no MLX here). The config layer builds them (``mlxd.runtime.from_config``); the
residency keys units by ``UnitKey`` and the backend loads a ``ModelSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: A loaded model unit: (source, revision, adapter path, engine options or ``None``).
UnitKey = tuple[str, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The ``[runtime]`` settings the engine applies (memory budget already in bytes).

    A config edit hands the engine a new instance: the limits apply at once, the batch
    size and prefill step at the next decode step, the prompt-cache budget at once
    (shrinking evicts)."""

    max_loaded_models: int = 2
    memory_budget_bytes: int = 2**40
    max_batch_size: int = 16
    max_queue: int = 64
    prefill_step_size: int = 256
    prompt_cache_bytes: int = 2 * 10**9
    #: Where prompt prefixes are kept on disk (``None``: not at all).
    prompt_cache_dir: Path | None = None
    prompt_cache_disk_bytes: int = 0
    #: Shorter prefixes are not worth a file.
    prompt_cache_disk_min_tokens: int = 512


@dataclass(frozen=True, slots=True)
class KvSettings:
    """A quantized KV cache (mlx-lm's ``kv_bits``, ``kv_group_size``, ``quantized_kv_start``)."""

    bits: int
    group_size: int = 64
    #: Keys and values are quantized once a cache holds this many tokens.
    start: int = 5000

    @property
    def tag(self) -> str:
        """A short stable name for keys and file metadata."""
        return f"kv{self.bits}g{self.group_size}s{self.start}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What to load for an alias: base weights (shared by key) plus an optional adapter."""

    source: str
    revision: str | None = None
    local_path: Path | None = None
    adapter_path: Path | None = None
    context_length: int | None = None
    #: What status output shows (never an absolute path).
    label: str = ""
    #: How the weights split over the ranks of a distributed daemon ("tensor" or "pipeline").
    parallel: str = "tensor"
    #: A quantized KV cache for this unit's sequences.
    kv: KvSettings | None = None
    #: The unit whose model drafts tokens for speculative decoding (itself draft-free).
    draft: ModelSpec | None = None

    @property
    def base_key(self) -> tuple[str, str | None]:
        """Aliases with equal base keys share one copy of the weights (a pipeline's shards
        are other arrays than a tensor split's, so they are another copy)."""
        source = self.source if self.parallel == "tensor" else f"{self.source} ({self.parallel})"
        return (source, self.revision)

    @property
    def options(self) -> str | None:
        """The engine options that make a unit of their own over the same weights."""
        parts = []
        if self.kv is not None:
            parts.append(self.kv.tag)
        if self.draft is not None:
            draft = self.draft.key
            parts.append(f"draft={draft[0]}@{draft[1] or ''}+{draft[2] or ''}")
        return ",".join(parts) or None

    @property
    def key(self) -> UnitKey:
        """The loaded unit: base weights plus adapter, under its engine options (aliases
        that differ in KV quantization or draft model batch apart, sharing the weights)."""
        adapter = str(self.adapter_path) if self.adapter_path else None
        return (*self.base_key, adapter, self.options)
