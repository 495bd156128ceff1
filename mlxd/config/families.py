"""Model families mlxd serves through a library other than mlx-lm, by ``config.json``'s ``model_type``.

Encoder embedding models (BERT, XLM-RoBERTa, ModernBERT: bge, e5, gte, modernbert-embed…)
are not mlx-lm models: they load through ``mlx-embeddings``, the optional extra
``mlxd[embeddings]``, and only embed. The hub's checks (no MLX import), the capability
listings and the runtime's loader all ask this one table. Pure Python.

Vision models of mlx-vlm's families go through ``mlx-vlm``, the optional extra
``mlxd[vision]``, when it is installed; without it, a family whose text half the installed
mlx-lm loads serves text only. ``vision_extra_installed`` asks whether it is there as the
hub's checks do (``find_spec``, never an import), so the loader and the listings agree.
"""

from __future__ import annotations

import importlib.util
from typing import Any

#: The ``model_type`` values (``-`` written ``_``) of the encoder families mlx-embeddings loads
#: and mlxd has checked: each takes an attention mask and returns per-token states.
ENCODER_FAMILIES = frozenset({"bert", "xlm_roberta", "modernbert"})
#: What to run when such a model is asked for and the extra is missing.
EMBEDDINGS_HINT = "install the embeddings extra: pip install 'mlxd[embeddings]'"
#: What to run when a vision model needs mlx-vlm (for its images, or to load at all) and it is missing.
VISION_HINT = "pip install 'mlxd[vision]'"


def vision_extra_installed() -> bool:
    """True when mlx-vlm (the ``vision`` extra) is installed; asked without importing it, or mlx."""
    return importlib.util.find_spec("mlx_vlm") is not None


def encoder_family(config: dict[str, Any]) -> str | None:
    """The encoder family of a model's ``config.json`` (``bert``, …), ``None`` for any other model."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    family = model_type.replace("-", "_")
    return family if family in ENCODER_FAMILIES else None
