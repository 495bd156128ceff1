"""Check that a model directory is one mlx-lm can load, without importing mlx.

The checks are cheap (JSON and safetensors headers, file sizes) so the daemon can run
them before every load: ``config.json`` parses, names no ``model_file`` (mlx-lm would
import Python from the directory) and a ``model_type`` the installed mlx-lm supports (or
an encoder family, served through ``mlxd[embeddings]``, or a vision family of the installed
mlx-vlm, ``mlxd[vision]``; without mlx-vlm a vision model mlx-lm has the family of serves text);
weights are safetensors, every shard the index names exists, and every shard is complete.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import struct
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from mlxd.config.families import (
    VISION_HINT,
    encoder_family,
    literal_dict,
    mlx_vlm_family,
    vision_extra_installed,
)
from mlxd.errors import HubError
from mlxd.hub.files import CODE_PATTERNS, CONFIG_FILE, INDEX_FILE, WEIGHTS_PATTERN

#: A safetensors header larger than this is corrupt (real ones are a few MB at most).
MAX_HEADER_BYTES = 100 * 2**20
_NOT_MLX_HINT = "pick an MLX conversion of the model (mlx-community has most)"
_PULL_AGAIN = "if it comes from the Hub, run `mlxd models pull` for it again to finish the download"
_LOCAL_REPAIR = "the directory holds an incomplete or damaged copy: copy the complete model into it again"


def _mlx_lm_dir() -> Path | None:
    # find_spec on a top-level name locates the package without importing it (or mlx).
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _mlx_lm_tables() -> tuple[frozenset[str], dict[str, str], dict[tuple[str, str], str]]:
    root = _mlx_lm_dir()
    if root is None:
        return frozenset(), {}, {}
    types = set()
    for module in (root / "models").glob("*.py"):
        # Helper modules (cache, base, rope_utils...) define no ModelArgs.
        if "class ModelArgs" in module.read_text(encoding="utf-8", errors="replace"):
            types.add(module.stem)
    try:
        utils = (root / "utils.py").read_text(encoding="utf-8")
    except OSError:
        utils = ""
    remap = {str(k): str(v) for k, v in literal_dict(utils, "MODEL_REMAPPING").items()}
    arch = {
        (str(k[0]), str(k[1])): str(v)
        for k, v in literal_dict(utils, "MODEL_ARCHITECTURE_REMAPPING").items()
        if isinstance(k, tuple) and len(k) == 2
    }
    return frozenset(types), remap, arch


def supported_model_types() -> frozenset[str]:
    """The ``model_type`` values the installed mlx-lm can load (its ``models/`` modules and remappings)."""
    types, remap, _ = _mlx_lm_tables()
    return types | frozenset(k for k, v in remap.items() if v in types)


def _resolved_model_type(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    _, remap, arch = _mlx_lm_tables()
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    for name in architectures if isinstance(architectures, list | tuple) else ():
        if (model_type, name) in arch:
            return arch[(model_type, name)]
    return remap.get(model_type, model_type)


def check_config(config: Any, where: str) -> None:
    """Refuse a ``config.json`` that is not an object, asks for remote code or names an unknown architecture."""
    if not isinstance(config, dict):
        raise HubError(f"{where}: config.json is not a JSON object", code="invalid_model")
    if "model_file" in config:
        raise HubError(
            f"{where}: config.json asks to import Python code (model_file); mlxd never runs it",
            code="remote_code",
            hint="use an MLX conversion without custom code",
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise HubError(
            f"{where} is not an MLX model: config.json has no model_type",
            code="not_mlx_model",
            hint=_NOT_MLX_HINT,
        )
    types, _, _ = _mlx_lm_tables()
    # Encoder embedding models load through mlx-embeddings (the runtime says when it is missing).
    family_known = _resolved_model_type(config) in types or encoder_family(config) is not None
    if not family_known and not mlx_vlm_family(config):
        if config.get("vision_config") and not vision_extra_installed():
            raise HubError(
                f"{where} is a vision model of the {model_type!r} family, served through mlx-vlm",
                code="not_mlx_model",
                hint=VISION_HINT,
            )
        raise HubError(
            f"{where} is not an MLX model: model_type {model_type!r} is not supported by the installed mlx-lm",
            code="not_mlx_model",
            hint="upgrade mlx-lm, or pick a model of a supported architecture",
        )


def read_json(path: Path, where: str) -> Any:
    """Parse a JSON file, turning any failure into a one-line ``HubError``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(f"{where}: {path.name} is missing", code="invalid_model", hint=_PULL_AGAIN) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HubError(f"{where}: {path.name} is not valid JSON ({exc})", code="invalid_model") from None


def check_safetensors(path: Path, where: str) -> None:
    """Parse a safetensors header and check the file holds exactly the bytes it declares."""
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise HubError(f"{where}: {name} is truncated", code="invalid_model")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise HubError(f"{where}: {name} has a corrupt safetensors header", code="invalid_model")
            header = json.loads(fh.read(length))
    except FileNotFoundError:
        raise HubError(f"{where}: {name} is missing", code="invalid_model", hint=_PULL_AGAIN) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HubError(
            f"{where}: {name} has an unreadable safetensors header ({exc})", code="invalid_model"
        ) from None
    if not isinstance(header, dict):
        raise HubError(f"{where}: {name} has a corrupt safetensors header", code="invalid_model")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise HubError(f"{where}: {name}: tensor {key!r} has invalid data offsets", code="invalid_model")
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size != expected:
        state = "incomplete" if size < expected else "longer than its header says"
        raise HubError(
            f"{where}: {name} is {state} ({size} of {expected} bytes)",
            code="invalid_model",
            hint="download it again (`mlxd models rm`, then `mlxd models pull`)",
        )


def _weight_names(model_dir: Path, where: str) -> list[str]:
    index_path = model_dir / INDEX_FILE
    if index_path.exists():
        index = read_json(index_path, where)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise HubError(f"{where}: {INDEX_FILE} has no weight_map", code="invalid_model")
        names = sorted({str(v) for v in weight_map.values()})
        for name in names:
            pure = PurePosixPath(name)
            # Shard names come from the repo: never let one point outside the directory.
            if pure.is_absolute() or ".." in pure.parts or "\\" in name or not name.endswith(".safetensors"):
                raise HubError(
                    f"{where}: {INDEX_FILE} names an unsafe weight file {name!r}", code="invalid_model"
                )
        return names
    return sorted(p.name for p in model_dir.glob(WEIGHTS_PATTERN))


def validate_model_dir(path: Path, *, name: str | None = None, local: bool = False) -> None:
    """Raise ``HubError`` unless ``path`` is a complete, code-free MLX model directory.

    Pure Python, no mlx: the daemon calls it before loading a cached repo or a local path.
    ``name`` (e.g. the repo id) is what error messages call the model; the directory's
    name by default, so no absolute path reaches a message. A ``local`` directory is the
    user's own: its hints never suggest the cache commands (``mlxd models rm`` refuses it).
    """
    try:
        _validate(path, name or path.name)
    except HubError as exc:
        if local and exc.code == "invalid_model":
            exc.hint = _LOCAL_REPAIR
        raise


def _validate(path: Path, where: str) -> None:
    if not path.is_dir():
        raise HubError(f"{where}: model directory not found", code="invalid_model")
    code = sorted(
        p.name for p in path.iterdir() if any(fnmatch.fnmatch(p.name.lower(), pat) for pat in CODE_PATTERNS)
    )
    if code:
        raise HubError(
            f"{where} contains code ({', '.join(code[:3])}); mlxd never runs code from a model directory",
            code="remote_code",
        )
    check_config(read_json(path / CONFIG_FILE, where), where)
    names = _weight_names(path, where)
    if not names:
        raise HubError(
            f"{where} is not an MLX model: no {WEIGHTS_PATTERN} weights",
            code="not_mlx_model",
            hint=_NOT_MLX_HINT,
        )
    for weight in names:
        check_safetensors(path / weight, where)
