"""What Ollama's model listings say about an alias, read from its model's own files.

``/api/tags``, ``/api/show`` and ``/api/ps`` describe aliases the way Ollama describes
its models: family (``model_type``), parameter size (counted from the safetensors
headers, unpacking quantized weights), quantization level, context length, chat template
and capabilities. Only headers and small JSON files are read, never the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.config.schema import MlxdConfig
from mlxd.hub import model_directory
from mlxd.hub.capabilities import capabilities as model_capabilities
from mlxd.hub.capabilities import generates
from mlxd.runtime.from_config import spec_for

#: Headers larger than this are not read (a real one is a few hundred KB at most).
_MAX_HEADER = 64 * 2**20


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """An alias's model as Ollama's listings describe it."""

    family: str = ""
    parameters: int = 0
    quantization: str = ""
    context_length: int = 0
    #: The width of the model's hidden states: its vectors' length, for an embedding model.
    embedding_length: int = 0
    layers: int = 0
    template: str = ""
    capabilities: tuple[str, ...] = ("completion",)
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def parameter_size(self) -> str:
        """``"494.0M"``, ``"7.6B"``: how Ollama writes a parameter count."""
        if not self.parameters:
            return ""
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if self.parameters >= scale:
                return f"{self.parameters / scale:.1f}{unit}"
        return str(self.parameters)


def digest(config: MlxdConfig, alias: str) -> str:
    """A stable digest for an alias's model (Ollama clients show one; there is no blob here)."""
    model = config.models[alias]
    key = f"{model.model}@{model.revision or ''}+{model.adapter or ''}"
    return hashlib.sha256(key.encode()).hexdigest()


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _tensors(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > _MAX_HEADER:
                return {}
            header = json.loads(file.read(length))
    except (OSError, ValueError, struct.error):
        return {}
    return header if isinstance(header, dict) else {}


def _parameters(directory: Path, bits: int | None) -> int:
    """Parameters of the weights; quantized ones are packed ``32 / bits`` to a uint32."""
    total = 0
    for path in directory.glob("*.safetensors"):
        header = _tensors(path)
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            if (
                bits
                and name.endswith((".scales", ".biases"))
                and name[: -len(".scales")] + ".weight" in header
            ):
                continue  # the quantization's own bookkeeping
            count = math.prod(tensor.get("shape") or [0])
            total += count * (32 // bits) if bits and tensor.get("dtype") == "U32" else count
    return total


def _quantization(config: dict[str, Any]) -> str:
    quantization = config.get("quantization") or config.get("quantization_config")
    if isinstance(quantization, dict) and isinstance(quantization.get("bits"), int):
        return f"Q{quantization['bits']}"
    dtype = str(config.get("torch_dtype") or "")
    return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(dtype, dtype.upper())


def model_facts(config: MlxdConfig, alias: str) -> ModelFacts:
    """Read an alias's model files (blocking: call it off the event loop).

    Raises:
        ModelNotDownloadedError, ModelDirNotFoundError, …: as a load would.
    """
    model = config.models[alias]
    directory = model_directory(spec_for(model), config)
    settings = _json(directory / "config.json")
    tokenizer = _json(directory / "tokenizer_config.json")
    quantization = settings.get("quantization")
    bits = quantization.get("bits") if isinstance(quantization, dict) else None
    template = tokenizer.get("chat_template") or ""
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template", "") for t in template if t.get("name") == "default"), "")
    vocabulary = json.dumps(tokenizer.get("added_tokens_decoder") or {})
    capabilities = ["completion"] if generates(directory) else []
    if "tools" in template:
        capabilities.append("tools")
    if "<think>" in vocabulary or "<think>" in template:
        capabilities.append("thinking")
    capabilities.extend(
        model_capabilities(directory, pooling=model.pooling, split=config.distributed is not None)
    )
    context = model.context_length or settings.get("max_position_embeddings") or 0
    text = settings.get("text_config")
    text = text if isinstance(text, dict) else settings  # a vision model's language half
    return ModelFacts(
        family=str(settings.get("model_type") or ""),
        parameters=_parameters(directory, bits if isinstance(bits, int) and bits > 0 else None),
        quantization=_quantization(settings),
        context_length=int(context),
        embedding_length=_count(text.get("hidden_size")),
        layers=_count(text.get("num_hidden_layers")),
        template=str(template),
        capabilities=tuple(capabilities),
        size=sum(p.stat().st_size for p in directory.glob("*.safetensors")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def model_info(facts: ModelFacts) -> dict[str, Any]:
    """Ollama's ``model_info``: the keys apps read (a vector's length from
    ``<family>.embedding_length``), those this model's files say."""
    family = facts.family or "model"
    info: dict[str, Any] = {
        "general.architecture": facts.family,
        "general.parameter_count": facts.parameters,
        f"{family}.context_length": facts.context_length,
    }
    if facts.embedding_length:
        info[f"{family}.embedding_length"] = facts.embedding_length
    if facts.layers:
        info[f"{family}.block_count"] = facts.layers
    return info


def details(facts: ModelFacts) -> dict[str, Any]:
    """Ollama's ``details`` object."""
    return {
        "parent_model": "",
        "format": "mlx",
        "family": facts.family,
        "families": [facts.family] if facts.family else None,
        "parameter_size": facts.parameter_size,
        "quantization_level": facts.quantization,
    }
