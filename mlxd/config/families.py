"""Model families mlxd serves through a library other than mlx-lm, by ``config.json``'s ``model_type``.

Encoder embedding models (BERT, XLM-RoBERTa, ModernBERT: bge, e5, gte, modernbert-embed…)
are not mlx-lm models: they load through ``mlx-embeddings``, the optional extra
``mlxd[embeddings]``, and only embed. The hub's checks (no MLX import), the capability
listings and the runtime's loader all ask this one table. Pure Python.

Vision models of mlx-vlm's families go through ``mlx-vlm``, the optional extra
``mlxd[vision]``, when it is installed; without it, a family whose text half the installed
mlx-lm loads serves text only. ``vision_extra_installed`` asks whether it is there as the
hub's checks do (``find_spec``, never an import), and ``mlx_vlm_family`` whether it has a
model's family, for the hub's checks, the listings and the loader alike, so they agree.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path
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


def mlx_vlm_family(config: dict[str, Any]) -> bool:
    """True for a vision model whose family the installed mlx-vlm (the ``vision`` extra) has:
    its module, found as mlx-vlm finds it (lower case, its renames), without importing it."""
    spec = importlib.util.find_spec("mlx_vlm")
    family = config.get("model_type")
    if not config.get("vision_config") or spec is None or not spec.submodule_search_locations:
        return False
    root = Path(next(iter(spec.submodule_search_locations)))
    if not isinstance(family, str):
        return False
    family = family.lower()  # as mlx-vlm reads it; e.g. "lfm2-vl" is its lfm2_vl
    family = _mlx_vlm_remapping(root).get(family, family)
    return (root / "models" / family / "__init__.py").is_file()


@lru_cache(maxsize=4)
def _mlx_vlm_remapping(root: Path) -> dict[str, str]:
    """mlx-vlm's own ``model_type`` → module table (``MODEL_REMAPPING``), read, not imported."""
    try:
        table = literal_dict((root / "utils.py").read_text(encoding="utf-8"), "MODEL_REMAPPING")
    except (OSError, SyntaxError, ValueError, TypeError):  # unreadable: no renames known
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, str)}


def literal_dict(source: str, name: str) -> dict[Any, Any]:
    """The dict literal a module's source assigns to ``name`` (``{}`` when there is none),
    read without running the module: how mlxd learns a library's tables without importing it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def encoder_family(config: dict[str, Any]) -> str | None:
    """The encoder family of a model's ``config.json`` (``bert``, …), ``None`` for any other model."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    family = model_type.replace("-", "_")
    return family if family in ENCODER_FAMILIES else None
