"""Models from the Hugging Face Hub: pull, list, remove, and check before loading.

No mlx import anywhere in this package, and huggingface_hub only inside functions, so
importing it is cheap. What the daemon needs:

- ``resolve_cached_model(repo_id, revision)``: the snapshot directory, without network;
- ``validate_model_dir(path)``: refuse incomplete, code-carrying or non-MLX directories;
- ``model_directory(spec)``: both for an alias's model, raising the typed load errors.
"""

from __future__ import annotations

from mlxd.hub.cache import (
    CachedRepo,
    CachedRevision,
    Removal,
    cached_repos,
    check_repo_id,
    check_revision,
    plan_removal,
    resolve_cached_model,
)
from mlxd.hub.env import HubEnv
from mlxd.hub.locate import model_directory, pull_command
from mlxd.hub.progress import NullReporter, PlainReporter, PullReporter, RichReporter, reporter_for
from mlxd.hub.pull import PullResult, pull_model
from mlxd.hub.validate import supported_model_types, validate_model_dir

__all__ = [
    "CachedRepo",
    "CachedRevision",
    "HubEnv",
    "NullReporter",
    "PlainReporter",
    "PullReporter",
    "PullResult",
    "Removal",
    "RichReporter",
    "cached_repos",
    "check_repo_id",
    "check_revision",
    "model_directory",
    "plan_removal",
    "pull_command",
    "pull_model",
    "reporter_for",
    "resolve_cached_model",
    "supported_model_types",
    "validate_model_dir",
]
