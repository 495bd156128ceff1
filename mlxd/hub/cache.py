"""The HF cache as mlxd sees it: find a downloaded model, list models, remove them.

Everything goes through huggingface_hub's cache API (``try_to_load_from_cache``,
``scan_cache_dir``, ``delete_revisions``); mlxd adds a containment check so a deletion
can never reach outside the cache directory, whatever symlinks it holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.config.models import REPO_ID, REVISION
from mlxd.errors import HubError
from mlxd.hub.env import HubEnv
from mlxd.hub.files import CONFIG_FILE, WEIGHTS_PATTERN

COMMIT = re.compile(r"[0-9a-f]{40}")
DEFAULT_REVISION = "main"


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a full ``org/name`` repo id, else raise ``HubError``."""
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise HubError(
            f"{repo_id!r} is neither a configured alias nor a repo id like 'org/name'",
            code="invalid_name",
            hint="see the aliases with `mlxd models list`",
        )
    return repo_id


def check_revision(revision: str | None) -> str:
    """Return the revision to use (``main`` by default) if it is a safe branch, tag or commit."""
    if revision is None:
        return DEFAULT_REVISION
    if COMMIT.fullmatch(revision) or (REVISION.fullmatch(revision) and ".." not in revision):
        return revision
    raise HubError(f"{revision!r} is not a branch, tag or commit", code="invalid_revision")


def storage_dir(cache_dir: Path, repo_id: str) -> Path:
    """The cache folder of a model repo (``models--org--name``)."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def resolve_cached_model(
    repo_id: str,
    revision: str | None,
    *,
    alias: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The snapshot directory of a downloaded repo at ``revision`` (``main`` when None), without network.

    Raises:
        HubError: the repo (at that revision) is not in the cache; the hint says how to pull it.
    """
    from huggingface_hub import try_to_load_from_cache

    check_repo_id(repo_id)
    rev = check_revision(revision)
    cache = cache_dir or HubEnv.from_environ().cache_dir
    found = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=cache, revision=rev)
    if not isinstance(found, str):
        at = "" if revision is None else f" at {revision}"
        raise HubError(
            f"{repo_id}{at} is not downloaded",
            code="model_not_downloaded",
            hint=f"run `mlxd models pull {alias or repo_id}`",
        )
    return Path(found).parent


@dataclass(frozen=True)
class CachedRevision:
    """One snapshot of a repo in the cache."""

    commit: str
    refs: tuple[str, ...]
    size_bytes: int
    path: Path
    looks_mlx: bool


@dataclass(frozen=True)
class CachedRepo:
    """A model repo in the cache with its snapshots."""

    repo_id: str
    size_bytes: int
    revisions: tuple[CachedRevision, ...] = field(default=())

    def find(self, revision: str | None) -> CachedRevision | None:
        """The snapshot a branch, tag or (abbreviated) commit names; ``main`` when None."""
        rev = revision or DEFAULT_REVISION
        for item in self.revisions:
            if rev in item.refs or item.commit == rev:
                return item
        if len(rev) >= 7 and re.fullmatch(r"[0-9a-f]+", rev):
            matches = [item for item in self.revisions if item.commit.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        return None

    @property
    def looks_mlx(self) -> bool:
        """True when some snapshot holds a config.json and safetensors weights."""
        return any(r.looks_mlx for r in self.revisions)


def _scan(cache_dir: Path) -> Any:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(cache_dir)
    except CacheNotFound:
        return None


def cached_repos(cache_dir: Path | None = None) -> list[CachedRepo]:
    """Every model repo in the cache, sorted by repo id (an absent cache is empty)."""
    import fnmatch

    scan = _scan(cache_dir or HubEnv.from_environ().cache_dir)
    if scan is None:
        return []
    repos = []
    for repo in scan.repos:
        if repo.repo_type != "model":
            continue
        revisions = []
        for rev in repo.revisions:
            names = {f.file_name for f in rev.files}
            looks_mlx = CONFIG_FILE in names and any(fnmatch.fnmatch(n, WEIGHTS_PATTERN) for n in names)
            revisions.append(
                CachedRevision(
                    commit=rev.commit_hash,
                    refs=tuple(sorted(rev.refs)),
                    size_bytes=rev.size_on_disk,
                    path=rev.snapshot_path,
                    looks_mlx=looks_mlx,
                )
            )
        revisions.sort(key=lambda r: (not r.refs, r.refs, r.commit))
        repos.append(
            CachedRepo(repo_id=repo.repo_id, size_bytes=repo.size_on_disk, revisions=tuple(revisions))
        )
    return sorted(repos, key=lambda r: r.repo_id)


def _inside(root: Path, paths: Iterable[Path]) -> None:
    base = root.resolve()
    for path in paths:
        # The entry itself (not its target) must be inside: resolve the parent, keep the name.
        resolved = path.parent.resolve() / path.name
        if resolved != base and base not in resolved.parents:
            raise HubError("refusing to delete a path outside the HF cache", code="unsafe_path")


@dataclass(frozen=True)
class Removal:
    """A planned deletion: what goes and how much space it frees."""

    repo_id: str
    commits: tuple[str, ...]
    whole_repo: bool
    freed_bytes: int
    strategy: Any

    def execute(self) -> None:
        """Delete, through huggingface_hub (refs and symlinks first, then blobs)."""
        self.strategy.execute()


def plan_removal(repo_id: str, revision: str | None = None, *, cache_dir: Path | None = None) -> Removal:
    """Plan removing a repo (every revision, or just ``revision``) from the cache; nothing is deleted yet."""
    check_repo_id(repo_id)
    cache = cache_dir or HubEnv.from_environ().cache_dir
    scan = _scan(cache)
    repo = (
        None
        if scan is None
        else next((r for r in scan.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    )
    if repo is None:
        raise HubError(
            f"{repo_id} is not in the cache", code="model_not_downloaded", hint="see `mlxd models list`"
        )
    if revision is None:
        commits = tuple(sorted(r.commit_hash for r in repo.revisions))
    else:
        listing = next(r for r in cached_repos(cache) if r.repo_id == repo_id)
        found = listing.find(revision)
        if found is None:
            raise HubError(
                f"{repo_id} has no cached revision {revision!r}",
                code="revision_not_found",
                hint="see `mlxd models list`",
            )
        commits = (found.commit,)
    strategy = scan.delete_revisions(*commits)
    _inside(cache, [*strategy.blobs, *strategy.refs, *strategy.repos, *strategy.snapshots, *strategy.files])
    whole = set(commits) == {r.commit_hash for r in repo.revisions}
    return Removal(repo_id, commits, whole, int(strategy.expected_freed_size), strategy)
