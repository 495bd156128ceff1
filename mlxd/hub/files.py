"""Which files of a Hub repo make an MLX model, and which ones make mlxd refuse it.

mlx-lm loads ``model*.safetensors`` plus ``config.json`` and the tokenizer files; a vision
model's processor configs and an embedding model's sentence-transformers files (how it
pools) come along; nothing else is ever downloaded. A repo that ships Python code is refused outright: mlx-lm can
import a ``model_file`` from the model directory, and tokenizers can import remote code.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from mlxd.errors import HubError

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
#: Weight files mlx-lm loads (``mlx_lm.utils.load_model`` globs exactly this).
WEIGHTS_PATTERN = "model*.safetensors"
#: Top-level files an MLX model needs besides its weights.
SUPPORT_FILES = frozenset(
    {
        CONFIG_FILE,
        INDEX_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "chat_template.json",
        "generation_config.json",
        # encoder tokenizers: BERT's WordPiece vocabulary, XLM-RoBERTa's sentencepiece model
        "vocab.txt",
        "sentencepiece.bpe.model",
        # vision models: how images become model input
        "preprocessor_config.json",
        "processor_config.json",
        "video_preprocessor_config.json",
        # embedding models (sentence-transformers): pooling and normalization
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
    }
)
#: Files below the top level that are taken too: the pooling module's settings.
NESTED_FILES = frozenset({"1_Pooling/config.json"})
#: Formats that can execute code or that mlxd does not load: never taken.
CODE_PATTERNS = ("*.py", "*.pyc", "*.so", "*.dylib")
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.npy", "*.npz", "*.ckpt")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit, as the Hub lists it."""

    path: str
    size: int
    blob_id: str | None = None
    sha256: str | None = None


def is_wanted(path: str) -> bool:
    """True for a top-level weight, config, tokenizer, chat-template, processor or pooling file."""
    if "/" in path:
        return path in NESTED_FILES
    return path in SUPPORT_FILES or fnmatch.fnmatch(path, WEIGHTS_PATTERN) or path.endswith(".jinja")


def _matches(path: str, patterns: Iterable[str]) -> bool:
    name = PurePosixPath(path).name.lower()
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def select_files(repo_id: str, files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """The files to download, ``config.json`` first then smallest first; refuse repos mlxd must not run.

    Raises:
        HubError: the repo ships code, has no ``config.json`` or no safetensors weights.
    """
    listed = list(files)
    code = sorted(f.path for f in listed if _matches(f.path, CODE_PATTERNS))
    if code:
        raise HubError(
            f"{repo_id} ships code ({', '.join(code[:3])}); mlxd never runs code from a model repo",
            code="remote_code",
            hint="use an MLX conversion without custom code (e.g. from mlx-community)",
        )
    wanted = [f for f in listed if is_wanted(f.path)]
    if not any(f.path == CONFIG_FILE for f in wanted):
        raise HubError(
            f"{repo_id} is not an MLX model: it has no config.json",
            code="not_mlx_model",
            hint="pick an MLX conversion of the model (mlx-community has most)",
        )
    if not any(fnmatch.fnmatch(f.path, WEIGHTS_PATTERN) for f in wanted):
        pickles = [f.path for f in listed if _matches(f.path, PICKLE_PATTERNS)]
        found = f" (only {', '.join(sorted(pickles)[:2])})" if pickles else ""
        raise HubError(
            f"{repo_id} is not an MLX model: no {WEIGHTS_PATTERN} weights{found}",
            code="not_mlx_model",
            hint="pick an MLX conversion of the model (mlx-community has most)",
        )
    return sorted(wanted, key=lambda f: (f.path != CONFIG_FILE, f.size, f.path))
