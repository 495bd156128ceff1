"""``pull_model``: download an MLX model into the HF cache, resumably, and validate it.

Order of work, so that a bad repo costs as little as possible:

1. resolve the revision to a commit and list the repo's files there;
2. refuse repos with code or without safetensors weights (nothing downloaded yet);
3. fetch ``config.json`` and refuse remote code or an architecture mlx-lm lacks;
4. check free disk space against what is still missing, then fetch the rest;
5. validate the snapshot (every shard complete) and only then point ``refs/<revision>``
   at it.

A snapshot that fails validation and was created by this pull is deleted again, so the
cache never offers it (the daemon also runs ``validate_model_dir`` before every load).
Interrupted pulls keep complete files and partial blobs; the next pull resumes them.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.errors import HubError
from mlxd.hub.cache import (
    COMMIT,
    check_repo_id,
    check_revision,
    plan_removal,
    resolve_cached_model,
    storage_dir,
)
from mlxd.hub.download import Target, describe, fetch_file, partial_bytes
from mlxd.hub.env import HubEnv
from mlxd.hub.errors import cache_unwritable, disk_full, is_network_error, revision_not_found, translate
from mlxd.hub.files import CONFIG_FILE, RemoteFile, select_files
from mlxd.hub.progress import NullReporter, PullReporter, human_size
from mlxd.hub.validate import check_config, read_json, validate_model_dir

#: Errors after which the snapshot is worthless: remove it rather than offer it.
_REFUSALS = frozenset({"remote_code", "not_mlx_model", "invalid_model"})


@dataclass(frozen=True)
class PullResult:
    """What a pull found and did."""

    repo_id: str
    revision: str
    commit: str
    path: Path
    files: tuple[str, ...]
    complete: int = 0
    downloaded: int = 0
    resumed: int = 0
    restarted: int = 0
    reused_bytes: int = 0
    offline: bool = False

    def summary(self) -> str:
        """One line: ``3 files already complete, 1 resumed``."""
        parts = []
        if self.complete:
            parts.append(f"{self.complete} file{'s' * (self.complete != 1)} already complete")
        if self.downloaded:
            parts.append(f"{self.downloaded} downloaded")
        if self.resumed:
            parts.append(f"{self.resumed} resumed ({human_size(self.reused_bytes)} reused)")
        if self.restarted:
            parts.append(f"{self.restarted} restarted (the server refused to resume)")
        return ", ".join(parts) or "nothing to download"


def _call(fn: Any, repo_id: str, revision: str, endpoint: str) -> Any:
    try:
        return fn()
    except HubError:
        raise
    except Exception as exc:
        error = translate(exc, repo_id, revision, endpoint)
        if error is None:
            raise
        raise error from exc


def _resolve(api: Any, repo_id: str, revision: str, endpoint: str) -> tuple[str, list[RemoteFile]]:
    try:
        info = _call(lambda: api.model_info(repo_id, revision=revision), repo_id, revision, endpoint)
    except HubError as error:
        if error.code not in {"repo_not_found", "hub_http_error"}:
            raise
        # Some Hub servers answer "repo not found" (or 500) for a missing revision: ask
        # for the repo's refs to tell the two apart.
        if not _repo_exists(api, repo_id):
            raise
        raise revision_not_found(repo_id, revision) from None
    commit = str(getattr(info, "sha", "") or "")
    if not COMMIT.fullmatch(commit):
        raise HubError(
            f"the Hub did not resolve {repo_id} at {revision} to a commit", code="hub_protocol_error"
        )
    tree = _call(
        lambda: [
            describe(e)
            for e in api.list_repo_tree(repo_id, revision=commit, recursive=True)
            if hasattr(e, "blob_id")
        ],
        repo_id,
        revision,
        endpoint,
    )
    return commit, tree


def _repo_exists(api: Any, repo_id: str) -> bool:
    for _ in range(2):  # a server that just failed may have dropped the pooled connection
        try:
            api.list_repo_refs(repo_id)
        except Exception as exc:
            if is_network_error(exc):
                continue
            return False
        return True
    return False


def check_disk_space(needed: int, cache_dir: Path) -> None:
    """Refuse to start when the cache volume has less free space than the download needs."""
    probe = cache_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise HubError(
            f"not enough disk space: the download needs {human_size(needed)}, {human_size(free)} free",
            code="disk_full",
            hint="free some space, or point HF_HUB_CACHE at a bigger volume",
        )


def _write_ref(target: Target, revision: str) -> None:
    if revision == target.commit:
        return
    ref = target.storage / "refs" / revision
    refs_root = (target.storage / "refs").resolve()
    ref.parent.mkdir(parents=True, exist_ok=True)
    if refs_root not in ref.parent.resolve().parents and ref.parent.resolve() != refs_root:
        raise HubError(f"unsafe revision name {revision!r}", code="invalid_revision")
    tmp = ref.with_name(ref.name + ".tmp")
    tmp.write_text(target.commit)
    tmp.replace(ref)


def _pull_offline(repo_id: str, revision: str, cache_dir: Path) -> PullResult:
    try:
        path = resolve_cached_model(repo_id, revision, cache_dir=cache_dir)
        validate_model_dir(path, name=repo_id)
    except HubError:
        raise HubError(
            f"HF_HUB_OFFLINE is set and {repo_id} is not (completely) in the cache",
            code="offline",
            hint="unset HF_HUB_OFFLINE to download it",
        ) from None
    files = tuple(sorted(p.name for p in path.iterdir()))
    return PullResult(repo_id, revision, path.name, path, files, complete=len(files), offline=True)


def pull_model(
    repo_id: str,
    revision: str | None = None,
    *,
    reporter: PullReporter | None = None,
    env: HubEnv | None = None,
) -> PullResult:
    """Download the MLX files of ``repo_id`` at ``revision`` (``main``) into the HF cache and validate them.

    Raises:
        HubError: one line with a hint; the partial state left behind is resumable.
    """
    check_repo_id(repo_id)
    rev = check_revision(revision)
    env = env or HubEnv.from_environ()
    report = reporter or NullReporter()
    if env.offline:
        return _pull_offline(repo_id, rev, env.cache_dir)

    from filelock import FileLock, Timeout
    from huggingface_hub import HfApi

    api = HfApi(endpoint=env.endpoint)
    commit, tree = _resolve(api, repo_id, rev, env.endpoint)
    wanted = select_files(repo_id, tree)
    storage = storage_dir(env.cache_dir, repo_id)
    target = Target(repo_id, commit, env.endpoint, env.cache_dir, storage)
    snapshot = storage / "snapshots" / commit
    created = not snapshot.exists()
    lock_path = env.cache_dir / ".locks" / storage.name / "mlxd-pull.lock"
    _make_dir(lock_path.parent)
    try:
        with FileLock(lock_path, timeout=1):
            _make_dir(snapshot)
            try:
                counts = _fetch_all(target, wanted, report, env)
                validate_model_dir(snapshot, name=repo_id)
            except HubError as error:
                if created and error.code in _REFUSALS:
                    plan_removal(repo_id, commit, cache_dir=env.cache_dir).execute()
                raise
            finally:
                report.close()
            _write_ref(target, rev)
    except Timeout:
        raise HubError(
            f"another pull of {repo_id} is running", code="busy", hint="wait for it to finish"
        ) from None
    return PullResult(
        repo_id,
        rev,
        commit,
        snapshot,
        tuple(f.path for f in wanted),
        complete=counts["complete"],
        downloaded=counts["downloaded"],
        resumed=counts["resumed"],
        restarted=counts["restarted"],
        reused_bytes=counts["reused_bytes"],
    )


def _make_dir(path: Path) -> None:
    """A directory of the cache, or the one-line error of a cache that cannot take it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_full() if exc.errno in {errno.ENOSPC, errno.EDQUOT} else cache_unwritable(exc)) from None


def _fetch_all(target: Target, wanted: list[RemoteFile], report: PullReporter, env: HubEnv) -> dict[str, int]:
    counts = {"complete": 0, "downloaded": 0, "resumed": 0, "restarted": 0, "reused_bytes": 0}
    missing = [f for f in wanted if not target.pointer(f.path).exists()]
    present = {f.path: partial_bytes(target.storage, f) for f in missing}
    report.planned(
        target.repo_id,
        target.commit,
        complete=len(wanted) - len(missing),
        partial=sum(1 for n in present.values() if n),
        total_bytes=sum(f.size for f in missing),
        present_bytes=sum(present.values()),
    )

    def fetch(remote: RemoteFile) -> None:
        outcome, reused = _call(
            lambda: fetch_file(target, remote, report), target.repo_id, target.commit, env.endpoint
        )
        counts[outcome] += 1
        counts["reused_bytes"] += reused

    config, rest = wanted[0], wanted[1:]  # select_files puts config.json first
    fetch(config)
    check_config(read_json(target.pointer(CONFIG_FILE), target.repo_id), target.repo_id)
    check_disk_space(sum(f.size - present[f.path] for f in missing if f in rest), env.cache_dir)
    for remote in rest:
        fetch(remote)
    return counts
