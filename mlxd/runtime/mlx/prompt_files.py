"""The prompt-cache files' format: what names them, what they hold, how they are checked.

A file is mlx-lm's own prompt-cache safetensors (``save_prompt_cache``) with metadata of
mlxd's: the format version, the identity of the model it belongs to, and its tokens. The
checks here decide whether a file read back can serve a model: its layers must be the
model's (count, kind, heads, widths, dtype), hold exactly its tokens, and be finite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache, QuantizedKVCache, load_prompt_cache

log = logging.getLogger("mlxd.runtime")

#: The version of the files' layout; other versions are foreign.
FORMAT = "mlxd-prompt-1"
NAME = re.compile(r"[0-9a-f]{40}\.safetensors")
TEMP_SUFFIX = ".tmp.safetensors"
#: A header larger than this is no prompt cache of ours.
_MAX_HEADER = 64 * 2**20
#: Layer types a file may hold (the ones a prefix can be trimmed back from).
_LAYERS = (KVCache, QuantizedKVCache)
#: Per layer: key heads, key width, value width (unquantized) and the dtype of the values.
Signature = list[tuple[int, int, int, str]]


def digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _files_stamp(directory: Path, pattern: str) -> list[tuple[str, int, int]]:
    stamps = []
    for path in sorted(directory.glob(pattern)):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamps.append((path.name, st.st_size, st.st_mtime_ns))
    return stamps


def model_identity(
    source: str, revision: str | None, path: Path, adapter: Path | None, kv: str | None
) -> str:
    """What a file must match to be read back for a model: its source, revision, weight
    files (names, sizes, times), adapter files and KV settings, hashed."""
    parts = [source, revision or "", str(path), json.dumps(_files_stamp(path, "*.safetensors"))]
    if adapter is not None:
        parts += [str(adapter), json.dumps(_files_stamp(adapter, "*.safetensors"))]
    parts.append(kv or "")
    return digest(*parts)


def layer_signature(layers: list[Any]) -> Signature | None:
    """The shape of a model's cache (from a one-token forward pass), or ``None`` when its
    layers are not all key-value caches (then nothing of it goes to disk)."""
    out: Signature = []
    for layer in layers:
        if type(layer) is not KVCache or layer.keys is None:
            return None
        out.append((layer.keys.shape[1], layer.keys.shape[3], layer.values.shape[3], str(layer.keys.dtype)))
    return out


def check_layers(layers: list[Any], signature: Signature, length: int) -> str | None:
    """Why a file's layers cannot serve this model (``None``: they can)."""
    if len(layers) != len(signature):
        return f"{len(layers)} layers, the model has {len(signature)}"
    for layer, (heads, k_dim, v_dim, dtype) in zip(layers, signature, strict=True):
        if type(layer) not in _LAYERS or layer.keys is None or layer.offset != length:
            return "a layer is not a key-value cache of the prefix's length"
        if isinstance(layer, QuantizedKVCache):
            per = 32 // layer.bits
            keys, values = layer.keys[0], layer.values[0]
            shape = (keys.shape[1], keys.shape[3] * per, values.shape[3] * per, str(layer.keys[1].dtype))
            arrays = [*layer.keys, *layer.values]
        else:
            keys, values = layer.keys, layer.values
            shape = (keys.shape[1], keys.shape[3], values.shape[3], str(keys.dtype))
            arrays = [keys, values]
        if shape != (heads, k_dim, v_dim, dtype) or any(
            a.ndim != 4 or a.shape[0] != 1 or a.shape[2] < length for a in arrays
        ):
            return "its arrays do not fit the model"
    return None


def finite(layers: list[Any]) -> bool:
    """True when every floating-point array of ``layers`` holds only finite values."""
    arrays = [a for layer in layers for _, a in tree_flatten(layer.state) if isinstance(a, mx.array)]
    checks = [mx.all(mx.isfinite(a)) for a in arrays if mx.issubdtype(a.dtype, mx.floating)]
    return bool(mx.all(mx.array(checks)).item()) if checks else True


def header_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read without its arrays."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("truncated")
        (size,) = struct.unpack("<Q", head)
        if size > _MAX_HEADER:
            raise ValueError("header too large")
        header = json.loads(f.read(size))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("no metadata")
    return metadata


def reason(exc: BaseException) -> str:
    """One short line about a bad file (never a path)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def read_cache(path: Path, identity: str, tokens: list[int], signature: Signature) -> list[Any]:
    """The evaluated layers of the file at ``path`` if it is ``identity``'s cache of exactly
    ``tokens`` with ``signature``'s shape and finite values; else ``ValueError`` (or what
    reading raised)."""
    layers: list[Any]
    layers, metadata = load_prompt_cache(str(path), return_metadata=True)
    mx.eval([layer.state for layer in layers])
    if metadata.get("format") != FORMAT or metadata.get("identity") != identity:
        raise ValueError("it belongs to another model")
    if json.loads(metadata.get("tokens", "null")) != tokens:
        raise ValueError("its tokens are not the ones its name promises")
    if problem := check_layers(layers, signature, len(tokens)):
        raise ValueError(problem)
    if not finite(layers):
        raise ValueError("its values are not finite (damaged data)")
    return layers


def scan_files(directory: Path) -> list[tuple[float, str, tuple[int, ...], Path, int]]:
    """The prompt files in ``directory`` (made 0700 first, created if missing), each as
    (last use, model identity, tokens, path, bytes), oldest use first, read from their
    headers alone. A write a crash interrupted, and a file that is not a prompt cache of
    this version, are deleted. ``OSError`` when the directory cannot be used."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    found = []
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name.endswith(TEMP_SUFFIX):  # a write that a crash interrupted
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if not NAME.fullmatch(name):
            continue
        try:
            metadata = header_metadata(path)
            if metadata.get("0.format") != FORMAT:
                raise ValueError("not a prompt cache file of this version")
            identity = metadata["0.identity"]
            tokens = json.loads(metadata["0.tokens"])
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ValueError("no token list")
            st = path.stat()
        except Exception as exc:
            log.warning("skipping the prompt cache file %s: %s", name, reason(exc))
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append((st.st_mtime, identity, tuple(tokens), path, st.st_size))
    found.sort(key=lambda item: item[0])
    return found
