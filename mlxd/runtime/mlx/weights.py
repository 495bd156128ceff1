"""The base weights in memory, shared by every unit over the same model (worker thread only).

Units are keyed by (source, revision, adapter); their base weights by (source,
revision). Aliases that differ only by defaults or by a LoRA adapter therefore hold the
base arrays once; the base goes when the last unit over it is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mlxd.errors import ModelLoadError
from mlxd.runtime.mlx.loading import LoadedModel, load_adapted, load_base
from mlxd.runtime.specs import ModelSpec

log = logging.getLogger("mlxd.runtime")

BaseKey = tuple[str, str | None]
#: Reads a unit's base weights from its directory.
Loader = Callable[[ModelSpec, Path], LoadedModel]


def _load_whole(spec: ModelSpec, path: Path) -> LoadedModel:
    return load_base(path)


class WeightStore:
    """Loads base weights once per base key and counts the units that use them.

    ``loader`` reads a base: the whole model in one process, this rank's shard of it in
    a distributed daemon."""

    def __init__(self, loader: Loader = _load_whole) -> None:
        self._load = loader
        self._bases: dict[BaseKey, LoadedModel] = {}
        self._users: dict[BaseKey, int] = {}

    def open(self, spec: ModelSpec, path: Path) -> LoadedModel:
        """The unit's model: the shared base, adapted when the spec has an adapter."""
        key = spec.base_key
        base = self._bases.get(key)
        started = time.perf_counter()
        if base is None:
            log.info("reading the weights of %s", spec.label or spec.source)
            # The model's own context: aliases sharing these weights may each override it
            # (admission applies the request's alias's).
            base = self._bases[key] = self._load(spec, path)
            loaded = base
        else:  # another unit over the same weights (other engine options): they are counted once
            loaded = replace(base, memory_bytes=0)
        if spec.adapter_path is not None:
            try:
                loaded = load_adapted(base, path, spec.adapter_path)
            except ModelLoadError:
                if not self._users.get(key):
                    del self._bases[key]
                raise
        self._users[key] = self._users.get(key, 0) + 1
        log.info(
            "%s ready in %.2fs (%d MB)",
            spec.label or spec.source,
            time.perf_counter() - started,
            loaded.memory_bytes // 2**20,
        )
        return loaded

    def close(self, key: BaseKey) -> None:
        """One unit over ``key`` is gone; the base weights go with the last one."""
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        self._bases.pop(key, None)

    def clear(self) -> None:
        """Forget every base (the worker is going down)."""
        self._bases.clear()
        self._users.clear()
