"""What an alias's model can do besides completing text, read from its files (no mlx import).

``completion``: it generates text (every model but an encoder embedding model, which only
embeds). ``vision``: its ``config.json`` has a ``vision_config`` and the installed mlx-lm has an
image processor for its family (``mlx_lm/processors/<model_type>.py``), or the installed
mlx-vlm (the ``vision`` extra) has the family. ``embedding``: it ships sentence-transformers
files (``modules.json``), is an encoder, or its alias sets ``pooling``.
Every model can embed (a decoder pools its last token); ``embedding`` marks the ones made
for it. ``models list``, ``/v1/models`` and Ollama's ``/api/show`` report these (neither across
several ranks, which serve no images or embeddings yet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlxd.config.families import encoder_family, mlx_vlm_family
from mlxd.hub.validate import _mlx_lm_dir, _resolved_model_type


def _config(directory: Path) -> dict[str, Any]:
    try:
        value = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def takes_images(config: dict[str, Any]) -> bool:
    """True when mlx-lm (a vision config and a processor) or mlx-vlm can feed this model images."""
    if not config.get("vision_config"):
        return False
    root = _mlx_lm_dir()
    family = config.get("processor_type") or _resolved_model_type(config)
    if root is not None and isinstance(family, str) and (root / "processors" / f"{family}.py").is_file():
        return True
    return mlx_vlm_family(config)


def generates(directory: Path) -> bool:
    """False for an encoder embedding model (it only embeds), True for every other model."""
    return encoder_family(_config(directory)) is None


def capabilities(directory: Path, *, pooling: str | None = None, split: bool = False) -> tuple[str, ...]:
    """``vision`` and ``embedding`` as they apply to the model in ``directory``; none when the
    model is ``split`` across several ranks, which serve neither images nor embeddings yet."""
    if split:
        return ()
    config = _config(directory)
    out = []
    if takes_images(config):
        out.append("vision")
    if pooling is not None or (directory / "modules.json").is_file() or encoder_family(config):
        out.append("embedding")
    return tuple(out)
