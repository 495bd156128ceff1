"""How a model's embeddings are pooled, read from its own sentence-transformers files.

An embedding model published for sentence-transformers says how to turn token states
into one vector: ``modules.json`` lists its modules (a ``Pooling`` module with its
``config.json``, usually ``1_Pooling/``, and maybe a ``Normalize`` module). mlxd follows
those files; a model without them is a decoder whose last token sums the input up, and
its vectors are normalized. Pure Python: read when a model loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlxd.runtime.requests import Pooling

log = logging.getLogger("mlxd.runtime")

#: sentence-transformers' pooling switches mlxd serves, by the pooling they mean.
_MODES: dict[str, Pooling] = {
    "pooling_mode_lasttoken": "last",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
}
#: The files ``mlxd models pull`` fetches for that (the pooling folder may be named otherwise
#: in ``modules.json``; ``1_Pooling`` is what every published model uses).
POOLING_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
POOLING_CONFIG = "1_Pooling/config.json"


@dataclass(frozen=True, slots=True)
class PoolingSpec:
    """A model's own pooling and normalization (what an alias does not override)."""

    pooling: Pooling = "last"
    normalize: bool = True
    #: True when the model's files said so (it is an embedding model).
    declared: bool = False


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooling_dir(modules: list[Any]) -> str | None:
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling"):
            path = str(module.get("path") or "")
            pure = PurePosixPath(path)
            # Names come from the repo: never let one point outside the model directory.
            if path and not pure.is_absolute() and ".." not in pure.parts:
                return path
    return None


def read_pooling(model_dir: Path) -> PoolingSpec:
    """The pooling a model's files declare, or the decoder default (last token, normalized).

    A pooling mode mlxd does not serve (max, weighted mean, …) is logged and served as the
    default; an alias's ``pooling`` setting overrides either way.
    """
    modules = _json(model_dir / "modules.json")
    if not isinstance(modules, list):
        return PoolingSpec()
    normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules)
    folder = _pooling_dir(modules)
    config = _json(model_dir / folder / "config.json") if folder else None
    if not isinstance(config, dict):
        return PoolingSpec("last", normalize, declared=True)
    chosen = [pooling for key, pooling in _MODES.items() if config.get(key) is True]
    if not chosen:
        modes = sorted(k.removeprefix("pooling_mode_") for k, v in config.items() if v is True)
        log.warning(
            "%s: pooling %s is not served; using last-token pooling (set the alias's pooling)",
            model_dir.name,
            ", ".join(modes) or "none",
        )
        return PoolingSpec("last", normalize, declared=True)
    return PoolingSpec(chosen[0], normalize, declared=True)
