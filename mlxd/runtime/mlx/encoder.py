"""Encoder embedding models through mlx-embeddings (the optional extra ``mlxd[embeddings]``).

BERT, XLM-RoBERTa and ModernBERT checkpoints (bge, e5, gte, modernbert-embed…) are not
mlx-lm models. mlx-embeddings, a maintained MLX library, loads them; mlxd reads their
per-token states and pools them itself, as the model's sentence-transformers files say
(``pooling.py``), in the same bounded batches as a decoder's embeddings (``embed.py``).
These models only embed: a generation request for one is refused at admission.

The attention of an encoder sees every position, padding included, so a batch of inputs
of different lengths is right-padded with the model's padding token and masked; each row
then gets the states it gets alone, to float tolerance. An encoder has no KV cache, so an
input cannot be cut into chunks as a decoder's is; a batch larger than the worker's budget
(while streams decode, one decode step) runs a piece of a layer at a time instead: its whole
forward pass is built lazily, with a tap on the output of each piece of each layer (a
linear map, a norm, an activation), and the worker evaluates as many more of them at each
pass as its budget holds (``LayerTaps``), so no stream waits for a whole input, or a whole
layer, of an encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxd.config.families import EMBEDDINGS_HINT
from mlxd.errors import GenerationError, ModelLoadError, ModelUnsupportedError


class LayerTaps:
    """Records the outputs of the pieces of a model's layers while ``record`` runs its forward
    pass: each module inside a layer that holds no other module (a linear map, a norm, an
    activation), in the order they run; an output already recorded (a dropout, which at
    inference hands back its input) or handed in as an argument is left out.

    The layers are the model's longest list of modules (``encoder.layer`` of BERT and
    XLM-RoBERTa, ``model.layers`` of ModernBERT); each piece gets a subclass of its own class
    whose call also hands its output to the recording in progress, so the model's parameters
    and its forward pass stay the library's own. A piece's output depends on the pieces
    before it, so evaluating them in turn runs the forward pass a piece at a time (attention
    itself runs with the piece after it).
    """

    def __init__(self, model: Any) -> None:
        self._outputs: list[Any] | None = None
        tapped: dict[type, type] = {}
        for layer in _layer_list(model):
            for _, piece in layer.named_modules():
                if len(piece.named_modules()) > 1:  # it holds other modules
                    continue
                cls = type(piece)
                if getattr(cls, "_taps", None) is not None:  # tapped already
                    continue
                if cls not in tapped:
                    tapped[cls] = self._tapped(cls)
                piece.__class__ = tapped[cls]

    def _tapped(self, cls: type) -> type:
        taps = self

        class Tapped(cls):  # type: ignore[misc]
            _taps = taps

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                out = super().__call__(*args, **kwargs)
                outputs = taps._outputs
                if (
                    outputs is not None
                    and isinstance(out, mx.array)
                    and not any(out is seen for seen in (*args, *outputs[-2:]))
                ):
                    outputs.append(out)
                return out

        Tapped.__name__, Tapped.__qualname__ = cls.__name__, cls.__qualname__
        return Tapped

    def record(self, forward: Callable[[], Any]) -> tuple[list[Any], Any]:
        """``forward()``'s result (lazy, nothing evaluated) and the outputs of the pieces it
        goes through, in order."""
        self._outputs = []
        try:
            result = forward()
            return self._outputs, result
        finally:
            self._outputs = None


def _layer_list(model: Any) -> list[Any]:
    """The model's longest list of sub-modules (its layers; empty where it has none)."""
    groups: dict[str, dict[int, Any]] = {}
    for name, module in model.named_modules():
        parent, _, index = name.rpartition(".")
        if index.isdigit():
            groups.setdefault(parent, {})[int(index)] = module
    if not groups:
        return []
    longest = max(groups.values(), key=len)
    return [longest[i] for i in sorted(longest)]


class EncoderForward:
    """Token states of an mlx-embeddings encoder, for ``embed.Embedder``."""

    chunked = False

    def __init__(self, model: Any, family: str, pad_id: int) -> None:
        self._model = model
        self._pad = pad_id
        # ModernBERT's task model pools inside its head: its encoder gives the token states.
        self._encoder = model.model if family == "modernbert" else None
        self._taps = LayerTaps(model)

    def layered(self, rows: list[list[int]]) -> tuple[list[Any], Any]:
        """``states(rows)``, built but not evaluated, and the outputs of the layers' pieces it
        goes through."""
        return self._taps.record(lambda: self.states(rows))

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
