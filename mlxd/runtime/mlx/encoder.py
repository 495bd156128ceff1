"""Encoder embedding models through mlx-embeddings (the optional extra ``mlxd[embeddings]``).

BERT, XLM-RoBERTa and ModernBERT checkpoints (bge, e5, gte, modernbert-embed…) are not
mlx-lm models. mlx-embeddings, a maintained MLX library, loads them; mlxd reads their
per-token states and pools them itself, as the model's sentence-transformers files say
(``pooling.py``), in the same bounded batches as a decoder's embeddings (``embed.py``).
These models only embed: a generation request for one is refused at admission.

The attention of an encoder sees every position, padding included, so a batch of inputs
of different lengths is right-padded with the model's padding token and masked; each row
then gets the states it gets alone, to float tolerance. An encoder has no KV cache, so an
input longer than a batch's budget runs whole, alone (its context is a few hundred to a
few thousand tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxd.config.families import EMBEDDINGS_HINT
from mlxd.errors import GenerationError, ModelLoadError, ModelUnsupportedError


class EncoderForward:
    """Token states of an mlx-embeddings encoder, for ``embed.Embedder``."""

    chunked = False

    def __init__(self, model: Any, family: str, pad_id: int) -> None:
        self._model = model
        self._pad = pad_id
        # ModernBERT's task model pools inside its head: its encoder gives the token states.
        self._encoder = model.model if family == "modernbert" else None

    def states(self, rows: list[list[int]]) -> Any:
        longest = max(len(row) for row in rows)
        ids = mx.array([row + [self._pad] * (longest - len(row)) for row in rows])
        mask = mx.array([[1.0] * len(row) + [0.0] * (longest - len(row)) for row in rows])
        if self._encoder is not None:
            states = self._encoder(ids, attention_mask=mask)["last_hidden_state"]
        else:
            states = self._model(ids, attention_mask=mask).last_hidden_state
        return states.astype(mx.float32)

    def open(self) -> list[Any]:
        raise GenerationError("an encoder runs each input whole")

    def chunk(self, tokens: list[int], cache: list[Any]) -> Any:
        raise GenerationError("an encoder runs each input whole")


def context_length(config: dict[str, Any], family: str) -> int | None:
    """The longest input the encoder's position table holds (XLM-RoBERTa's positions start
    after its padding index, so it holds that many fewer)."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions <= 0:
        return None
    pad = config.get("pad_token_id", 1)
    if family == "xlm_roberta" and isinstance(pad, int):
        positions -= pad + 1
    return positions


def load_encoder(path: Path, config: dict[str, Any], family: str) -> tuple[Any, Any, EncoderForward]:
    """The model, its tokenizer (mlx-lm's wrapper, as admission reads every model's) and
    its forward pass.

    Raises:
        ModelUnsupportedError: mlx-embeddings is not installed (the hint says how to get it).
        ModelLoadError: the files do not load.
    """
    try:
        from mlx_embeddings.utils import load_model
    except ImportError as exc:
        raise ModelUnsupportedError(
            f"{path.name} is an encoder embedding model ({family}): serving it needs mlx-embeddings",
            hint=EMBEDDINGS_HINT,
        ) from exc
    from mlx_lm.utils import load_tokenizer

    try:
        model = load_model(path, lazy=False, path_to_repo=path.name)
        tokenizer = load_tokenizer(path, {"trust_remote_code": False})
    except Exception as exc:  # mlx-embeddings and transformers raise many kinds
        raise ModelLoadError(f"could not load {path.name}: {type(exc).__name__}: {exc}") from exc
    pad = config.get("pad_token_id")
    if not isinstance(pad, int):
        pad = tokenizer.pad_token_id if isinstance(tokenizer.pad_token_id, int) else 0
    return model, tokenizer, EncoderForward(model, family, pad)
