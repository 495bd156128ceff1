"""A unit's engine options, checked and prepared when it loads (worker thread).

What ``[models.<alias>]`` asks of the engine beyond the weights: a quantized KV cache
(its group size must divide the model's head size), a draft model (it must share the
model's tokenizer), and a view of the disk prompt cache (keyed by the model's identity,
checked against the shape of its cache). A model that cannot honour its options does not
load: the error names the alias's model, and the draft's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlxd.errors import ModelUnsupportedError
from mlxd.runtime.mlx.loading import LoadedModel
from mlxd.runtime.mlx.prompt_disk import DiskPromptCache
from mlxd.runtime.mlx.prompt_files import Signature, layer_signature, model_identity
from mlxd.runtime.mlx.prompt_tier import DiskTier
from mlxd.runtime.specs import KvSettings, ModelSpec


@dataclass(frozen=True, slots=True)
class UnitOptions:
    """What a runner needs besides its model."""

    kv: KvSettings | None = None
    #: The model that drafts tokens for speculative decoding.
    draft: LoadedModel | None = None
    disk: DiskTier | None = None


def cache_signature(model: Any) -> Signature | None:
    """The shape of ``model``'s KV cache, from a one-token forward pass."""
    probe = make_prompt_cache(model)
    model(mx.array([[0]]), cache=probe)
    mx.eval([layer.state for layer in probe])
    return layer_signature(probe)


def check_kv(kv: KvSettings, signature: Signature | None, name: str) -> None:
    """Refuse KV settings the model's cache cannot be quantized with."""
    if signature is None:
        return  # only plain key-value layers are quantized; other layers stay as they are
    widths = sorted({w for _, k, v, _ in signature for w in (k, v)})
    if any(w % kv.group_size for w in widths):
        raise ModelUnsupportedError(
            f"{name}: kv_group_size {kv.group_size} does not divide the model's head size"
            f" ({', '.join(map(str, widths))})",
            hint="set kv_group_size to 32, 64 or 128 so that it divides the head size, or remove kv_bits",
        )


def check_draft(model: LoadedModel, draft: LoadedModel, name: str, draft_name: str) -> None:
    """A draft must speak the model's tokens: the same vocabulary, token for token."""
    if draft.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ModelUnsupportedError(
            f"{name}: the draft model {draft_name} has another tokenizer (their vocabularies differ)",
            hint="use a draft model of the same family (e.g. a smaller size of the same model)",
        )


def prepare(
    spec: ModelSpec, path: Path, loaded: LoadedModel, draft: LoadedModel | None, disk: DiskPromptCache
) -> UnitOptions:
    """Check a unit's options against its loaded model and prepare them for its runner."""
    name = spec.label or spec.source
    if not loaded.generates:  # an encoder: no KV cache, no drafts, nothing to prepare
        if spec.kv is not None or spec.draft is not None:
            raise ModelUnsupportedError(
                f"{name} is an encoder embedding model: kv_bits and draft_model apply to models that generate",
                hint="remove them from the alias",
            )
        return UnitOptions()
    signature = cache_signature(loaded.model)
    if spec.kv is not None:
        check_kv(spec.kv, signature, name)
    if draft is not None and spec.draft is not None:
        check_draft(loaded, draft, name, spec.draft.label or spec.draft.source)
    identity = model_identity(
        spec.source, spec.revision, path, spec.adapter_path, spec.kv.tag if spec.kv else None
    )
    return UnitOptions(spec.kv, draft, disk.tier(identity, signature))
